//! What an API request's input may be refused for, in the one shape every
//! route answers it with (`{"error": {"code", "message", "field"}}`), and
//! the parsers several routes share.

/// A field (or query parameter) the API refuses, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A page size: `default` when absent, otherwise an integer from 1 to
/// `max`.
pub fn limit(raw: Option<&str>, default: i64, max: i64) -> Result<i64, Invalid> {
    match raw {
        None => Ok(default),
        Some(raw) => limit_within(raw.parse().ok(), max),
    }
}

/// A page size given as a number (a JSON body's): from 1 to `max`.
pub fn limit_within(given: Option<i64>, max: i64) -> Result<i64, Invalid> {
    given
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| Invalid::new("limit", format!("limit is an integer from 1 to {max}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_is_the_default_when_absent_and_else_within_bounds() {
        assert_eq!(limit(None, 20, 100), Ok(20));
        assert_eq!(limit(Some("1"), 20, 100), Ok(1));
        assert_eq!(limit(Some("100"), 20, 100), Ok(100));
        for refused in ["0", "101", "-1", "", "ten", "1.5"] {
            let e = limit(Some(refused), 20, 100).unwrap_err();
            assert_eq!(e.field, "limit", "{refused}");
        }
        assert!(limit_within(None, 5).is_err());
        assert_eq!(limit_within(Some(5), 5), Ok(5));
    }
}
