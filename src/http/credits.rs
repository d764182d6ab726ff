//! `/api/credit-packages` and a customer's `/payment-methods`,
//! `/credit-purchases`, `/credit-spends` and `/credits`: the credits app
//! (`crate::apps::credits`), for the application's backend (API token).
//! Operators' powers, which can mint credits or change what is sold, are
//! under `/api/admin/` (admin token): `credit-packages` (create, change)
//! and a customer's `credit-adjustments`; their old paths answer 403 with
//! a pointer. Purchases, spends and adjustments require an
//! `Idempotency-Key`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Value};
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use super::body::{json_body, refused, typed};
use super::error::ApiError;
use super::idempotent::{self, idempotent, Answer};
use super::payments::Ctx;
use super::stripe_errors::{stripe_answer, stripe_code};
use crate::apps::credits::ledger::{self, Posted};
use crate::apps::credits::packages::{self, CreateBody, PatchBody};
use crate::apps::credits::purchases::{self, Outcome};
use crate::apps::credits::{payment_methods, CreditsError};
use crate::customers::list::{Cursor, DEFAULT_LIMIT, MAX_LIMIT};
use crate::customers::CustomerId;
use crate::customers::NoStripeCustomer;
use crate::db::blocking;
use crate::input;
use crate::input::Invalid;
use crate::stripe::is_id as is_stripe_id;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SaveCardBody {
    payment_method: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PurchaseBody {
    package_id: String,
}

/// A spend's or an adjustment's body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryBody {
    credits: i64,
    reason: String,
}

/// The ledger entries the API posts directly (purchases and refunds come
/// from Stripe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    /// Takes credits; never below zero.
    Spend,
    /// An operator's signed correction.
    Adjustment,
}

impl Entry {
    fn route(self) -> &'static str {
        match self {
            Self::Spend => "credit-spends",
            Self::Adjustment => "credit-adjustments",
        }
    }
}

