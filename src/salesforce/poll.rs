//! The poller: the Contacts changed since its cursor, read with `queryAll`
//! (deleted ones too) in (`SystemModstamp`, `Id`) order and published to
//! `salesforce.events.v1`.
//!
//! The cursor is the last (stamp, id) published, kept in `sync_cursors`
//! and saved only once the broker acknowledged every version up to it: a
//! poller killed anywhere resumes at its last save and misses nothing;
//! what it publishes again is one ledger entry per version all the same.
//! Ordering by (stamp, id) with a strict "after" on the pair means a page
//! ending among versions of the same stamp resumes after the last one
//! read, not after the stamp.
//!
//! Stamps are whole seconds, so a second change of a Contact later in a
//! second the poller has read would carry a (stamp, id) the cursor has
//! already passed; and a version whose transaction commits after a
//! later-stamped one was read would be passed too. The poller therefore
//! reads only seconds that ended at least `settle` ago
//! (`SALESFORCE_POLL_SETTLE_MS`, by the host clock).

use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use super::client::{is_record_id, RecordId, SalesforceClient};
use super::contact::SOBJECT;
use super::event::{soql_datetime, SalesforceEvent, CONTACT_FIELDS, SOURCE_POLL};
use crate::db::PgPool;
use crate::kafka::EventProducer;
use crate::sync::cursor::{self, StreamKey};
use crate::sync::service;

/// `sync_cursors.stream` of the Contact poller.
pub const STREAM: &str = "poll:contact";

/// Where the poller is: the last version it published. Its id goes into
/// SOQL, so it is only made from a checked [`RecordId`] (or parsed with
/// the same check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    modstamp: i64,
    id: String,
}

impl Cursor {
    pub fn new(modstamp: i64, id: RecordId<'_>) -> Self {
        Self {
            modstamp,
            id: id.as_str().to_owned(),
        }
    }

    fn position(&self) -> String {
        format!("{}/{}", self.modstamp, self.id)
    }

    fn parse(position: &str) -> Option<Self> {
        let (stamp, id) = position.split_once('/')?;
        Some(Self {
            modstamp: stamp.parse().ok()?,
            id: id.to_owned(),
        })
        .filter(|c| is_record_id(&c.id))
    }
}

/// The fields the poller and a re-read select.
fn select(external_id_field: &str) -> String {
    let mut fields = CONTACT_FIELDS.to_vec();
    fields.push(external_id_field);
    format!("SELECT {} FROM {SOBJECT}", fields.join(", "))
}

/// The query for the page after `cursor`, of versions stamped before
/// `until` (milliseconds, the start of a second). The id it compares with
/// was checked to be a record id, so it cannot break out of its quotes.
pub fn page_query(
    external_id_field: &str,
    cursor: Option<&Cursor>,
    until: i64,
    limit: usize,
) -> String {
    let mut soql = format!(
        "{} WHERE SystemModstamp < {}",
        select(external_id_field),
        soql_datetime(until)
    );
    if let Some(c) = cursor {
        let at = soql_datetime(c.modstamp);
        soql.push_str(&format!(
            " AND (SystemModstamp > {at} OR (SystemModstamp = {at} AND Id > '{}'))",
            c.id
        ));
    }
    soql.push_str(&format!(
        " ORDER BY SystemModstamp ASC, Id ASC LIMIT {limit}"
    ));
    soql
}

/// The query for one Contact as it is now, deleted or not (through
/// `queryAll`). A record id has only letters and digits, so it is safe
/// inside the quotes.
pub fn current_query(external_id_field: &str, contact_id: RecordId<'_>) -> String {
    format!("{} WHERE Id = '{contact_id}'", select(external_id_field))
}

/// The start of the last second that ended at least `settle` before `now`
/// (milliseconds): what the poller reads up to, exclusive.
pub fn settled_until(now: i64, settle: Duration) -> i64 {
    let settled = now - settle.as_millis() as i64;
    settled - settled.rem_euclid(1000)
}

pub struct Poller {
    pub client: SalesforceClient,
    pub producer: EventProducer,
    pub pool: PgPool,
    pub topic: String,
    pub external_id_field: String,
    pub page_size: usize,
    pub settle: Duration,
}

