//! A real SMTP server for the order notifier: aiosmtpd (PyPI), run by
//! `tests/py/smtp_sink.py`, which keeps every accepted message. One per
//! test, on its own port; it can be stopped and started again on the same
//! port (an outage), told to refuse a recipient for good, and made slow to
//! answer one command (a tarpit, a content scan).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

pub struct SmtpSink {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// Credentials the server requires (SMTP AUTH), if any.
    login: Option<(String, String)>,
}

/// An SMTP command whose answer the server can hold back.
#[derive(Debug, Clone, Copy)]
pub enum Phase {
    /// `RCPT TO`: servers that tarpit delay it.
    Rcpt,
    /// The end of `DATA`: the server has the message and scans it.
    Data,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Rcpt => "rcpt",
            Phase::Data => "data",
        }
    }
}

/// A message as the server received it, read by Python's `email` package.
#[derive(Debug, Clone)]
pub struct Mail(pub Value);

impl Mail {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.0["headers"][name.to_ascii_lowercase()].as_str()
    }

    pub fn subject(&self) -> &str {
        self.header("subject").unwrap_or_default()
    }

    pub fn message_id(&self) -> &str {
        self.header("message-id").unwrap_or_default()
    }

    pub fn text(&self) -> &str {
        self.0["text"].as_str().unwrap_or_default()
    }

    pub fn html(&self) -> &str {
        self.0["html"].as_str().unwrap_or_default()
    }

    pub fn recipients(&self) -> Vec<&str> {
        self.0["rcpt_tos"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect()
    }
}

impl SmtpSink {
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// A server that requires SMTP AUTH with these credentials.
    pub async fn with_login(user: &str, password: &str) -> Self {
        Self::start_with(Some((user.to_owned(), password.to_owned()))).await
    }

    async fn start_with(login: Option<(String, String)>) -> Self {
        let dir = std::env::temp_dir().join(super::unique("smtp-sink"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut sink = Self {
            port: super::free_port(),
            dir,
            child: None,
            login,
        };
        sink.resume().await;
        sink
    }

    /// Starts the server (again, after `stop`) on its port.
    pub async fn resume(&mut self) {
        assert!(self.child.is_none(), "the SMTP sink is running");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/smtp_sink.py");
        let mut command = Command::new(super::required_env("STRIPE_SYNC_PYTHON"));
        command
            .args([script, "--port", &self.port.to_string(), "--dir"])
            .arg(&self.dir);
        if let Some((user, password)) = &self.login {
            command.args(["--user", user, "--password", password]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the SMTP sink");
        self.child = Some(child);
        let port = self.port;
        super::wait_for(
            Duration::from_secs(30),
            "the SMTP sink to listen",
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(drop)
            },
        )
        .await;
    }

    /// Kills the server: connections are refused until `resume`.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Refuse mail to these addresses with a permanent 550 (none: stop).
    pub fn refuse(&self, addresses: &[&str]) {
        std::fs::write(self.dir.join("refuse"), addresses.join("\n")).unwrap();
    }

    /// Answer mail to these addresses with a temporary 451 (none: stop).
    pub fn defer(&self, addresses: &[&str]) {
        std::fs::write(self.dir.join("defer"), addresses.join("\n")).unwrap();
    }

    /// Holds the answer to the next `phase` command (one, of whichever
    /// client comes first) until [`Self::release`], then answers `answer`
    /// (a refusal such as `554 …`) or as usual. A test that must act while
    /// it is held (pause a process, ask for a retry) does so at its own
    /// pace, however loaded the machine. A held DATA that is then accepted
    /// keeps the message from the start of the wait, as a real server that
    /// has the whole message does.
    pub fn hold_next(&self, phase: Phase, answer: Option<&str>) {
        let name = format!("stall-{}", phase.name());
        let temp = self.dir.join(format!(".{name}.tmp"));
        let body = serde_json::json!({"seconds": null, "answer": answer});
        std::fs::write(&temp, body.to_string()).unwrap();
        std::fs::rename(&temp, self.dir.join(name)).unwrap();
    }

    /// Lets a held answer go (see [`Self::hold_next`]).
    pub fn release(&self, phase: Phase) {
        std::fs::write(self.dir.join(format!("release-{}", phase.name())), b"").unwrap();
    }

    /// Waits until the server is holding a `phase` answer back.
    pub async fn wait_stalled(&self, phase: Phase, timeout: Duration) {
        let marker = self.dir.join(format!("stalled-{}", phase.name()));
        super::wait_for(
            timeout,
            &format!("the SMTP sink to hold a {} answer", phase.name()),
            || async { marker.exists().then_some(()) },
        )
        .await
    }

    /// Whether a held answer is still held.
    pub fn stalled(&self, phase: Phase) -> bool {
        self.dir.join(format!("stalled-{}", phase.name())).exists()
    }

    /// Every message received so far, oldest first.
    pub fn messages(&self) -> Vec<Mail> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| Mail(serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()))
            .collect()
    }

    /// Waits until `n` messages arrived, and returns them.
    pub async fn wait_messages(&self, n: usize, timeout: Duration) -> Vec<Mail> {
        super::wait_for(
            timeout,
            &format!("{n} messages at the SMTP sink"),
            || async {
                let got = self.messages();
                (got.len() >= n).then_some(got)
            },
        )
        .await
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