pub fn routes(
    ctx: Ctx,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let with = warp::any().map(move || ctx.clone());
    let key = warp::header::optional::<String>("idempotency-key");

    let list_packages = warp::path!("credit-packages")
        .and(warp::get())
        .and(with.clone())
        .and_then(|ctx: Ctx| async move {
            let list = run(&ctx, |conn| Ok(packages::list(conn)?)).await?;
            Ok::<_, Rejection>(warp::reply::json(&json!({"packages": list})).into_response())
        });
    let create_package = warp::path!("admin" / "credit-packages")
        .and(warp::post())
        .and(json_body::<Value>())
        .and(with.clone())
        .and_then(|body: Value, ctx: Ctx| async move {
            let new = typed::<CreateBody>(&body)?.checked().map_err(refused)?;
            let created = run(&ctx, move |conn| Ok(packages::create(conn, &new)?)).await?;
            match created {
                Some(p) => Ok(
                    warp::reply::with_status(warp::reply::json(&p), StatusCode::CREATED)
                        .into_response(),
                ),
                None => Err(reject(
                    ApiError::new(
                        StatusCode::CONFLICT,
                        "package_exists",
                        "a package with this id exists; PATCH it instead",
                    )
                    .with_field("id"),
                )),
            }
        });
    let patch_package = warp::path!("admin" / "credit-packages" / String)
        .and(warp::patch())
        .and(json_body::<Value>())
        .and(with.clone())
        .and_then(|id: String, body: Value, ctx: Ctx| async move {
            let patch = typed::<PatchBody>(&body)?.checked().map_err(refused)?;
            let updated = run(&ctx, move |conn| Ok(packages::update(conn, &id, &patch)?)).await?;
            match updated {
                Some(p) => Ok(warp::reply::json(&p).into_response()),
                None => Err(reject(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "no package with this id",
                ))),
            }
        });

    let save_card = warp::path!("customers" / String / "payment-methods")
        .and(warp::post())
        .and(key)
        .and(json_body::<Value>())
        .and(with.clone())
        .and_then(
            |customer: String, key: Option<String>, body: Value, ctx: Ctx| async move {
                let customer = customer_id(&customer)?;
                let pm = typed::<SaveCardBody>(&body)?.payment_method;
                if !is_stripe_id(&pm, "pm_") {
                    return Err(refused(Invalid::new(
                        "payment_method",
                        format!("{pm:?} is not a payment method id (pm_…)"),
                    )));
                }
                let route = format!("customers/{customer}/payment-methods");
                idempotent(
                    ctx.pool.clone(),
                    key,
                    &route,
                    &body,
                    move |stripe_key| async move {
                        let stripe = ctx.stripe()?;
                        let cus = stripe_customer(&ctx, customer).await?;
                        let saved = payment_methods::save(stripe, &cus, &pm, &stripe_key)
                            .await
                            .map_err(stripe_answer)?;
                        Ok(Answer::done(StatusCode::OK, saved))
                    },
                )
                .await
            },
        );
    let list_cards = warp::path!("customers" / String / "payment-methods")
        .and(warp::get())
        .and(with.clone())
        .and_then(|customer: String, ctx: Ctx| async move {
            let customer = customer_id(&customer)?;
            let stripe = ctx.stripe().map_err(reject)?;
            let cus = stripe_customer(&ctx, customer).await.map_err(reject)?;
            let cards = payment_methods::list(stripe, &cus)
                .await
                .map_err(|e| reject(stripe_answer(e)))?;
            Ok::<_, Rejection>(
                warp::reply::json(&json!({"payment_methods": cards})).into_response(),
            )
        });

    let purchase = warp::path!("customers" / String / "credit-purchases")
        .and(warp::post())
        .and(key)
        .and(json_body::<Value>())
        .and(with.clone())
        .and_then(
            |customer: String, key: Option<String>, body: Value, ctx: Ctx| async move {
                let customer = customer_id(&customer)?;
                let key = idempotent::required(key)?;
                let package_id = typed::<PurchaseBody>(&body)?.package_id;
                let route = format!("customers/{customer}/credit-purchases");
                idempotent(
                    ctx.pool.clone(),
                    Some(key),
                    &route,
                    &body,
                    move |stripe_key| async move {
                        let stripe = ctx.stripe()?;
                        let outcome =
                            purchases::buy(&ctx.pool, stripe, customer, package_id, stripe_key)
                                .await
                                .map_err(credits_error)?;
                        answer(outcome)
                    },
                )
                .await
            },
        );
    let spend = warp::path!("customers" / String / "credit-spends")
        .and(warp::post())
        .and(key)
        .and(json_body::<Value>())
        .and(with.clone())
        .and_then(
            |customer: String, key: Option<String>, body: Value, ctx: Ctx| async move {
                post_entry(ctx, customer, key, body, Entry::Spend).await
            },
        );
    let adjust = warp::path!("admin" / "customers" / String / "credit-adjustments")
        .and(warp::post())
        .and(key)
        .and(json_body::<Value>())
        .and(with.clone())
        .and_then(
            |customer: String, key: Option<String>, body: Value, ctx: Ctx| async move {
                post_entry(ctx, customer, key, body, Entry::Adjustment).await
            },
        );
    let history = warp::path!("customers" / String / "credits")
        .and(warp::get())
        .and(warp::query::<BTreeMap<String, String>>())
        .and(with.clone())
        .and_then(
            |customer: String, query: BTreeMap<String, String>, ctx: Ctx| async move {
                let customer = customer_id(&customer)?;
                let (limit, before) = page(&query)?;
                let history = run(&ctx, move |conn| {
                    if !crate::customers::exists(conn, customer)? {
                        return Err(NoStripeCustomer::Missing(customer).into());
                    }
                    Ok(ledger::history(conn, customer, limit, before.as_ref())?)
                })
                .await?;
                Ok::<_, Rejection>(warp::reply::json(&history).into_response())
            },
        );

    // The application's token once reached these; they moved under the
    // admin token. A 403 that names the new path, not a silent 404.
    let moved_packages = warp::path!("credit-packages")
        .and(warp::post())
        .map(|| "POST /api/admin/credit-packages")
        .or(warp::path!("credit-packages" / String)
            .and(warp::patch())
            .map(|_| "PATCH /api/admin/credit-packages/{id}"))
        .unify()
        .or(warp::path!("customers" / String / "credit-adjustments")
            .and(warp::post())
            .map(|_| "POST /api/admin/customers/{id}/credit-adjustments"))
        .unify()
        .and_then(|moved_to: &'static str| async move {
            Err::<warp::reply::Response, _>(reject(ApiError::new(
                StatusCode::FORBIDDEN,
                "admin_route",
                format!("operators' credit routes take the ADMIN_TOKEN: use {moved_to}"),
            )))
        });

    list_packages
        .or(moved_packages)
        .unify()
        .or(create_package)
        .unify()
        .or(patch_package)
        .unify()
        .or(save_card)
        .unify()
        .or(list_cards)
        .unify()
        .or(purchase)
        .unify()
        .or(spend)
        .unify()
        .or(adjust)
        .unify()
        .or(history)
        .unify()
}

