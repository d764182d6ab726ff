//! The faults the soak injects, one at a time, and how long the pipeline
//! took to catch up after each healed.

use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::Rng;

use crate::orders::{Orders, NOTIFIERS};
use crate::salesforce::{Salesforce, SalesforceFault};
use crate::stripe::{FakeStripe, StripeFault};
use crate::supervise::{restart_postgres, Supervisor};

/// The engine's processes the soak kills and pauses.
pub const ENGINE: &[&str] = &[
    "serve",
    "stripe-inbound",
    "stripe-outbound",
    "outbox-relay",
    "stripe-commands",
    "salesforce-outbound",
    "salesforce-inbound",
];
/// Workers in a consumer group: pausing one beyond its session timeout
/// (10 s) makes the group rebalance without it.
const GROUP_MEMBERS: &[&str] = &[
    "stripe-inbound",
    "stripe-outbound",
    "stripe-commands",
    "salesforce-outbound",
    "salesforce-inbound",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum FaultKind {
    KillProcess,
    PauseWorker,
    RestartBroker,
    RestartPostgres,
    StripeOutage,
    StripeRateLimitStorm,
    StripeLostAnswers,
    SmtpDown,
    SmtpDeferring,
    SmtpRefusesOne,
    NotifierKilledMidSend,
    ExportAnswersDropped,
    SalesforceOutage,
    SalesforceRequestLimit,
    SalesforceSessionExpired,
}

pub const ALL: &[FaultKind] = &[
    FaultKind::KillProcess,
    FaultKind::PauseWorker,
    FaultKind::RestartBroker,
    FaultKind::RestartPostgres,
    FaultKind::StripeOutage,
    FaultKind::StripeRateLimitStorm,
    FaultKind::StripeLostAnswers,
    FaultKind::SmtpDown,
    FaultKind::SmtpDeferring,
    FaultKind::SmtpRefusesOne,
    FaultKind::NotifierKilledMidSend,
    FaultKind::ExportAnswersDropped,
    FaultKind::SalesforceOutage,
    FaultKind::SalesforceRequestLimit,
    FaultKind::SalesforceSessionExpired,
];

impl FaultKind {
    pub fn label(self) -> &'static str {
        match self {
            Self::KillProcess => "SIGKILL of an engine process",
            Self::PauseWorker => "SIGSTOP of a worker past its session (rebalance)",
            Self::RestartBroker => "broker killed and restarted",
            Self::RestartPostgres => "Postgres crash-restarted",
            Self::StripeOutage => "Stripe outage (503)",
            Self::StripeRateLimitStorm => "Stripe 429 storm",
            Self::StripeLostAnswers => "Stripe answers lost after the write",
            Self::SmtpDown => "SMTP server down (stopped, started again)",
            Self::SmtpDeferring => "SMTP server answering 451 to every recipient",
            Self::SmtpRefusesOne => "SMTP server refusing one message for good (550)",
            Self::NotifierKilledMidSend => "SIGKILL of a notifier mid-send (RCPT held)",
            Self::ExportAnswersDropped => "export answers dropped half-read, two pollers",
            Self::SalesforceOutage => "Salesforce outage (503)",
            Self::SalesforceRequestLimit => "Salesforce REQUEST_LIMIT_EXCEEDED (403)",
            Self::SalesforceSessionExpired => "Salesforce sessions expired (401)",
        }
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Injected {
    pub kind: FaultKind,
    /// The process it hit, for kills and pauses.
    pub target: Option<String>,
    /// Seconds from the soak's start.
    pub at_secs: f64,
    pub lasted_secs: f64,
    /// From the heal until the ledger held every event acknowledged by
    /// then; `None` if it did not within two minutes.
    pub catch_up_secs: Option<f64>,
}

pub struct Injector {
    pub supervisor: Supervisor,
    pub stripe: FakeStripe,
    pub salesforce: Salesforce,
    pub pg_restart: String,
    /// How long a Stripe storm or outage lasts.
    pub storm: Duration,
    pub orders: Orders,
}

impl Injector {
    /// Injects `kind` and heals it; returns what it hit and for how long.
    pub async fn inject(&self, kind: FaultKind) -> anyhow::Result<(Option<String>, Duration)> {
        let started = Instant::now();
        let pick = |names: &[&str]| names.choose(&mut rand::thread_rng()).map(|n| n.to_string());
        let target = match kind {
            FaultKind::KillProcess => {
                let name = pick(&[ENGINE, NOTIFIERS].concat()).expect("engine processes");
                self.supervisor.kill(&name);
                self.orders.note_kill(&name);
                Some(name)
            }
            FaultKind::PauseWorker => {
                let name = pick(&[GROUP_MEMBERS, NOTIFIERS].concat()).expect("group members");
                self.supervisor.signal(&name, "-STOP");
                tokio::time::sleep(Duration::from_secs(13)).await;
                self.supervisor.signal(&name, "-CONT");
                Some(name)
            }
            FaultKind::RestartBroker => {
                self.supervisor.kill("broker");
                None
            }
            FaultKind::RestartPostgres => {
                let command = self.pg_restart.clone();
                tokio::task::spawn_blocking(move || restart_postgres(&command)).await??;
                None
            }
            FaultKind::StripeOutage
            | FaultKind::StripeRateLimitStorm
            | FaultKind::StripeLostAnswers => {
                self.stripe.set_fault(Some(match kind {
                    FaultKind::StripeOutage => StripeFault::Down,
                    FaultKind::StripeRateLimitStorm => StripeFault::RateLimited,
                    _ => StripeFault::LosesAnswers,
                }));
                tokio::time::sleep(self.storm).await;
                self.stripe.set_fault(None);
                None
            }
            FaultKind::SmtpDown => {
                self.orders.smtp_down(self.storm).await;
                None
            }
            FaultKind::SmtpDeferring => {
                self.orders.smtp_defers(self.storm).await;
                None
            }
            FaultKind::SmtpRefusesOne => {
                self.orders.smtp_refuses_one().await;
                None
            }
            FaultKind::NotifierKilledMidSend => self.orders.kill_notifier_mid_send().await,
            FaultKind::ExportAnswersDropped => {
                self.orders.export.drop_answers(self.storm).await;
                None
            }
            FaultKind::SalesforceOutage
            | FaultKind::SalesforceRequestLimit
            | FaultKind::SalesforceSessionExpired => {
                let fault = match kind {
                    FaultKind::SalesforceOutage => SalesforceFault::Down,
                    FaultKind::SalesforceRequestLimit => SalesforceFault::RequestLimit,
                    _ => SalesforceFault::SessionsExpire,
                };
                self.salesforce.fault(fault, self.storm).await;
                None
            }
        };
        Ok((target, started.elapsed()))
    }
}

/// The order faults come in: every kind once per round, shuffled.
pub fn schedule(rounds: usize) -> Vec<FaultKind> {
    let mut rng = rand::thread_rng();
    (0..rounds)
        .flat_map(|_| {
            let mut round = ALL.to_vec();
            round.shuffle(&mut rng);
            round
        })
        .collect()
}

/// A pause between faults, in `range` seconds.
pub fn gap(range: (u64, u64)) -> Duration {
    Duration::from_millis(rand::thread_rng().gen_range(range.0 * 1000..=range.1 * 1000))
}
