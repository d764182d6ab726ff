//! The seam each external service's writes go through.
//!
//! A local customer change reaches every configured service the same way:
//! one worker per service, each in its own consumer group on
//! `customers.changes.v1`, runs [`crate::outbound`]'s handler with that
//! service's [`OutboundAdapter`]. The handler owns what is the same for
//! every service: skipping a change the service already holds
//! (`outbox_deliveries` per service), waiting for a create still on its
//! way, recording the link in `id_map` and the delivery in the same
//! transaction, dead-lettering a refusal. The adapter owns only the calls
//! and what its service's answers mean.
//!
//! A third service implements this trait, names its `service` and
//! `entity` for `id_map`, and gets a worker of a few lines.

use futures::future::{BoxFuture, FutureExt};

use crate::db::models::{Customer, IdMapEntry};
use crate::kafka::consumer::Transient;
use crate::outbox::Change;

/// Why a change did not reach the service.
pub enum DeliveryError {
    /// Retried with backoff; the change is never skipped.
    Transient(Transient),
    /// The service refused the change for good; its message is kept for
    /// the API and the dead letter.
    Refused(String),
}

impl From<diesel::result::Error> for DeliveryError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Transient(Transient::from(e))
    }
}

/// The remote object a create made (or found: creates are idempotent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// `id_map.account`: the Stripe account, the Salesforce org.
    pub account: String,
    pub external_id: String,
    /// `id_map.remote_version` of the object as created.
    pub version: i64,
}

/// One call a change needs, planned by the outbound handler.
pub enum Call {
    /// Create the counterpart from the customer's row as it is now
    /// (`None`: the row is gone).
    Create {
        customer: Option<Customer>,
    },
    Update {
        link: IdMapEntry,
    },
    Delete {
        link: IdMapEntry,
    },
}

/// A planned call with the change it carries out.
pub struct Request<'a> {
    pub change: &'a Change,
    /// The change's idempotency key.
    pub key: String,
    pub call: Call,
}

/// What a call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    Created(Created),
    Done,
}

/// One service's writes of local customers.
pub trait OutboundAdapter: Send + Sync + 'static {
    /// `id_map.service` and `outbox_deliveries.service`.
    fn service(&self) -> &'static str;

    /// `id_map.entity` of a customer's counterpart (`customer`, `contact`).
    fn entity(&self) -> &'static str;

    /// The service's name in messages (`Stripe`).
    fn display_name(&self) -> &'static str;

    /// Whether an update of a customer the service has no counterpart of
    /// creates one from the customer's current row. Stripe: no (its create
    /// failed and was dead-lettered; replaying that is the fix). Salesforce:
    /// yes (customers that existed before the adapter was configured).
    fn creates_when_unlinked(&self) -> bool;

    /// Makes the call of one request: creates the counterpart (`Sent::Created`
    /// with what it made, or found: creates are idempotent), or applies an
    /// update or delete to the linked one (one already gone counts as
    /// deleted).
    fn send_one<'a>(&'a self, r: &'a Request<'a>) -> BoxFuture<'a, Result<Sent, DeliveryError>>;

    /// Makes the calls of several changes, each of a different customer,
    /// in order; one result per request. One by one unless the service
    /// batches them (Salesforce's Composite API).
    fn send<'a>(
        &'a self,
        requests: &'a [Request<'a>],
    ) -> BoxFuture<'a, Vec<Result<Sent, DeliveryError>>> {
        async move {
            let mut results = Vec::with_capacity(requests.len());
            for r in requests {
                results.push(self.send_one(r).await);
            }
            results
        }
        .boxed()
    }
}