fn reject(e: ApiError) -> Rejection {
    warp::reject::custom(e)
}

/// A customer id in the path; anything but a UUID is no customer.
fn customer_id(raw: &str) -> Result<CustomerId, Rejection> {
    raw.parse().map_err(|_| {
        reject(ApiError::new(
            StatusCode::NOT_FOUND,
            "customer_not_found",
            "no customer with this id",
        ))
    })
}

async fn stripe_customer(ctx: &Ctx, customer: CustomerId) -> Result<String, ApiError> {
    blocking(&ctx.pool, move |conn| {
        Ok(crate::customers::stripe_customer(conn, customer)?)
    })
    .await
    .map_err(credits_error)
}

async fn run<T: Send + 'static>(
    ctx: &Ctx,
    op: impl FnOnce(&mut diesel::PgConnection) -> Result<T, CreditsError> + Send + 'static,
) -> Result<T, ApiError> {
    blocking(&ctx.pool, op).await.map_err(credits_error)
}

fn checked_entry(entry: Entry, credits: i64, reason: String) -> Result<String, Invalid> {
    let fits = match entry {
        Entry::Spend => (1..=ledger::MAX_SPEND).contains(&credits),
        Entry::Adjustment => credits != 0 && credits.abs() <= ledger::MAX_SPEND,
    };
    if !fits {
        let range = match entry {
            Entry::Spend => format!("from 1 to {}", ledger::MAX_SPEND),
            Entry::Adjustment => format!("other than 0, at most {} either way", ledger::MAX_SPEND),
        };
        return Err(Invalid::new(
            "credits",
            format!("credits is a whole number {range}"),
        ));
    }
    let reason = reason.trim().to_owned();
    if reason.is_empty() || reason.chars().count() > ledger::MAX_REASON {
        return Err(Invalid::new(
            "reason",
            format!("reason is 1 to {} characters", ledger::MAX_REASON),
        ));
    }
    Ok(reason)
}

/// A spend or an adjustment: once per `Idempotency-Key` (the key's saved
/// answer, and under it the ledger's unique source).
async fn post_entry(
    ctx: Ctx,
    customer: String,
    key: Option<String>,
    body: Value,
    entry: Entry,
) -> Result<warp::reply::Response, Rejection> {
    let customer = customer_id(&customer)?;
    let key = idempotent::required(key)?;
    let EntryBody { credits, reason } = typed::<EntryBody>(&body)?;
    let reason = checked_entry(entry, credits, reason).map_err(refused)?;
    let route = format!("customers/{customer}/{}", entry.route());
    let entry_key = key.clone();
    idempotent(
        ctx.pool.clone(),
        Some(key),
        &route,
        &body,
        move |_| async move {
            let posted = run(&ctx, move |conn| {
                if !crate::customers::exists(conn, customer)? {
                    return Err(NoStripeCustomer::Missing(customer).into());
                }
                Ok(match entry {
                    Entry::Spend => ledger::spend(conn, customer, credits, &reason, &entry_key)?,
                    Entry::Adjustment => {
                        ledger::adjust(conn, customer, credits, &reason, &entry_key)?
                    }
                })
            })
            .await?;
            match posted {
                Posted::Done { entry_id, balance } => {
                    let id_field = match entry {
                        Entry::Spend => "spend_id",
                        Entry::Adjustment => "adjustment_id",
                    };
                    Ok(Answer::done(
                        StatusCode::CREATED,
                        json!({id_field: entry_id, "balance": balance}),
                    ))
                }
                Posted::KeyReused => Err(ApiError::key_reused()),
                Posted::Insufficient { balance } => Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "insufficient_credits",
                    format!("the balance is {balance} credits; this spend needs {credits}"),
                )
                .with_detail("balance", balance)),
            }
        },
    )
    .await
}

