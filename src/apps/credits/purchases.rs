//! Off-session purchases of a package with the customer's default card.
//!
//! The purchase row is written before Stripe is asked and its id goes into
//! the payment intent's metadata, so whichever learns of the success first
//! credits it through `credits.credit_purchase`: this module, from Stripe's
//! answer, or the mirror's trigger, from the `payment_intent.succeeded`
//! webhook (or a reconcile). A request retried under the same
//! Idempotency-Key finds its row by the derived Stripe key and resumes it:
//! the payment intent is read if one is known, else created again with the
//! same key and the same request (the payment method recorded at the
//! start), which Stripe answers with the first intent. A row found under
//! the key for another customer or package is never answered from: the key
//! was reused (422).

use diesel::prelude::*;
use diesel::sql_types::{Bool, Text, Uuid as SqlUuid};
use serde_json::Value;
use uuid::Uuid;

use super::packages::{self, Package};
use super::{ledger, payment_methods, CreditsError};
use crate::customers::CustomerId;
use crate::db::schema::credits::purchases;
use crate::db::{blocking, PgPool};
use crate::stripe::client::{StripeClient, StripeError};
use crate::stripe::{AccountId, ObjectId, RemoteObject};

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = purchases, check_for_backend(diesel::pg::Pg))]
pub struct Purchase {
    pub id: Uuid,
    pub customer_id: CustomerId,
    pub package_id: String,
    pub credits: i64,
    pub price: i64,
    pub currency: String,
    pub payment_intent: Option<String>,
    pub status: PurchaseStatus,
    pub error_code: Option<String>,
    pub error: Option<String>,
    /// What it is paid with, recorded before Stripe is asked (`None` for
    /// purchases started before this was kept).
    pub payment_method: Option<String>,
}

crate::text_enum! {
    /// `credits.purchases.status`: where its payment stands.
    pub enum PurchaseStatus {
        /// Recorded before Stripe is asked; nothing is known of the charge.
        Processing = "processing",
        /// Stripe is still moving the money (its `processing`).
        Pending = "pending",
        /// The customer must authenticate the payment.
        RequiresAction = "requires_action",
        /// Paid and credited, once.
        Succeeded = "succeeded",
        /// Declined, refused or with nothing to pay with.
        Failed = "failed",
    }
}

/// How a purchase request ends, as the API answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded {
        purchase_id: Uuid,
        credits_added: i64,
        balance: i64,
    },
    /// Stripe is still processing; credited when it reports success.
    Pending { purchase_id: Uuid },
    Declined {
        purchase_id: Uuid,
        code: String,
        decline_code: Option<String>,
        message: String,
    },
    /// Failed without a payment attempt: Stripe refused the request, or
    /// there was no card to charge.
    Refused { purchase_id: Uuid, message: String },
    /// The bank wants the customer present: confirm this intent on-session.
    NeedsAuthentication {
        purchase_id: Uuid,
        payment_intent: String,
        client_secret: String,
    },
}

/// The purchase started under `request_key`, if any.
pub fn find(conn: &mut PgConnection, request_key: &str) -> QueryResult<Option<Purchase>> {
    purchases::table
        .filter(purchases::request_key.eq(request_key))
        .select(Purchase::as_select())
        .first(conn)
        .optional()
}

/// The checks made before anything is written or charged: the customer
/// exists and has a Stripe customer; the package is on sale.
pub fn prepare(
    conn: &mut PgConnection,
    customer: CustomerId,
    package_id: &str,
) -> Result<(String, Package), CreditsError> {
    let stripe_customer = crate::customers::stripe_customer(conn, customer)?;
    match packages::get(conn, package_id)? {
        Some(package) if package.active => Ok((stripe_customer, package)),
        _ => Err(CreditsError::InvalidPackage(package_id.to_owned())),
    }
}

