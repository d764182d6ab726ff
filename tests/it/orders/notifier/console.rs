//! The console's Apps page: a refused order email is listed failed with
//! the server's answer, and its Retry button sends it, once, to the real
//! SMTP server (aiosmtpd), in headless Chromium.

use serde_json::Value;

use super::{post_paid, tee_at_stripe, Notifier, WAIT};
use crate::orders::stack_with;
use crate::support::browser::Browser;
use crate::support::catalog_stripe::CatalogStripe;
use crate::support::smtp::SmtpSink;
use crate::support::stack::ADMIN_TOKEN;
use crate::support::wait_for;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_email_is_retried_from_the_console_and_arrives_once() {
    let fake = CatalogStripe::start();
    let stack = stack_with(&fake).await;
    let sink = SmtpSink::start().await;
    sink.refuse(&[super::TO]);
    tee_at_stripe(&fake, "cs_console");
    let notifier = Notifier::new(&stack, &sink, &[]).start();
    post_paid(&stack, "evt_console", "cs_console").await;
    wait_for(WAIT, "the email to fail", || async {
        let body: Value = stack
            .admin(
                reqwest::Method::GET,
                "/api/admin/notifications?status=failed",
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (body["notifications"].as_array().map_or(0, Vec::len) == 1).then_some(())
    })
    .await;

    let browser = Browser::open(stack.addr).await;
    browser.log_in(ADMIN_TOKEN).await;
    browser.goto("/apps").await;
    let page = browser.text().await;
    assert!(
        page.contains("cs_console") && page.contains("550"),
        "{page}"
    );
    browser.assert_accessible("apps").await;
    browser.screenshot("apps").await;

    sink.refuse(&[]);
    browser.click("button[aria-label^='retry email']").await;
    assert!(browser.path().await.starts_with("/apps?retried="));
    assert!(browser.text().await.contains("Queued email"));
    let mails = sink.wait_messages(1, WAIT).await;
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].recipients(), vec![super::TO]);
    // Sent now: the row says so and has no Retry button.
    wait_for(WAIT, "the email shown sent", || async {
        browser.goto("/apps").await;
        let row = browser
            .client
            .find(fantoccini::Locator::Css(
                "section[aria-labelledby='emails-h'] tbody tr",
            ))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        (row.contains("cs_console")
            && row.split_whitespace().any(|w| w == "sent")
            && !row.contains("Retry"))
        .then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(sink.messages().len(), 1, "sent once");
    browser.close().await;
    notifier.stop().await;
    stack.stop().await;
}
