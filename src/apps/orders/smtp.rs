//! Sending mail over SMTP (lettre), configured by one URL: `smtp://host:port`
//! (plain, a local relay), `smtp+starttls://user:pass@host:587` or
//! `smtps://user:pass@host:465`. Every provider, SendGrid included, speaks
//! one of these.

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use percent_encoding::percent_decode_str;
use secrecy::{ExposeSecret, SecretString};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Security {
    Plain,
    StartTls,
    Tls,
}

/// `SMTP_URL`, parsed; the password is kept secret.
#[derive(Debug, Clone)]
pub struct SmtpUrl {
    security: Security,
    host: String,
    port: u16,
    user: Option<String>,
    password: Option<SecretString>,
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

/// Why a message was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The server refused for good (a 5xx): retrying cannot help.
    #[error("refused: {0}")]
    Permanent(String),
    /// Unreachable, a 4xx, a timeout, TLS: worth retrying.
    #[error("{0}")]
    Transient(String),
}

/// The SMTP transport and the envelope every order email uses.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl Mailer {
    /// `timeout`: how long one delivery may take before it counts as a
    /// transient failure.
    pub fn new(
        url: &SmtpUrl,
        from: Mailbox,
        to: Vec<Mailbox>,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let builder = match url.security {
            Security::Plain => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&url.host),
            Security::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&url.host)?,
            Security::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&url.host)?,
        };
        let mut builder = builder.port(url.port).timeout(Some(timeout));
        if let (Some(user), Some(password)) = (&url.user, &url.password) {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                password.expose_secret().to_owned(),
            ));
        }
        Ok(Self {
            transport: builder.build(),
            from,
            to,
        })
    }

    /// The domain of the sender's address, used in `Message-ID`s.
    pub fn domain(&self) -> &str {
        self.from.email.domain()
    }

    /// Sends one message in plain text and HTML with the given `Message-ID`.
    pub async fn send(
        &self,
        message_id: &str,
        subject: &str,
        text: String,
        html: String,
    ) -> Result<(), SendError> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(subject)
            .message_id(Some(message_id.to_owned()));
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        let message = builder
            .multipart(MultiPart::alternative_plain_html(text, html))
            .map_err(|e| SendError::Permanent(format!("cannot build the message: {e}")))?;
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            // Credentials refused say nothing about the order: wait for an
            // operator to fix SMTP_URL instead of failing every order.
            Err(e) if is_authentication(&e) => Err(SendError::Transient(format!(
                "authentication failed, check the credentials in SMTP_URL: {}",
                describe(&e)
            ))),
            Err(e) if e.is_permanent() => Err(SendError::Permanent(describe(&e))),
            Err(e) => Err(SendError::Transient(describe(&e))),
        }
    }
}

/// 530 (authentication required), 534/538 (mechanism too weak, encryption
/// required), 535 (credentials invalid).
fn is_authentication(e: &lettre::transport::smtp::Error) -> bool {
    e.status()
        .is_some_and(|code| matches!(u16::from(code), 530 | 534 | 535 | 538))
}

/// The error with its causes (lettre keeps the server's answer in them).
fn describe(e: &lettre::transport::smtp::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
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
