//! Which Stripe account an object, event or call belongs to.

use std::borrow::Cow;
use std::fmt;

use diesel::deserialize::{FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::pg::Pg;
use diesel::serialize::{Output, ToSql};
use diesel::sql_types::Text;

/// Account label for events of the platform's own account. Stripe only sets
/// `account` on events of connected accounts; every key we store carries an
/// account so Connect fits in without a migration.
pub const PLATFORM_ACCOUNT: &str = "platform";

/// The platform's own account ([`PLATFORM_ACCOUNT`]) or a connected
/// account's `acct_…` id. A type of its own so that an account cannot be
/// passed where an object id or a path is meant (the client's calls take
/// all three), and checked once where it comes in: it goes into the
/// `Stripe-Account` header and the mirror's `account` column, so its
/// alphabet is Stripe's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
pub struct AccountId(Cow<'static, str>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is neither `platform` nor an acct_… id")]
pub struct InvalidAccount(pub String);

impl AccountId {
    pub const PLATFORM: AccountId = AccountId(Cow::Borrowed(PLATFORM_ACCOUNT));

    pub fn parse(raw: &str) -> Result<Self, InvalidAccount> {
        if raw == PLATFORM_ACCOUNT {
            return Ok(Self::PLATFORM);
        }
        let connected = raw.len() <= 255
            && raw.strip_prefix("acct_").is_some_and(|rest| {
                !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric())
            });
        if connected {
            Ok(Self(Cow::Owned(raw.to_owned())))
        } else {
            Err(InvalidAccount(raw.chars().take(64).collect()))
        }
    }

    pub fn is_platform(&self) -> bool {
        self.0 == PLATFORM_ACCOUNT
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for AccountId {
    type Err = InvalidAccount;

    fn from_str(s: &str) -> Result<Self, InvalidAccount> {
        Self::parse(s)
    }
}

impl serde::Serialize for AccountId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Deserialising checks, like [`AccountId::parse`]: JSON is input.
impl<'de> serde::Deserialize<'de> for AccountId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <Cow<'de, str>>::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl ToSql<Text, Pg> for AccountId {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> diesel::serialize::Result {
        <str as ToSql<Text, Pg>>::to_sql(&self.0, out)
    }
}

/// Read back as written: every value in an `account` column went in as an
/// `AccountId`, so it is not checked again.
impl FromSql<Text, Pg> for AccountId {
    fn from_sql(
        bytes: <Pg as diesel::backend::Backend>::RawValue<'_>,
    ) -> diesel::deserialize::Result<Self> {
        <String as FromSql<Text, Pg>>::from_sql(bytes).map(|s| Self(Cow::Owned(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_platform_and_connected_accounts_parse() {
        assert!(AccountId::parse("platform").unwrap().is_platform());
        let connected = AccountId::parse("acct_1Pgc76B7WZ01zgkW").unwrap();
        assert!(!connected.is_platform());
        assert_eq!(connected.as_str(), "acct_1Pgc76B7WZ01zgkW");
    }

    #[test]
    fn anything_else_is_refused_before_it_reaches_a_header_or_a_column() {
        for bad in [
            "",
            "acct_",
            "Platform",
            "cus_123",
            "acct_1\r\nX-Evil: 1",
            "acct_1/../x",
        ] {
            assert!(AccountId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(AccountId::parse(&format!("acct_{}", "a".repeat(300))).is_err());
    }

    #[test]
    fn json_is_checked_on_the_way_in() {
        let ok: AccountId = serde_json::from_str("\"acct_9\"").unwrap();
        assert_eq!(serde_json::to_string(&ok).unwrap(), "\"acct_9\"");
        assert!(serde_json::from_str::<AccountId>("\"cus_9\"").is_err());
    }
}
