//! The order notifier's plain settings, which `config` builds from the
//! environment: where mail goes (`SMTP_URL`) and to whom
//! (`NOTIFY_EMAIL_TO`). Parsing only; sending is [`super::smtp`]'s.

use lettre::message::Mailbox;
use percent_encoding::percent_decode_str;
use secrecy::SecretString;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Security {
    Plain,
    StartTls,
    Tls,
}

/// `SMTP_URL`, parsed; the password is kept secret.
#[derive(Debug, Clone)]
pub struct SmtpUrl {
    pub(super) security: Security,
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) user: Option<String>,
    pub(super) password: Option<SecretString>,
}

impl SmtpUrl {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let url = url::Url::parse(raw).map_err(|e| format!("not a URL: {e}"))?;
        let (security, default_port) = match url.scheme() {
            "smtp" => (Security::Plain, 25),
            "smtp+starttls" => (Security::StartTls, 587),
            "smtps" => (Security::Tls, 465),
            other => {
                return Err(format!(
                    "scheme {other:?} is not one of smtp, smtp+starttls, smtps"
                ))
            }
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("the URL has no host")?
            .to_owned();
        let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        let user = Some(decode(url.username())).filter(|u| !u.is_empty());
        let password = url.password().map(|p| SecretString::from(decode(p)));
        if password.is_some() && user.is_none() {
            return Err("the URL has a password but no user".into());
        }
        Ok(Self {
            security,
            host,
            port: url.port().unwrap_or(default_port),
            user,
            password,
        })
    }

    /// `host:port`, for logs (never the credentials).
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Parses a comma-separated list of addresses (`NOTIFY_EMAIL_TO`).
pub fn parse_mailboxes(raw: &str) -> Result<Vec<Mailbox>, String> {
    let boxes = raw
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<Mailbox>().map_err(|e| format!("{s:?}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    if boxes.is_empty() {
        return Err("no address given".into());
    }
    Ok(boxes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn smtp_urls_of_every_kind() {
        let plain = SmtpUrl::parse("smtp://127.0.0.1:2525").unwrap();
        assert_eq!(
            (plain.security, plain.endpoint()),
            (Security::Plain, "127.0.0.1:2525".into())
        );
        assert!(plain.user.is_none());
        let tls = SmtpUrl::parse("smtps://apikey:s%40cret@smtp.sendgrid.net").unwrap();
        assert_eq!((tls.security, tls.port), (Security::Tls, 465));
        assert_eq!(tls.user.as_deref(), Some("apikey"));
        assert_eq!(tls.password.unwrap().expose_secret(), "s@cret");
        let starttls = SmtpUrl::parse("smtp+starttls://u:p@mail.example.com").unwrap();
        assert_eq!(
            (starttls.security, starttls.port),
            (Security::StartTls, 587)
        );
    }

    #[test]
    fn bad_smtp_urls_say_what_is_wrong() {
        for (raw, needle) in [
            ("http://x:25", "scheme"),
            ("smtp://", "no host"),
            ("smtp://:pw@host", "no user"),
            ("not a url", "not a URL"),
        ] {
            let err = SmtpUrl::parse(raw).unwrap_err();
            assert!(err.contains(needle), "{raw}: {err}");
        }
    }

    #[test]
    fn the_password_never_shows_in_debug_output() {
        let url = SmtpUrl::parse("smtps://user:hunter2@host").unwrap();
        assert!(!format!("{url:?}").contains("hunter2"));
    }

    #[test]
    fn recipient_lists() {
        let to = parse_mailboxes("orders@shop.example, Ops <ops@shop.example>").unwrap();
        assert_eq!(to.len(), 2);
        assert_eq!(to[1].email.to_string(), "ops@shop.example");
        assert!(parse_mailboxes(" , ").is_err());
        assert!(parse_mailboxes("not-an-address").is_err());
    }
}