/// Records the purchase (what the package sells today, paid with
/// `payment_method`) under `request_key`, or finds the one a concurrent
/// twin recorded.
pub fn open(
    conn: &mut PgConnection,
    customer: CustomerId,
    package: &Package,
    payment_method: &str,
    request_key: &str,
) -> QueryResult<Purchase> {
    diesel::insert_into(purchases::table)
        .values((
            purchases::id.eq(Uuid::new_v4()),
            purchases::customer_id.eq(customer),
            purchases::package_id.eq(&package.id),
            purchases::credits.eq(package.credits),
            purchases::price.eq(package.price),
            purchases::currency.eq(&package.currency),
            purchases::request_key.eq(request_key),
            purchases::payment_method.eq(payment_method),
        ))
        .on_conflict(purchases::request_key)
        .do_nothing()
        .execute(conn)?;
    Ok(find(conn, request_key)?.expect("the purchase was just recorded"))
}

/// Stripe's form for the purchase's payment intent.
pub fn intent_form(
    purchase: &Purchase,
    stripe_customer: &str,
    payment_method: &str,
) -> Vec<(String, String)> {
    [
        ("amount", purchase.price.to_string()),
        ("currency", purchase.currency.clone()),
        ("customer", stripe_customer.to_owned()),
        ("payment_method", payment_method.to_owned()),
        ("confirm", "true".to_owned()),
        ("off_session", "true".to_owned()),
        ("metadata[stripe_sync_purchase]", purchase.id.to_string()),
        (
            "metadata[stripe_sync_customer]",
            purchase.customer_id.to_string(),
        ),
        ("metadata[stripe_sync_package]", purchase.package_id.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// [`record`], from async code.
async fn record_on(
    pool: &PgPool,
    id: Uuid,
    status: PurchaseStatus,
    payment_intent: Option<&str>,
    error: Option<(&str, &str)>,
) -> Result<(), CreditsError> {
    let payment_intent = payment_intent.map(str::to_owned);
    let error = error.map(|(code, message)| (code.to_owned(), message.to_owned()));
    blocking(pool, move |conn| {
        let error = error.as_ref().map(|(c, m)| (c.as_str(), m.as_str()));
        Ok::<_, CreditsError>(record(conn, id, status, payment_intent.as_deref(), error)?)
    })
    .await
}

/// Moves a purchase that is not credited yet; a credited one stays so.
pub fn record(
    conn: &mut PgConnection,
    id: Uuid,
    status: PurchaseStatus,
    payment_intent: Option<&str>,
    error: Option<(&str, &str)>,
) -> QueryResult<()> {
    diesel::update(
        purchases::table
            .find(id)
            .filter(purchases::status.ne(PurchaseStatus::Succeeded)),
    )
    .set((
        purchases::status.eq(status),
        // The first intent recorded stays the purchase's.
        purchases::payment_intent.eq(coalesce(purchases::payment_intent, payment_intent)),
        purchases::error_code.eq(error.map(|(code, _)| code)),
        purchases::error.eq(error.map(|(_, message)| message)),
        purchases::updated_at.eq(diesel::dsl::now),
    ))
    .execute(conn)
    .map(drop)
}

diesel::define_sql_function! {
    /// SQL's `COALESCE` of two nullable values.
    fn coalesce(first: diesel::sql_types::Nullable<Text>, second: diesel::sql_types::Nullable<Text>) -> diesel::sql_types::Nullable<Text>;
}

/// Raw SQL: the crediting is the migration's SQL function, which the
/// webhook's trigger calls too.
#[derive(QueryableByName)]
struct Credited {
    #[diesel(sql_type = Bool)]
    credited: bool,
}

/// Credits the purchase paid by `payment_intent` (once, whoever asks
/// first) and answers with the balance after it.
pub fn credit(
    conn: &mut PgConnection,
    id: Uuid,
    payment_intent: &str,
) -> Result<Outcome, CreditsError> {
    conn.transaction(|conn| {
        let Credited { credited } =
            diesel::sql_query("SELECT credits.credit_purchase($1, $2) AS credited")
                .bind::<SqlUuid, _>(id)
                .bind::<Text, _>(payment_intent)
                .get_result(conn)?;
        let purchase: Purchase = purchases::table
            .find(id)
            .select(Purchase::as_select())
            .first(conn)?;
        if purchase.status != PurchaseStatus::Succeeded {
            // credit_purchase refused: the purchase is another intent's.
            return Err(CreditsError::IntentMismatch {
                purchase_id: id,
                payment_intent: payment_intent.to_owned(),
            });
        }
        tracing::info!(purchase.id = %id, payment_intent, credited_now = credited, "purchase credited");
        Ok(Outcome::Succeeded {
            purchase_id: id,
            credits_added: purchase.credits,
            balance: ledger::balance(conn, purchase.customer_id)?,
        })
    })
}

/// Buys `package_id` for `customer`, or resumes the purchase started under
/// the same `request_key`.
pub async fn buy(
    pool: &PgPool,
    stripe: &StripeClient,
    customer: CustomerId,
    package_id: String,
    request_key: String,
) -> Result<Outcome, CreditsError> {
    let key = request_key.clone();
    let found = blocking(pool, move |conn| Ok::<_, CreditsError>(find(conn, &key)?)).await?;
    let (purchase, charge_with) = match found {
        // The key's purchase is another customer's or another package's:
        // the key was reused, and nothing of that purchase is answered.
        Some(purchase) if purchase.customer_id != customer || purchase.package_id != package_id => {
            return Err(CreditsError::KeyReused)
        }
        // A retry resumes what it started, even if the package changed
        // since: the purchase keeps what was sold.
        Some(purchase) => (purchase, None),
        None => {
            let (stripe_customer, package) =
                blocking(pool, move |conn| prepare(conn, customer, &package_id)).await?;
            let pm = payment_methods::default_of(stripe, &stripe_customer)
                .await?
                .ok_or(CreditsError::NoPaymentMethod)?;
            let (key, recorded_pm) = (request_key.clone(), pm.clone());
            let purchase = blocking(pool, move |conn| {
                Ok::<_, CreditsError>(open(conn, customer, &package, &recorded_pm, &key)?)
            })
            .await?;
            // A concurrent twin may have recorded it first (another card,
            // if the default changed between): what it recorded is charged.
            let pm = purchase.payment_method.clone().unwrap_or(pm);
            (purchase, Some((stripe_customer, pm)))
        }
    };
    match purchase.status {
        PurchaseStatus::Succeeded => {
            let (id, pi) = (
                purchase.id,
                purchase.payment_intent.clone().unwrap_or_default(),
            );
            return blocking(pool, move |conn| credit(conn, id, &pi)).await;
        }
        PurchaseStatus::Failed => {
            let message = purchase
                .error
                .unwrap_or_else(|| "the payment failed".into());
            return Ok(match purchase.error_code {
                // Not a card's answer: Stripe refused the request itself,
                // or there was nothing to pay with. Never called a decline.
                Some(code) if code == REFUSED || code == NO_PAYMENT_METHOD => Outcome::Refused {
                    purchase_id: purchase.id,
                    message,
                },
                code => Outcome::Declined {
                    purchase_id: purchase.id,
                    code: code.unwrap_or_else(|| "card_declined".into()),
                    decline_code: None,
                    message,
                },
            });
        }
        PurchaseStatus::Processing | PurchaseStatus::Pending | PurchaseStatus::RequiresAction => {}
    }
    let intent = match (&purchase.payment_intent, charge_with) {
        (Some(pi), _) => match async {
            let id = ObjectId::parse(pi)?;
            stripe
                .retrieve(&AccountId::PLATFORM, "payment_intents", id)
                .await
        }
        .await
        {
            Ok(RemoteObject::Live(intent)) => Ok(intent),
            Ok(RemoteObject::Deleted) => Err(StripeError::Api {
                status: 404,
                code: Some("resource_missing".into()),
                message: format!("payment intent {pi} is gone"),
                decline_code: None,
                payment_intent: None,
            }),
            Err(e) => Err(e),
        },
        (None, Some((stripe_customer, pm))) => {
            charge(stripe, &purchase, &stripe_customer, &pm, &request_key).await
        }
        (None, None) => {
            let customer = purchase.customer_id;
            let stripe_customer = blocking(pool, move |conn| {
                Ok::<_, CreditsError>(crate::customers::stripe_customer(conn, customer)?)
            })
            .await?;
            // The same request as the first attempt, so Stripe replays
            // that attempt's intent instead of refusing the key: the card
            // the purchase started with, not today's default (only a
            // purchase recorded before cards were kept falls back to it).
            let pm = match purchase.payment_method.clone() {
                Some(pm) => Some(pm),
                None => payment_methods::default_of(stripe, &stripe_customer).await?,
            };
            match pm {
                Some(pm) => charge(stripe, &purchase, &stripe_customer, &pm, &request_key).await,
                None => {
                    let id = purchase.id;
                    let why = (
                        NO_PAYMENT_METHOD,
                        "the customer has no default payment method",
                    );
                    record_on(pool, id, PurchaseStatus::Failed, None, Some(why)).await?;
                    return Err(CreditsError::NoPaymentMethod);
                }
            }
        }
    };
    match intent {
        Ok(intent) => settle(pool, stripe, &purchase, intent).await,
        Err(e) => refused(pool, stripe, &purchase, e).await,
    }
}

async fn charge(
    stripe: &StripeClient,
    purchase: &Purchase,
    stripe_customer: &str,
    pm: &str,
    request_key: &str,
) -> Result<Value, StripeError> {
    let form = intent_form(purchase, stripe_customer, pm);
    stripe
        .post(
            &AccountId::PLATFORM,
            "/v1/payment_intents",
            &form,
            request_key,
        )
        .await
}

/// Records what Stripe says of the purchase's payment intent, and answers.
async fn settle(
    pool: &PgPool,
    stripe: &StripeClient,
    purchase: &Purchase,
    intent: Value,
) -> Result<Outcome, CreditsError> {
    let id = purchase.id;
    let pi = intent["id"].as_str().unwrap_or_default().to_owned();
    let status = intent["status"].as_str().unwrap_or_default().to_owned();
    match status.as_str() {
        "succeeded" => blocking(pool, move |conn| credit(conn, id, &pi)).await,
        "processing" | "requires_capture" => {
            record_on(pool, id, PurchaseStatus::Pending, Some(&pi), None).await?;
            Ok(Outcome::Pending { purchase_id: id })
        }
        "requires_action" | "requires_confirmation" => {
            needs_authentication(pool, stripe, purchase, intent).await
        }
        _ => {
            let error = &intent["last_payment_error"];
            let code = error["code"].as_str().unwrap_or("card_declined").to_owned();
            let message = error["message"]
                .as_str()
                .unwrap_or("the payment was declined")
                .to_owned();
            let decline_code = error["decline_code"].as_str().map(str::to_owned);
            let why = (code.as_str(), message.as_str());
            record_on(pool, id, PurchaseStatus::Failed, Some(&pi), Some(why)).await?;
            Ok(Outcome::Declined {
                purchase_id: id,
                code,
                decline_code,
                message,
            })
        }
    }
}

/// The intent waits on the customer: its client secret lets the app
/// confirm it on-session; its success then credits the purchase through
/// the webhook.
async fn needs_authentication(
    pool: &PgPool,
    stripe: &StripeClient,
    purchase: &Purchase,
    intent: Value,
) -> Result<Outcome, CreditsError> {
    let id = purchase.id;
    let pi = intent["id"].as_str().unwrap_or_default().to_owned();
    let client_secret = match intent["client_secret"].as_str() {
        Some(secret) => secret.to_owned(),
        None => match stripe
            .retrieve(
                &AccountId::PLATFORM,
                "payment_intents",
                ObjectId::parse(&pi)?,
            )
            .await?
        {
            RemoteObject::Live(full) => full["client_secret"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            RemoteObject::Deleted => String::new(),
        },
    };
    record_on(pool, id, PurchaseStatus::RequiresAction, Some(&pi), None).await?;
    Ok(Outcome::NeedsAuthentication {
        purchase_id: id,
        payment_intent: pi,
        client_secret,
    })
}

/// Stripe refused the charge. A card error is the purchase's answer (402);
/// `authentication_required` names the intent to confirm on-session.
/// Another refusal of the request fails the purchase and is reported as
/// Stripe gave it. An outage, or Stripe holding an earlier attempt under
/// the key (which may have charged), leaves it processing, for a retry or
/// the webhook to settle: a purchase fails only when its payment did.
async fn refused(
    pool: &PgPool,
    stripe: &StripeClient,
    purchase: &Purchase,
    e: StripeError,
) -> Result<Outcome, CreditsError> {
    let id = purchase.id;
    match e {
        StripeError::Api {
            status: 402,
            code,
            message,
            decline_code,
            payment_intent,
        } => {
            if let (Some("authentication_required"), Some(pi)) =
                (code.as_deref(), payment_intent.as_deref())
            {
                if let RemoteObject::Live(intent) = stripe
                    .retrieve(
                        &AccountId::PLATFORM,
                        "payment_intents",
                        ObjectId::parse(pi)?,
                    )
                    .await?
                {
                    return needs_authentication(pool, stripe, purchase, intent).await;
                }
            }
            let code = code.unwrap_or_else(|| "card_declined".to_owned());
            let why = (code.as_str(), message.as_str());
            record_on(
                pool,
                id,
                PurchaseStatus::Failed,
                payment_intent.as_deref(),
                Some(why),
            )
            .await?;
            Ok(Outcome::Declined {
                purchase_id: id,
                code,
                decline_code,
                message,
            })
        }
        // Stripe holds an earlier attempt under the same key, which may
        // have charged: the purchase stays processing, settled by a retry
        // (which then gets that attempt's intent) or by the webhook.
        StripeError::Idempotency { .. } => Err(CreditsError::InProgress { purchase_id: id }),
        e if e.is_transient() => Err(e.into()),
        // Stripe refused the request itself (an invalid parameter, a
        // payment method it does not have): no payment was attempted, and
        // the same request would be refused again.
        e @ StripeError::Api {
            status: 400 | 404, ..
        } => {
            let message = e.to_string();
            record_on(
                pool,
                id,
                PurchaseStatus::Failed,
                None,
                Some((REFUSED, &message)),
            )
            .await?;
            Err(e.into())
        }
        // Anything else (our key refused, an answer we could not read,
        // which may follow a charge) says nothing of the payment: it stays
        // processing, for a retry or the webhook to settle.
        e => Err(e.into()),
    }
}

/// A purchase's `error_code` when Stripe refused its request outright.
const REFUSED: &str = "stripe_refused";
/// A purchase's `error_code` when there was no card to charge.
const NO_PAYMENT_METHOD: &str = "no_payment_method";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_intent_is_off_session_and_names_its_purchase() {
        let purchase = Purchase {
            id: Uuid::nil(),
            customer_id: CustomerId::from_uuid(Uuid::max()),
            package_id: "package_2".into(),
            credits: 300,
            price: 2500,
            currency: "usd".into(),
            payment_intent: None,
            status: PurchaseStatus::Processing,
            error_code: None,
            error: None,
            payment_method: Some("pm_1".into()),
        };
        let form = intent_form(&purchase, "cus_1", "pm_1");
        let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("amount"), Some("2500"));
        assert_eq!(get("confirm"), Some("true"));
        assert_eq!(get("off_session"), Some("true"));
        assert_eq!(get("payment_method"), Some("pm_1"));
        assert_eq!(
            get("metadata[stripe_sync_purchase]"),
            Some(Uuid::nil().to_string().as_str())
        );
        assert_eq!(get("metadata[stripe_sync_package]"), Some("package_2"));
    }
}