/// `limit` (1–100, default 20) and `cursor` from the query.
fn page(query: &BTreeMap<String, String>) -> Result<(i64, Option<Cursor>), Rejection> {
    if let Some(unknown) = query
        .keys()
        .find(|k| !matches!(k.as_str(), "limit" | "cursor"))
    {
        return Err(refused(Invalid::new(
            unknown,
            "unknown parameter; the history takes limit and cursor",
        )));
    }
    let limit = input::limit(
        query.get("limit").map(String::as_str),
        DEFAULT_LIMIT,
        MAX_LIMIT,
    )
    .map_err(refused)?;
    let before = query
        .get("cursor")
        .map(|raw| Cursor::decode(raw))
        .transpose()
        .map_err(|e| refused(Invalid::new(&e.field, e.message)))?;
    Ok((limit, before))
}

fn credits_error(e: CreditsError) -> ApiError {
    match e {
        CreditsError::InvalidPackage(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_package", e.to_string())
                .with_field("package_id")
        }
        CreditsError::NoPaymentMethod => {
            ApiError::new(StatusCode::BAD_REQUEST, "no_payment_method", e.to_string())
        }
        CreditsError::KeyReused => ApiError::key_reused(),
        CreditsError::InProgress { purchase_id } => {
            ApiError::new(StatusCode::CONFLICT, "purchase_in_progress", e.to_string())
                .with_detail("purchase_id", purchase_id.to_string())
        }
        CreditsError::Customer(e) => e.into(),
        CreditsError::Stripe(e) => stripe_answer(e),
        CreditsError::Database(e) => ApiError::unavailable("database_unavailable", &e),
        CreditsError::Unavailable(cause) => cause.into(),
        e @ CreditsError::IntentMismatch { .. } => ApiError::unavailable("internal", &e),
    }
}

/// A purchase's outcome as the API answers it: 201 credited, 202 pending,
/// 402 declined or waiting on the customer's authentication. Credited and
/// declined are final (a retry with the key replays them); pending and
/// waiting on the customer are how things stand, so a retry looks again.
fn answer(outcome: Outcome) -> Result<Answer, ApiError> {
    match outcome {
        Outcome::Succeeded {
            purchase_id,
            credits_added,
            balance,
        } => Ok(Answer::done(
            StatusCode::CREATED,
            json!({"purchase_id": purchase_id, "status": "succeeded",
                   "credits_added": credits_added, "balance": balance}),
        )),
        Outcome::Pending { purchase_id } => Ok(Answer::for_now(
            StatusCode::ACCEPTED,
            json!({"purchase_id": purchase_id, "status": "pending"}),
        )),
        Outcome::Declined {
            purchase_id,
            code,
            decline_code,
            message,
        } => {
            let code = match stripe_code(&code) {
                "stripe_error" => "card_declined",
                known => known,
            };
            let mut err = ApiError::new(StatusCode::PAYMENT_REQUIRED, code, message)
                .with_detail("purchase_id", purchase_id.to_string());
            if let Some(decline_code) = decline_code {
                err = err.with_detail("decline_code", decline_code);
            }
            Err(err.final_answer())
        }
        Outcome::Refused {
            purchase_id,
            message,
        } => Err(
            ApiError::new(StatusCode::BAD_REQUEST, "purchase_refused", message)
                .with_detail("purchase_id", purchase_id.to_string())
                .final_answer(),
        ),
        Outcome::NeedsAuthentication {
            purchase_id,
            payment_intent,
            client_secret,
        } => Err(ApiError::new(
            StatusCode::PAYMENT_REQUIRED,
            "authentication_required",
            "the bank asks the customer to authenticate this payment; confirm the payment intent with its client_secret",
        )
        .with_detail("purchase_id", purchase_id.to_string())
        .with_detail("payment_intent", payment_intent)
        .with_detail("client_secret", client_secret)),
    }
}
