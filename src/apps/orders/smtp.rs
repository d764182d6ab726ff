//! Sending mail over SMTP (lettre), configured by one URL: `smtp://host:port`
//! (plain, a local relay), `smtp+starttls://user:pass@host:587` or
//! `smtps://user:pass@host:465`. Every provider, SendGrid included, speaks
//! one of these. Each message goes over a connection of its own.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use lettre::address::Envelope;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::Message;
use secrecy::ExposeSecret;

use super::settings::{Security, SmtpUrl};

/// Why a message was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The server refused for good (a 5xx): retrying cannot help.
    #[error("refused: {0}")]
    Permanent(String),
    /// Unreachable, a 4xx, a timeout before the message went out, TLS:
    /// worth retrying; the server does not have the message.
    #[error("{0}")]
    Transient(String),
    /// The check before `DATA` said not to send: the server never got the
    /// message, and the row is no longer the sender's.
    #[error("withheld before DATA")]
    Withheld,
    /// Not sent, and the row is still the sender's to let go of: the
    /// sender is stopping, or so much time passed since its lease was
    /// renewed that the lease might not outlast the message.
    #[error("held back before the message: {0}")]
    HeldBack(String),
    /// The message went out and no answer came (a timeout, a connection
    /// lost after the message began): the server may well have it. Not
    /// worth trying again soon.
    #[error("outcome unknown: {0}")]
    Unknown(String),
}

/// How the connection is secured, with the TLS settings it needs.
#[derive(Clone)]
enum Secured {
    Plain,
    StartTls(TlsParameters),
    Tls(TlsParameters),
}

/// The SMTP server and the envelope every order email uses.
///
/// The conversation is driven here rather than by lettre's transport, so
/// that a caller can check, after the server took the recipients and
/// before the message goes out, that it still may send it (see
/// [`Mailer::send`]).
#[derive(Clone)]
pub struct Mailer {
    host: String,
    port: u16,
    secured: Secured,
    credentials: Option<Credentials>,
    from: Mailbox,
    to: Vec<Mailbox>,
    timeout: Duration,
}

impl Mailer {
    /// `timeout`: how long each half of a delivery (up to the recipients;
    /// the message itself) may take before it counts as a transient
    /// failure.
    pub fn new(
        url: &SmtpUrl,
        from: Mailbox,
        to: Vec<Mailbox>,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let secured = match url.security {
            Security::Plain => Secured::Plain,
            Security::StartTls => Secured::StartTls(TlsParameters::new(url.host.clone())?),
            Security::Tls => Secured::Tls(TlsParameters::new(url.host.clone())?),
        };
        let credentials = match (&url.user, &url.password) {
            (Some(user), Some(password)) => Some(Credentials::new(
                user.clone(),
                password.expose_secret().to_owned(),
            )),
            _ => None,
        };
        Ok(Self {
            host: url.host.clone(),
            port: url.port,
            secured,
            credentials,
            from,
            to,
            timeout,
        })
    }

    /// The domain of the sender's address, used in `Message-ID`s.
    pub fn domain(&self) -> &str {
        self.from.email.domain()
    }

