//! What an event does to the store. No HTTP and no Kafka in here: callers
//! hand in a connection inside their transaction and a [`RemoteReader`] for
//! the rare case an object must be re-read from its service.

mod customer;
pub mod ledger;

pub use customer::SNAPSHOT_TYPE;

use std::time::Duration;

use diesel::pg::PgConnection;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use crate::stripe::{RemoteObject, StripeEvent};
use crate::sync::service;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Worth retrying: the same input may succeed later.
    #[error("transient: {source:#}")]
    Transient {
        source: anyhow::Error,
        retry_after: Option<Duration>,
    },
    /// Will never succeed for this input; goes to the dead-letter topic.
    #[error("permanent: {0}")]
    Permanent(String),
}

impl ApplyError {
    pub fn transient(source: impl Into<anyhow::Error>) -> Self {
        Self::Transient {
            source: source.into(),
            retry_after: None,
        }
    }
}

impl From<DieselError> for ApplyError {
    /// Postgres refusing the data itself is permanent; anything else (lost
    /// connection, serialisation failure, a racing unique insert) may pass
    /// on a retry, so it is transient.
    fn from(e: DieselError) -> Self {
        match &e {
            DieselError::DatabaseError(
                DatabaseErrorKind::NotNullViolation
                | DatabaseErrorKind::CheckViolation
                | DatabaseErrorKind::ForeignKeyViolation
                | DatabaseErrorKind::ExclusionViolation
                | DatabaseErrorKind::RestrictViolation,
                info,
            ) => Self::Permanent(format!("database rejected the data: {}", info.message())),
            DieselError::SerializationError(err) | DieselError::DeserializationError(err) => {
                Self::Permanent(format!("could not convert a value: {err}"))
            }
            _ => Self::transient(e),
        }
    }
}

/// Reads the current state of an object from its service. Used to break
/// same-second ties, where event timestamps cannot say which state is newer.
pub trait RemoteReader: Send + Sync {
    /// `collection` is the REST collection, e.g. `customers`.
    fn current(
        &self,
        account: &str,
        collection: &str,
        id: &str,
    ) -> Result<RemoteObject, ApplyError>;
}

/// What applying one event did; recorded in the ledger as `outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The event id is already in the ledger: nothing changed.
    Duplicate,
    /// A type no applier handles yet; ledgered so it is not reconsidered.
    Ignored,
    /// Older than the state already stored: skipped.
    Stale,
    /// The object is deleted; a late event cannot bring it back.
    AfterTombstone,
    /// The event's snapshot was written.
    Upserted,
    /// Same second as the stored state: the object was re-read from Stripe
    /// and that state was written.
    TieResolved,
    /// The object was tombstoned.
    Deleted,
}

impl Applied {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Duplicate => "duplicate",
            Self::Ignored => "ignored",
            Self::Stale => "stale",
            Self::AfterTombstone => "after_tombstone",
            Self::Upserted => "upserted",
            Self::TieResolved => "tie_resolved",
            Self::Deleted => "deleted",
        }
    }
}

/// Applies one Stripe event inside the caller's transaction: claims the
/// event id in the ledger first (so a duplicate costs one insert and changes
/// nothing), then routes by type.
pub fn apply_stripe_event(
    conn: &mut PgConnection,
    remote: &dyn RemoteReader,
    event: &StripeEvent,
) -> Result<Applied, ApplyError> {
    if !ledger::claim(conn, service::STRIPE, event)? {
        return Ok(Applied::Duplicate);
    }
    let applied = match event.kind.as_str() {
        "customer.created" | "customer.updated" | "customer.deleted" | SNAPSHOT_TYPE => {
            customer::apply(conn, remote, event)?
        }
        _ => Applied::Ignored,
    };
    ledger::record_outcome(conn, service::STRIPE, event, applied)?;
    Ok(applied)
}
