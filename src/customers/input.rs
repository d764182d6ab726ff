//! Customer input parsed into domain types at the edge. The limits are
//! Stripe's own (API reference, `POST /v1/customers`), so nothing is accepted
//! locally that Stripe would refuse later.

use serde::Deserialize;
use serde_json::{Map, Value};

pub const MAX_EMAIL_CHARS: usize = 512;
pub const MAX_NAME_CHARS: usize = 256;
pub const MAX_PHONE_CHARS: usize = 20;
pub const MAX_DESCRIPTION_CHARS: usize = 5000;
pub const MAX_METADATA_KEYS: usize = 50;
pub const MAX_METADATA_KEY_CHARS: usize = 40;
pub const MAX_METADATA_VALUE_CHARS: usize = 500;
/// Metadata key under which the local id is written to Stripe, so a human
/// looking at the Stripe customer can trace it back. Reserved.
pub const LOCAL_ID_METADATA_KEY: &str = "stripe_sync_id";

/// A field-level validation failure: 422 with the field named.
pub use crate::input::Invalid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// Deliberately modest: one `@`, a non-empty local part, a dotted domain,
    /// no whitespace or control characters, Stripe's length limit.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let field = "email";
        if raw.chars().count() > MAX_EMAIL_CHARS {
            return Err(Invalid::new(
                field,
                format!("must be at most {MAX_EMAIL_CHARS} characters"),
            ));
        }
        let valid = match raw.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !domain.contains("..")
                    && !raw.chars().any(|c| c.is_whitespace() || c.is_control())
            }
            None => false,
        };
        if valid {
            Ok(Self(raw.to_owned()))
        } else {
            Err(Invalid::new(field, "is not a valid email address"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn bounded_text(field: &str, raw: &str, max: usize) -> Result<String, Invalid> {
    if raw.chars().count() > max {
        return Err(Invalid::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if raw.chars().any(|c| c == '\0') {
        return Err(Invalid::new(field, "must not contain NUL characters"));
    }
    Ok(raw.to_owned())
}

/// A metadata change: `Some(value)` sets a key, `None` removes it (Stripe's
/// own merge semantics).
pub type MetadataPatch = Vec<(String, Option<String>)>;

fn parse_metadata(raw: &Map<String, Value>, allow_removal: bool) -> Result<MetadataPatch, Invalid> {
    let mut out = Vec::with_capacity(raw.len());
    for (key, value) in raw {
        let field = format!("metadata.{key}");
        if key.is_empty() || key.chars().count() > MAX_METADATA_KEY_CHARS {
            return Err(Invalid::new(
                field,
                format!("keys must be 1 to {MAX_METADATA_KEY_CHARS} characters"),
            ));
        }
        if key.contains('[') || key.contains(']') {
            return Err(Invalid::new(field, "keys must not contain square brackets"));
        }
        if key == LOCAL_ID_METADATA_KEY {
            return Err(Invalid::new(field, "this key is reserved for stripe-sync"));
        }
        match value {
            Value::String(v) => out.push((
                key.clone(),
                Some(bounded_text(&field, v, MAX_METADATA_VALUE_CHARS)?),
            )),
            Value::Null if allow_removal => out.push((key.clone(), None)),
            _ => {
                let expected = if allow_removal {
                    "a string, or null to remove the key"
                } else {
                    "a string"
                };
                return Err(Invalid::new(field, format!("must be {expected}")));
            }
        }
    }
    Ok(out)
}

/// The result of applying `patch` to `current` must stay within Stripe's
/// key limit.
pub fn merged_metadata(
    current: &Value,
    patch: &MetadataPatch,
) -> Result<Map<String, Value>, Invalid> {
    let mut merged = current.as_object().cloned().unwrap_or_default();
    for (k, v) in patch {
        match v {
            Some(v) => merged.insert(k.clone(), Value::String(v.clone())),
            None => merged.remove(k),
        };
    }
    if merged.len() > MAX_METADATA_KEYS {
        return Err(Invalid::new(
            "metadata",
            format!("at most {MAX_METADATA_KEYS} keys"),
        ));
    }
    Ok(merged)
}

/// Raw request bodies; unknown fields are refused by serde.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    pub email: Option<String>,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub description: Option<String>,
    pub metadata: Option<Map<String, Value>>,
}

/// `Some(None)` is an explicit `null` (clear the field); `None` is absent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchBody {
    #[serde(default, deserialize_with = "present")]
    pub email: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub phone: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub description: Option<Option<String>>,
    pub metadata: Option<Map<String, Value>>,
}

fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// A validated new customer.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCustomer {
    pub email: Option<Email>,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub description: Option<String>,
    pub metadata: MetadataPatch,
}

impl NewCustomer {
    pub fn parse(body: CreateBody) -> Result<Self, Invalid> {
        Ok(Self {
            email: body.email.as_deref().map(Email::parse).transpose()?,
            name: body
                .name
                .as_deref()
                .map(|v| bounded_text("name", v, MAX_NAME_CHARS))
                .transpose()?,
            phone: body
                .phone
                .as_deref()
                .map(|v| bounded_text("phone", v, MAX_PHONE_CHARS))
                .transpose()?,
            description: body
                .description
                .as_deref()
                .map(|v| bounded_text("description", v, MAX_DESCRIPTION_CHARS))
                .transpose()?,
            metadata: body
                .metadata
                .as_ref()
                .map(|m| parse_metadata(m, false))
                .transpose()?
                .unwrap_or_default(),
        })
    }
}

/// A validated partial update; `None` leaves a field alone, `Some(None)`
/// clears it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CustomerPatch {
    pub email: Option<Option<Email>>,
    pub name: Option<Option<String>>,
    pub phone: Option<Option<String>>,
    pub description: Option<Option<String>>,
    pub metadata: MetadataPatch,
}

impl CustomerPatch {
    pub fn parse(body: PatchBody) -> Result<Self, Invalid> {
        fn text(
            field: &str,
            v: Option<Option<String>>,
            max: usize,
        ) -> Result<Option<Option<String>>, Invalid> {
            v.map(|inner| inner.map(|s| bounded_text(field, &s, max)).transpose())
                .transpose()
        }
        let patch = Self {
            email: body
                .email
                .map(|inner| inner.as_deref().map(Email::parse).transpose())
                .transpose()?,
            name: text("name", body.name, MAX_NAME_CHARS)?,
            phone: text("phone", body.phone, MAX_PHONE_CHARS)?,
            description: text("description", body.description, MAX_DESCRIPTION_CHARS)?,
            metadata: body
                .metadata
                .as_ref()
                .map(|m| parse_metadata(m, true))
                .transpose()?
                .unwrap_or_default(),
        };
        if patch.is_empty() {
            return Err(Invalid::new("body", "names no field to change"));
        }
        Ok(patch)
    }

    pub fn is_empty(&self) -> bool {
        self.email.is_none()
            && self.name.is_none()
            && self.phone.is_none()
            && self.description.is_none()
            && self.metadata.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn create(v: Value) -> Result<NewCustomer, Invalid> {
        NewCustomer::parse(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn emails() {
        for ok in ["a@b.co", "first.last+tag@sub.example.com", "ünï@exämple.de"] {
            assert!(Email::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "plain", "@b.co", "a@", "a@b", "a@@b.co", "a b@c.co", "a@.b.co", "a@b.co.",
            "a@b..co",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
        let long = format!("{}@example.com", "a".repeat(MAX_EMAIL_CHARS));
        assert_eq!(Email::parse(&long).unwrap_err().field, "email");
    }

    #[test]
    fn lengths_follow_stripe() {
        assert!(create(json!({"name": "x".repeat(MAX_NAME_CHARS)})).is_ok());
        assert_eq!(
            create(json!({"name": "x".repeat(MAX_NAME_CHARS + 1)}))
                .unwrap_err()
                .field,
            "name"
        );
        assert_eq!(
            create(json!({"phone": "1".repeat(21)})).unwrap_err().field,
            "phone"
        );
        assert_eq!(
            create(json!({"description": "d".repeat(MAX_DESCRIPTION_CHARS + 1)}))
                .unwrap_err()
                .field,
            "description"
        );
        // Characters, not bytes.
        assert!(create(json!({"name": "é".repeat(MAX_NAME_CHARS)})).is_ok());
    }

    #[test]
    fn metadata_rules() {
        let many: Map<String, Value> = (0..51).map(|i| (format!("k{i}"), json!("v"))).collect();
        let parsed = create(json!({"metadata": many})).unwrap();
        assert_eq!(
            merged_metadata(&json!({}), &parsed.metadata)
                .unwrap_err()
                .field,
            "metadata"
        );
        for (meta, field) in [
            (
                json!({"k".repeat(41): "v"}),
                format!("metadata.{}", "k".repeat(41)),
            ),
            (json!({"k": "v".repeat(501)}), "metadata.k".to_owned()),
            (json!({"a[b]": "v"}), "metadata.a[b]".to_owned()),
            (json!({"k": 1}), "metadata.k".to_owned()),
            (json!({"k": null}), "metadata.k".to_owned()),
            (
                json!({"stripe_sync_id": "x"}),
                "metadata.stripe_sync_id".to_owned(),
            ),
        ] {
            assert_eq!(create(json!({"metadata": meta})).unwrap_err().field, field);
        }
    }

    #[test]
    fn patch_distinguishes_null_from_absent() {
        let p = CustomerPatch::parse(
            serde_json::from_value(json!({"email": null, "metadata": {"old": null}})).unwrap(),
        )
        .unwrap();
        assert_eq!(p.email, Some(None));
        assert_eq!(p.name, None);
        assert_eq!(p.metadata, vec![("old".to_owned(), None)]);
        assert!(CustomerPatch::parse(serde_json::from_value(json!({})).unwrap()).is_err());
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_value::<CreateBody>(json!({"nickname": "x"})).is_err());
        assert!(serde_json::from_value::<PatchBody>(json!({"id": "x"})).is_err());
    }
}
