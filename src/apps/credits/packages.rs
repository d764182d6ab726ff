//! `credits.packages`: what is on sale. Operators add and change packages;
//! a purchase copies price, currency and credits when it is made, so past
//! purchases keep what they were sold at.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use crate::db::schema::credits::packages;
use crate::input::Invalid;
use crate::stripe::currency;
use crate::stripe::currency::check_amount;

/// The most credits one package may hold.
pub const MAX_CREDITS: i64 = 1_000_000_000;
const MAX_NAME: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Queryable, Selectable)]
#[diesel(table_name = packages, check_for_backend(diesel::pg::Pg))]
pub struct Package {
    pub id: String,
    pub name: String,
    /// In the currency's smallest unit.
    pub price: i64,
    pub currency: String,
    pub credits: i64,
    pub active: bool,
    #[serde(skip)]
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    #[serde(default)]
    pub id: Option<String>,
    pub name: String,
    pub price: i64,
    pub currency: String,
    pub credits: i64,
    #[serde(default = "active_by_default")]
    pub active: bool,
}

fn active_by_default() -> bool {
    true
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchBody {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub price: Option<i64>,
    #[serde(default)]
    pub credits: Option<i64>,
    #[serde(default)]
    pub active: Option<bool>,
}

/// A package to add, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPackage {
    pub id: String,
    pub name: String,
    pub price: i64,
    pub currency: String,
    pub credits: i64,
    pub active: bool,
}

/// A change to a package, checked; `None` leaves a field as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PackagePatch {
    pub name: Option<String>,
    pub price: Option<i64>,
    pub credits: Option<i64>,
    pub active: Option<bool>,
}

/// Package ids go into URLs and payment metadata: short and plain.
pub fn is_package_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn check_name(name: String) -> Result<String, Invalid> {
    let name = name.trim().to_owned();
    if name.is_empty() || name.chars().count() > MAX_NAME {
        return Err(Invalid::new(
            "name",
            format!("name is 1 to {MAX_NAME} characters"),
        ));
    }
    Ok(name)
}

fn check_credits(credits: i64) -> Result<i64, Invalid> {
    if (1..=MAX_CREDITS).contains(&credits) {
        Ok(credits)
    } else {
        Err(Invalid::new(
            "credits",
            format!("credits is a whole number from 1 to {MAX_CREDITS}"),
        ))
    }
}

impl CreateBody {
    pub fn checked(self) -> Result<NewPackage, Invalid> {
        let id = match self.id {
            Some(id) if is_package_id(&id) => id,
            Some(id) => {
                return Err(Invalid::new(
                    "id",
                    format!("{id:?} is not a package id: 1 to 64 letters, digits, _ or -"),
                ))
            }
            None => format!("package_{}", uuid::Uuid::new_v4().simple()),
        };
        let currency = currency::parse(&self.currency).ok_or_else(|| {
            Invalid::new(
                "currency",
                format!("{:?} is not an ISO 4217 currency", self.currency),
            )
        })?;
        Ok(NewPackage {
            id,
            name: check_name(self.name)?,
            price: check_amount("price", self.price)?,
            currency,
            credits: check_credits(self.credits)?,
            active: self.active,
        })
    }
}

impl PatchBody {
    pub fn checked(self) -> Result<PackagePatch, Invalid> {
        let patch = PackagePatch {
            name: self.name.map(check_name).transpose()?,
            price: self.price.map(|p| check_amount("price", p)).transpose()?,
            credits: self.credits.map(check_credits).transpose()?,
            active: self.active,
        };
        if patch == PackagePatch::default() {
            return Err(Invalid::new(
                "body",
                "name, price, credits or active: at least one to change",
            ));
        }
        Ok(patch)
    }
}

pub fn list(conn: &mut PgConnection) -> QueryResult<Vec<Package>> {
    packages::table
        .order((packages::price, packages::id))
        .select(Package::as_select())
        .load(conn)
}

pub fn get(conn: &mut PgConnection, id: &str) -> QueryResult<Option<Package>> {
    packages::table
        .find(id)
        .select(Package::as_select())
        .first(conn)
        .optional()
}

/// Adds a package; `None` when its id is taken.
pub fn create(conn: &mut PgConnection, new: &NewPackage) -> QueryResult<Option<Package>> {
    diesel::insert_into(packages::table)
        .values((
            packages::id.eq(&new.id),
            packages::name.eq(&new.name),
            packages::price.eq(new.price),
            packages::currency.eq(&new.currency),
            packages::credits.eq(new.credits),
            packages::active.eq(new.active),
        ))
        .on_conflict(packages::id)
        .do_nothing()
        .returning(Package::as_returning())
        .get_result(conn)
        .optional()
}

/// Changes a package; `None` when there is none with this id.
pub fn update(
    conn: &mut PgConnection,
    id: &str,
    patch: &PackagePatch,
) -> QueryResult<Option<Package>> {
    // A field the patch leaves out (None) is left as it is.
    #[derive(AsChangeset)]
    #[diesel(table_name = packages)]
    struct Changes<'a> {
        name: Option<&'a str>,
        price: Option<i64>,
        credits: Option<i64>,
        active: Option<bool>,
    }
    let changes = Changes {
        name: patch.name.as_deref(),
        price: patch.price,
        credits: patch.credits,
        active: patch.active,
    };
    diesel::update(packages::table.find(id))
        .set((changes, packages::updated_at.eq(diesel::dsl::now)))
        .returning(Package::as_returning())
        .get_result(conn)
        .optional()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(price: i64, credits: i64) -> CreateBody {
        CreateBody {
            id: None,
            name: " Mega Pack ".into(),
            price,
            currency: "EUR".into(),
            credits,
            active: true,
        }
    }

    #[test]
    fn a_new_package_is_checked_and_named() {
        let p = body(999, 50).checked().unwrap();
        assert_eq!(
            (p.name.as_str(), p.currency.as_str(), p.price, p.credits),
            ("Mega Pack", "eur", 999, 50)
        );
        assert!(p.id.starts_with("package_") && is_package_id(&p.id));
        assert_eq!(body(0, 50).checked().unwrap_err().field, "price");
        assert_eq!(body(999, 0).checked().unwrap_err().field, "credits");
        let bad_id = CreateBody {
            id: Some("a b".into()),
            ..body(999, 50)
        };
        assert_eq!(bad_id.checked().unwrap_err().field, "id");
    }

    #[test]
    fn a_patch_changes_something() {
        assert_eq!(PatchBody::default().checked().unwrap_err().field, "body");
        let p = PatchBody {
            active: Some(false),
            ..PatchBody::default()
        }
        .checked()
        .unwrap();
        assert_eq!(p.active, Some(false));
        let empty_name = PatchBody {
            name: Some("  ".into()),
            ..PatchBody::default()
        };
        assert_eq!(empty_name.checked().unwrap_err().field, "name");
    }
}