    /// How long each half of a delivery may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends one message in plain text and HTML with the given
    /// `Message-ID`.
    ///
    /// `before_data` runs once the server has accepted the sender and the
    /// recipients, right before `DATA`: an error from it ends the
    /// conversation with nothing sent, and is returned; otherwise it says
    /// by when the message must begin to go out. Right before the message
    /// is written (after the server's `354`) that time is checked again,
    /// and `stop`: past it, or stopping, the message is held back
    /// ([`SendError::HeldBack`]) and the server never gets it. While the
    /// server has not taken the recipients, `stop` ends the conversation
    /// at once, also with nothing sent. Once the message is being written
    /// no one can know whether a server that does not answer has it
    /// ([`SendError::Unknown`]), so that is the last moment to decide.
    pub async fn send<F, Fut>(
        &self,
        message_id: &str,
        subject: &str,
        text: String,
        html: String,
        stop: &CancellationToken,
        before_data: F,
    ) -> Result<(), SendError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Instant, SendError>>,
    {
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
        let body = message.formatted();
        let opened = tokio::select! {
            opened = tokio::time::timeout(self.timeout, self.open(message.envelope(), body.is_ascii())) => opened,
            _ = stop.cancelled() => {
                return Err(SendError::HeldBack("the notifier is stopping".into()))
            }
        };
        let mut conn = match opened {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(classify(&e)),
            Err(_) => {
                return Err(SendError::Transient(format!(
                    "the server did not take the recipients within {:?}",
                    self.timeout
                )))
            }
        };
        let start_by = match before_data().await {
            Ok(start_by) => start_by,
            Err(e) => {
                quit(conn).await;
                return Err(e);
            }
        };
        if let Err(e) = may_start(start_by, stop) {
            quit(conn).await;
            return Err(e);
        }
        let limit = Instant::now() + self.timeout;
        match tokio::time::timeout_at(limit, conn.command(Data)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(classify(&e)),
            Err(_) => {
                return Err(SendError::Transient(format!(
                    "the server did not answer DATA within {:?}",
                    self.timeout
                )))
            }
        }
        // The last moment: the server waits for the message now. Left
        // without one (the connection dropped, no final dot), it discards
        // what it has; a QUIT here would be read as the message's text.
        may_start(start_by, stop)?;
        match tokio::time::timeout_at(limit, conn.message(&body)).await {
            Ok(Ok(_)) => {
                // The server has the message: the outcome goes to the
                // caller at once, to be recorded, and the goodbye happens
                // meanwhile. Waited for here (up to a second), it kept the
                // sent email unrecorded that much longer, and a crash in
                // that time sends it again.
                tokio::spawn(quit(conn));
                Ok(())
            }
            // An answer from the server (a 4xx, a 5xx) says what became of
            // it; an error without one (the connection lost) does not.
            Ok(Err(e)) if e.status().is_some() => Err(classify(&e)),
            Ok(Err(e)) => Err(SendError::Unknown(format!(
                "the connection failed while the message was going out (the server may have it): {}",
                describe(&e)
            ))),
            Err(_) => Err(SendError::Unknown(format!(
                "the server did not answer the message within {:?} (it may have it)",
                self.timeout
            ))),
        }
    }

    /// Connects, secures, logs in and gives the server the envelope.
    async fn open(
        &self,
        envelope: &Envelope,
        ascii: bool,
    ) -> Result<AsyncSmtpConnection, lettre::transport::smtp::Error> {
        let hello = ClientId::default();
        let wrapped = match &self.secured {
            Secured::Tls(tls) => Some(tls.clone()),
            _ => None,
        };
        let mut conn = AsyncSmtpConnection::connect_tokio1(
            (self.host.as_str(), self.port),
            Some(self.timeout),
            &hello,
            wrapped,
            None,
        )
        .await?;
        if let Secured::StartTls(tls) = &self.secured {
            conn.starttls(tls.clone(), &hello).await?;
        }
        if let Some(credentials) = &self.credentials {
            conn.auth(DEFAULT_MECHANISMS, credentials).await?;
        }
        let mut options = Vec::new();
        if !ascii && conn.server_info().supports_feature(Extension::EightBitMime) {
            options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        conn.command(Mail::new(envelope.from().cloned(), options))
            .await?;
        for to in envelope.to() {
            conn.command(Rcpt::new(to.clone(), Vec::new())).await?;
        }
        Ok(conn)
    }
}

/// Whether the message may still begin to go out: not past `start_by`,
/// and not stopping.
fn may_start(start_by: Instant, stop: &CancellationToken) -> Result<(), SendError> {
    if stop.is_cancelled() {
        return Err(SendError::HeldBack("the notifier is stopping".into()));
    }
    let now = Instant::now();
    if now > start_by {
        return Err(SendError::HeldBack(format!(
            "{:?} late to begin the message (a pause since the lease was renewed)",
            now - start_by
        )));
    }
    Ok(())
}

/// Says goodbye, without waiting long for the answer: the outcome is
/// already known.
async fn quit(mut conn: AsyncSmtpConnection) {
    let _ = tokio::time::timeout(Duration::from_secs(1), conn.abort()).await;
}

fn classify(e: &lettre::transport::smtp::Error) -> SendError {
    // Credentials refused say nothing about the order: wait for an
    // operator to fix SMTP_URL instead of failing every order.
    if is_authentication(e) {
        SendError::Transient(format!(
            "authentication failed, check the credentials in SMTP_URL: {}",
            describe(e)
        ))
    } else if e.is_permanent() {
        SendError::Permanent(describe(e))
    } else {
        SendError::Transient(describe(e))
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
