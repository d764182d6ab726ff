//! Stripe's side of the outbound seam ([`OutboundAdapter`]): local
//! customer changes as Stripe customer calls.
//!
//! Every call carries `Idempotency-Key` = the outbox id's key, so a retry
//! after a lost response never creates a second customer. Stripe's echo
//! webhooks come back through stripe-inbound, which recognises them by
//! that key and passes nothing of them on (invariant 6); what it does pass
//! on (with Salesforce configured) has origin `stripe`, which the outbound
//! handler never sends back to Stripe.

use futures::future::BoxFuture;
use serde_json::Value;

use super::{AccountId, ObjectId, RemoteObject, StripeClient, StripeError, PLATFORM_ACCOUNT};
use crate::customers::input::LOCAL_ID_METADATA_KEY;
use crate::db::models::IdMapEntry;
use crate::kafka::consumer::Transient;
use crate::outbox::Change;
use crate::sync::adapter::{Call, Created, DeliveryError, OutboundAdapter, Request, Sent};
use crate::sync::{entity, service};

pub struct StripeOutbound {
    stripe: StripeClient,
}

impl StripeOutbound {
    pub fn new(stripe: StripeClient) -> Self {
        Self { stripe }
    }
}

impl From<StripeError> for DeliveryError {
    fn from(e: StripeError) -> Self {
        match e {
            e if e.is_transient() => Self::Transient(Transient {
                retry_after: e.retry_after(),
                error: e.into(),
            }),
            // A rejected key is configuration, not the change's fault.
            e @ StripeError::Api {
                status: 401 | 403, ..
            } => Self::Transient(Transient::from(e)),
            StripeError::Api { message, .. } => Self::Refused(message),
            e => Self::Refused(e.to_string()),
        }
    }
}

/// The Stripe account a link was made on. Every Stripe link went into
/// `id_map` from an [`AccountId`]; one that does not read back as one was
/// written by something else, and the change is refused with it named.
fn account_of(link: &IdMapEntry) -> Result<AccountId, DeliveryError> {
    AccountId::parse(&link.account)
        .map_err(|e| DeliveryError::Refused(format!("customer link {}: {e}", link.external_id)))
}

impl OutboundAdapter for StripeOutbound {
    fn service(&self) -> &'static str {
        service::STRIPE
    }

    fn entity(&self) -> &'static str {
        entity::CUSTOMER
    }

    fn display_name(&self) -> &'static str {
        "Stripe"
    }

    fn creates_when_unlinked(&self) -> bool {
        false
    }

    fn send_one<'a>(&'a self, r: &'a Request<'a>) -> BoxFuture<'a, Result<Sent, DeliveryError>> {
        Box::pin(async move {
            match &r.call {
                Call::Create { .. } => self.create(r.change, &r.key).await.map(Sent::Created),
                Call::Update { link } => self
                    .update(link, r.change, &r.key)
                    .await
                    .map(|()| Sent::Done),
                Call::Delete { link } => self.delete(link, &r.key).await.map(|()| Sent::Done),
            }
        })
    }
}

impl StripeOutbound {
    fn create<'a>(
        &'a self,
        change: &'a Change,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Created, DeliveryError>> {
        Box::pin(async move {
            // The change's own fields, not the row's current ones: a retry
            // must send what the first attempt sent under the same key.
            let mut form = form_fields(&change.fields);
            form.push((
                format!("metadata[{LOCAL_ID_METADATA_KEY}]"),
                change.local_id.to_string(),
            ));
            let created = self
                .stripe
                .post(&AccountId::PLATFORM, "/v1/customers", &form, key)
                .await?;
            // Without a customer id there is nothing to link: a retry
            // (same key, so Stripe replays its answer) rather than a
            // customer marked synced to nothing.
            let Some(external_id) = created_customer_id(&created) else {
                return Err(DeliveryError::Transient(Transient::from(anyhow::anyhow!(
                    "Stripe's answer to creating customer {} holds no customer id",
                    change.local_id
                ))));
            };
            Ok(Created {
                account: PLATFORM_ACCOUNT.to_owned(),
                external_id,
                version: created.get("created").and_then(Value::as_i64).unwrap_or(0),
            })
        })
    }

    fn update<'a>(
        &'a self,
        link: &'a IdMapEntry,
        change: &'a Change,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let path = format!("/v1/customers/{}", ObjectId::parse(&link.external_id)?);
            self.stripe
                .post(&account_of(link)?, &path, &form_fields(&change.fields), key)
                .await?;
            Ok(())
        })
    }

    fn delete<'a>(
        &'a self,
        link: &'a IdMapEntry,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let gone = self
                .stripe
                .delete(
                    &account_of(link)?,
                    "customers",
                    ObjectId::parse(&link.external_id)?,
                    key,
                )
                .await?;
            debug_assert_eq!(gone, RemoteObject::Deleted);
            Ok(())
        })
    }
}

/// The `cus_…` id of a created customer, if the answer holds a valid one.
fn created_customer_id(created: &Value) -> Option<String> {
    created
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| super::is_id(id, "cus_"))
        .map(str::to_owned)
}

/// Stripe's form encoding of a change: `null` clears a field (empty value);
/// metadata keys are set individually, `null` removing a key.
pub fn form_fields(fields: &serde_json::Map<String, Value>) -> Vec<(String, String)> {
    let mut form = Vec::new();
    for (key, value) in fields {
        match (key.as_str(), value) {
            ("metadata", Value::Object(meta)) => {
                for (k, v) in meta {
                    form.push((
                        format!("metadata[{k}]"),
                        v.as_str().unwrap_or_default().to_owned(),
                    ));
                }
            }
            (_, Value::String(s)) => form.push((key.clone(), s.clone())),
            (_, Value::Null) => form.push((key.clone(), String::new())),
            _ => {}
        }
    }
    form
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_create_answer_without_a_customer_id_links_nothing() {
        assert_eq!(
            created_customer_id(&json!({"id": "cus_Q1", "object": "customer"})).as_deref(),
            Some("cus_Q1")
        );
        for answer in [
            json!({"object": "customer"}),
            json!({"id": ""}),
            json!({"id": 42}),
            json!({"id": "ch_1"}),
            json!({"id": "cus_1/../../v1/charges"}),
        ] {
            assert_eq!(created_customer_id(&answer), None, "{answer}");
        }
    }

    #[test]
    fn form_encoding_follows_stripe() {
        let fields =
            json!({"name": "Ada", "email": null, "metadata": {"tier": "gold", "old": null}});
        let mut form = form_fields(fields.as_object().unwrap());
        form.sort();
        let expected: Vec<(String, String)> = [
            ("email", ""),
            ("metadata[old]", ""),
            ("metadata[tier]", "gold"),
            ("name", "Ada"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(form, expected);
    }
}
