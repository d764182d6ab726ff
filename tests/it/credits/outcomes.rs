//! What a purchase answers when the money does not simply move: a declined
//! card (402, nothing credited, recorded as failed), a bank asking for
//! authentication (402 with the intent to confirm on-session), and a
//! payment still processing (202, then settled by its webhook: localstripe
//! fails such a SEPA debit half a second later; a processing payment that
//! succeeds is credited by the webhook as in `races`).

use reqwest::Method;

use super::{buy, credits, credits_stack, entries, save_card, synced_customer, WAIT};
use crate::support::localstripe::LocalStripe;
use crate::support::stripe_proxy::CountingProxy;
use crate::support::wait_for;

/// A payment method localstripe makes from raw details.
async fn payment_method(ls: &LocalStripe, form: &[(&str, &str)]) -> String {
    let pm = ls.call(Method::POST, "/v1/payment_methods", form).await;
    pm["id"].as_str().unwrap().to_owned()
}

fn card(number: &str) -> [(&str, &str); 5] {
    [
        ("type", "card"),
        ("card[number]", number),
        ("card[exp_month]", "12"),
        ("card[exp_year]", "2030"),
        ("card[cvc]", "123"),
    ]
}

async fn purchase_status(stack: &crate::support::stack::Stack, purchase: &str) -> String {
    let history = credits(stack, &customer_of(stack, purchase)).await;
    history["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == purchase)
        .map(|t| t["status"].as_str().unwrap().to_owned())
        .unwrap_or_default()
}

fn customer_of(stack: &crate::support::stack::Stack, purchase: &str) -> String {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        customer: String,
    }
    let row: Row = diesel::sql_query(format!(
        "SELECT customer_id::text AS customer FROM credits.purchases WHERE id = '{purchase}'"
    ))
    .get_result(&mut stack.db.conn())
    .unwrap();
    row.customer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declined_authenticating_and_processing_payments_answer_as_such() {
    let mut ls = LocalStripe::start().await;
    let proxy = CountingProxy::start(ls.base());
    let stack = credits_stack(&mut ls, &proxy).await;
    let customer = synced_customer(&stack, "unlucky@example.com").await;

    // Attaches, then declines when charged.
    assert_eq!(
        save_card(&stack, &customer, "pm_card_chargeCustomerFail")
            .await
            .0,
        200
    );
    let (status, declined, _) = buy(&stack, &customer, "package_1", "declined").await;
    assert_eq!(status, 402, "{declined}");
    assert_eq!(declined["error"]["code"], "card_declined");
    let purchase = declined["error"]["purchase_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, again, replayed) = buy(&stack, &customer, "package_1", "declined").await;
    assert_eq!((status, replayed), (402, true));
    assert_eq!(again, declined);
    // Its payment_intent.payment_failed reaches the mirror and changes nothing.
    wait_for(WAIT, "the failed intent mirrored", || async {
        (stack
            .db
            .count("stripe.payment_intents WHERE status = 'requires_payment_method'")
            == 1)
            .then_some(())
    })
    .await;
    assert_eq!(purchase_status(&stack, &purchase).await, "failed");
    let history = credits(&stack, &customer).await;
    assert_eq!(history["balance"], 0);
    assert_eq!(
        history["transactions"][0]["credits"], 100,
        "what it would have added"
    );
    assert!(
        history["transactions"][0]["reason"].as_str().is_some(),
        "{history}"
    );

    // The bank wants the customer: the intent to confirm on-session.
    let pm = payment_method(&ls, &card("4000002760003184")).await;
    assert_eq!(save_card(&stack, &customer, &pm).await.0, 200);
    let (status, auth, _) = buy(&stack, &customer, "package_2", "needs-3ds").await;
    assert_eq!(status, 402, "{auth}");
    let error = &auth["error"];
    assert_eq!(error["code"], "authentication_required");
    let pi = error["payment_intent"].as_str().unwrap();
    assert!(pi.starts_with("pi_"));
    assert!(error["client_secret"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{pi}_secret_")));
    let auth_purchase = error["purchase_id"].as_str().unwrap().to_owned();
    assert_eq!(
        purchase_status(&stack, &auth_purchase).await,
        "requires_action"
    );
    assert_eq!(credits(&stack, &customer).await["balance"], 0);

    // A SEPA debit settles later: 202 now; its failure, told by the
    // webhook, fails the purchase.
    let sepa = payment_method(
        &ls,
        &[
            ("type", "sepa_debit"),
            ("sepa_debit[iban]", "DE62370400440532013001"),
        ],
    )
    .await;
    assert_eq!(save_card(&stack, &customer, &sepa).await.0, 200);
    let (status, pending, _) = buy(&stack, &customer, "package_3", "sepa").await;
    assert_eq!(status, 202, "{pending}");
    assert_eq!(pending["status"], "pending");
    let pending_purchase = pending["purchase_id"].as_str().unwrap().to_owned();
    assert_eq!(purchase_status(&stack, &pending_purchase).await, "pending");
    wait_for(
        WAIT,
        "the SEPA failure applied from its webhook",
        || async { (purchase_status(&stack, &pending_purchase).await == "failed").then_some(()) },
    )
    .await;
    assert_eq!(credits(&stack, &customer).await["balance"], 0);
    assert_eq!(entries(&stack, &customer, "purchase"), 0);
    stack.stop().await;
}