impl Poller {
    /// Publishes every version changed since the cursor, page by page,
    /// until it is caught up; returns how many it published.
    pub async fn poll(&self) -> anyhow::Result<usize> {
        let org = self.client.org_id().await?;
        let mut cursor = self.load(&org).await?;
        let until = settled_until(chrono::Utc::now().timestamp_millis(), self.settle);
        let mut published = 0;
        loop {
            let soql = page_query(
                &self.external_id_field,
                cursor.as_ref(),
                until,
                self.page_size,
            );
            let page = self.client.query_all(&soql).await?;
            let read = page.records.len();
            let mut last = None;
            let mut sends = Vec::with_capacity(read);
            for mut record in page.records {
                record.remove("attributes");
                let event =
                    SalesforceEvent::of_record(record, Some(&org), SOURCE_POLL).map_err(|e| {
                        anyhow::anyhow!("Salesforce returned an unreadable Contact: {e}")
                    })?;
                let version = event.version().map_err(anyhow::Error::msg)?;
                let next = Cursor::new(version.modstamp, version.contact_id);
                let key = next.id.clone();
                last = Some(next);
                let payload = serde_json::to_vec(&event)?;
                let producer = self.producer.clone();
                let topic = self.topic.clone();
                sends.push(async move {
                    producer
                        .send(&topic, key.as_bytes(), &payload, &Vec::new())
                        .await
                });
            }
            // Every version of the page acknowledged before the cursor moves.
            for result in futures::future::join_all(sends).await {
                result.context("publishing a Contact version")?;
            }
            published += read;
            if let Some(next) = last {
                self.save(&org, &next).await?;
                cursor = Some(next);
            }
            if read < self.page_size {
                return Ok(published);
            }
        }
    }

    async fn load(&self, org: &str) -> anyhow::Result<Option<Cursor>> {
        let org = org.to_owned();
        let saved = crate::db::blocking(&self.pool, move |conn| -> anyhow::Result<_> {
            Ok(cursor::load(conn, key(&org))?)
        })
        .await?;
        match saved.and_then(|c| c.position) {
            None => Ok(None),
            Some(p) => Cursor::parse(&p)
                .map(Some)
                .ok_or_else(|| anyhow::anyhow!("the saved poll cursor {p:?} is unreadable")),
        }
    }

    async fn save(&self, org: &str, at: &Cursor) -> anyhow::Result<()> {
        let org = org.to_owned();
        let position = at.position();
        crate::db::blocking(&self.pool, move |conn| -> anyhow::Result<()> {
            Ok(cursor::save(conn, key(&org), Some(&position), "", false)?)
        })
        .await
    }

    /// Polls every `interval` until `shutdown`; a failed poll is logged and
    /// tried again at the next tick, from the last saved cursor.
    pub async fn run(self, interval: Duration, shutdown: CancellationToken) {
        loop {
            match self.poll().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(versions = n, "polled Salesforce Contacts"),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "polling Salesforce failed; retrying")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}

fn key(org: &str) -> StreamKey<'_> {
    StreamKey {
        service: service::SALESFORCE,
        account: org,
        stream: STREAM,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_after_a_cursor_resumes_after_its_version_not_its_millisecond() {
        let cursor = Cursor::new(
            1_764_628_080_123,
            RecordId::parse("003000000000001AAA").unwrap(),
        );
        let soql = page_query("StripeSync_Id__c", Some(&cursor), 1_764_628_090_000, 200);
        assert_eq!(
            soql,
            "SELECT Id, FirstName, LastName, Email, Phone, Description, IsDeleted, SystemModstamp, \
             LastModifiedById, StripeSync_Id__c FROM Contact \
             WHERE SystemModstamp < 2025-12-01T22:28:10.000Z \
             AND (SystemModstamp > 2025-12-01T22:28:00.123Z OR (SystemModstamp = 2025-12-01T22:28:00.123Z \
             AND Id > '003000000000001AAA')) ORDER BY SystemModstamp ASC, Id ASC LIMIT 200"
        );
        assert_eq!(Cursor::parse(&cursor.position()), Some(cursor));
        assert_eq!(Cursor::parse("1/' OR Id != '"), None);
        assert_eq!(
            current_query(
                "StripeSync_Id__c",
                RecordId::parse("003000000000001AAA").unwrap()
            ),
            "SELECT Id, FirstName, LastName, Email, Phone, Description, IsDeleted, SystemModstamp, \
             LastModifiedById, StripeSync_Id__c FROM Contact WHERE Id = '003000000000001AAA'"
        );
        assert_eq!(RecordId::parse("' OR Id != '"), None);
    }

    #[test]
    fn the_poller_reads_only_seconds_that_are_over() {
        let ms = Duration::from_millis;
        // 22:28:10.400 with no settle: up to 22:28:10.000, exclusive.
        assert_eq!(settled_until(1_764_628_090_400, ms(0)), 1_764_628_090_000);
        assert_eq!(settled_until(1_764_628_090_000, ms(0)), 1_764_628_090_000);
        assert_eq!(
            settled_until(1_764_628_090_400, ms(2000)),
            1_764_628_088_000
        );
        assert_eq!(settled_until(1_764_628_090_400, ms(500)), 1_764_628_089_000);
    }
}
