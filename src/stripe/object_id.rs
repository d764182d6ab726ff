//! A Stripe object's id, checked before it goes into a URL.

use std::fmt;

use super::StripeError;

/// A Stripe object id (`cus_…`, `pi_…`, `price_…`, and report types'
/// `balance.summary.1`) in Stripe's id alphabet, so a call can put it into
/// a path as it is: no id can reach another endpoint (no `/`, no `.` or
/// `..` segment) or add a query. What the client's object calls
/// ([`super::StripeClient::retrieve`], [`super::StripeClient::delete`]) take,
/// so an account or a path cannot be passed for it. Borrowed: an id is
/// checked where a call is about to use it, without a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ObjectId<'a>(&'a str);

impl<'a> ObjectId<'a> {
    /// Any kind of object; [`StripeError::InvalidId`] otherwise, which
    /// callers treat as Stripe's answer for an id that names nothing.
    pub fn parse(raw: &'a str) -> Result<Self, StripeError> {
        let ok = !raw.is_empty()
            && raw.len() <= 255
            && !raw.starts_with('.')
            && !raw.contains("..")
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
        if ok {
            Ok(Self(raw))
        } else {
            Err(StripeError::InvalidId(raw.chars().take(64).collect()))
        }
    }

    /// An id of the kind `prefix` names (`cus_`, `pi_`, …).
    pub fn of_kind(raw: &'a str, prefix: &str) -> Option<Self> {
        let id = Self::parse(raw).ok()?;
        (raw.len() > prefix.len() && raw.starts_with(prefix)).then_some(id)
    }

    pub fn as_str(self) -> &'a str {
        self.0
    }
}

impl fmt::Display for ObjectId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_stripe_s_id_alphabet_is_taken() {
        assert_eq!(ObjectId::parse("cus_1Abc").unwrap().as_str(), "cus_1Abc");
        assert!(
            ObjectId::parse("balance.summary.1").is_ok(),
            "a report type"
        );
        assert!(ObjectId::parse(&"a".repeat(255)).is_ok());
        for bad in [
            ".",
            "..",
            ".x",
            "a..b",
            "",
            "cus_1/../charges",
            "cus_1?expand[]=x",
            "cus 1",
            "cus_1\n",
            "é",
        ] {
            assert!(
                matches!(ObjectId::parse(bad), Err(StripeError::InvalidId(_))),
                "{bad:?}"
            );
        }
        assert!(ObjectId::parse(&"a".repeat(256)).is_err());
    }

    #[test]
    fn a_kind_is_its_prefix_and_more() {
        assert!(ObjectId::of_kind("pi_1", "pi_").is_some());
        assert!(ObjectId::of_kind("pi_", "pi_").is_none());
        assert!(ObjectId::of_kind("cus_1", "pi_").is_none());
        assert!(ObjectId::of_kind("pi_1/x", "pi_").is_none());
    }
}
