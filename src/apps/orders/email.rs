//! The order email: what it says, in plain text and HTML, and its
//! `Message-ID`, which is derived from the order so that a resend after a
//! crash carries the same id.

use serde_json::Value;

use crate::stripe::{currency, AccountId};

/// An order as the email shows it, read from the session and its items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderEmail {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// `1234` `usd` → `12.34 USD`; `1500` `jpy` → `1,500 JPY`.
pub fn format_amount(amount: i64, currency: &str) -> String {
    let decimals = currency::decimals(currency);
    let scale = 10u64.pow(decimals);
    let (sign, abs) = if amount < 0 {
        ("-", amount.unsigned_abs())
    } else {
        ("", amount as u64)
    };
    let whole = group_thousands(abs / scale);
    let amount = if decimals == 0 {
        whole
    } else {
        format!("{whole}.{:0width$}", abs % scale, width = decimals as usize)
    };
    format!("{sign}{amount} {}", currency.to_ascii_uppercase())
}

fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `<order.{key}.{account}@{domain}>`: one id per order, whoever sends it
/// and however often.
pub fn message_id(account: &AccountId, order_key: &str, domain: &str) -> String {
    let safe = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '.'
                }
            })
            .collect()
    };
    format!(
        "<order.{}.{}@{domain}>",
        safe(order_key),
        safe(account.as_str())
    )
}

fn text_of<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(v, |v, k| v.get(k))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// The shipping details: `collected_information.shipping_details` on
/// current API versions, `shipping_details` on older ones.
fn shipping(session: &Value) -> Option<&Value> {
    [
        &session["collected_information"]["shipping_details"],
        &session["shipping_details"],
    ]
    .into_iter()
    .find(|s| s.is_object())
}

fn address_lines(address: &Value) -> Vec<String> {
    let part = |k: &str| text_of(address, &[k]);
    let city_line = [part("postal_code"), part("city"), part("state")]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    [
        part("line1").map(str::to_owned),
        part("line2").map(str::to_owned),
    ]
    .into_iter()
    .flatten()
    .chain((!city_line.is_empty()).then_some(city_line))
    .chain(part("country").map(str::to_owned))
    .collect()
}

/// A custom field's answer, whichever kind it is.
fn custom_field(field: &Value) -> Option<(String, String)> {
    let label = text_of(field, &["label", "custom"]).or_else(|| text_of(field, &["key"]))?;
    let value = match field["type"].as_str() {
        Some("dropdown") => text_of(field, &["dropdown", "value"]),
        Some("numeric") => text_of(field, &["numeric", "value"]),
        _ => text_of(field, &["text", "value"]),
    }?;
    Some((label.to_owned(), value.to_owned()))
}

/// Renders the email for a paid session and its complete line items.
pub fn render(session: &Value, items: &[Value]) -> OrderEmail {
    let id = session["id"].as_str().unwrap_or("?");
    let currency = session["currency"].as_str().unwrap_or("usd");
    let mut lines: Vec<(String, String)> = Vec::new();
    let details = &session["customer_details"];
    let name = text_of(details, &["name"]);
    let email = text_of(session, &["customer_email"]).or_else(|| text_of(details, &["email"]));
    for (label, value) in [
        ("Name", name),
        ("Email", email),
        ("Phone", text_of(details, &["phone"])),
    ] {
        if let Some(value) = value {
            lines.push((label.into(), value.into()));
        }
    }
    if let Some(ship) = shipping(session) {
        let mut address = text_of(ship, &["name"])
            .map(str::to_owned)
            .into_iter()
            .collect::<Vec<_>>();
        address.extend(address_lines(&ship["address"]));
        if !address.is_empty() {
            lines.push(("Ship to".into(), address.join(", ")));
        }
    }
    for (label, value) in session["custom_fields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(custom_field)
    {
        lines.push((label, value));
    }
    let items: Vec<(String, i64, String)> = items
        .iter()
        .map(|item| {
            let description = text_of(item, &["description"])
                .or_else(|| text_of(item, &["price", "nickname"]))
                .unwrap_or("item")
                .to_owned();
            let amount = item["amount_total"].as_i64().unwrap_or(0);
            let currency = item["currency"].as_str().unwrap_or(currency);
            (
                description,
                item["quantity"].as_i64().unwrap_or(1),
                format_amount(amount, currency),
            )
        })
        .collect();
    let total = format_amount(session["amount_total"].as_i64().unwrap_or(0), currency);

    let mut text = format!("New paid order {id}\n\n");
    for (label, value) in &lines {
        text.push_str(&format!("{label}: {value}\n"));
    }
    text.push_str("\nItems:\n");
    for (description, quantity, amount) in &items {
        text.push_str(&format!("  {quantity} × {description}: {amount}\n"));
    }
    text.push_str(&format!("\nTotal: {total}\n"));

    let mut html = format!("<h1>New paid order {}</h1>\n<table>\n", escape(id));
    for (label, value) in &lines {
        html.push_str(&format!(
            "<tr><th align=\"left\">{}</th><td>{}</td></tr>\n",
            escape(label),
            escape(value)
        ));
    }
    html.push_str("</table>\n<table>\n<tr><th>Qty</th><th align=\"left\">Item</th><th align=\"right\">Amount</th></tr>\n");
    for (description, quantity, amount) in &items {
        html.push_str(&format!(
            "<tr><td>{quantity}</td><td>{}</td><td align=\"right\">{}</td></tr>\n",
            escape(description),
            escape(amount)
        ));
    }
    html.push_str(&format!(
        "</table>\n<p><strong>Total: {}</strong></p>\n",
        escape(&total)
    ));
    OrderEmail {
        subject: format!("New paid order {id}: {total}"),
        text,
        html,
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn amounts_follow_each_currencys_minor_unit() {
        let cases = [
            (1234, "usd", "12.34 USD"),
            (5, "eur", "0.05 EUR"),
            (123_456_789, "usd", "1,234,567.89 USD"),
            (1500, "jpy", "1,500 JPY"),
            (1500, "JPY", "1,500 JPY"),
            (99, "krw", "99 KRW"),
            (1234, "kwd", "1.234 KWD"),
            (-250, "usd", "-2.50 USD"),
            (0, "gbp", "0.00 GBP"),
        ];
        for (amount, currency, expected) in cases {
            assert_eq!(
                format_amount(amount, currency),
                expected,
                "{amount} {currency}"
            );
        }
    }

    #[test]
    fn the_message_id_is_the_orders() {
        let a = message_id(
            &AccountId::PLATFORM,
            "checkout_session:cs_1",
            "shop.example",
        );
        assert_eq!(a, "<order.checkout_session.cs_1.platform@shop.example>");
        assert_eq!(
            a,
            message_id(
                &AccountId::PLATFORM,
                "checkout_session:cs_1",
                "shop.example"
            )
        );
        assert_ne!(
            a,
            message_id(
                &AccountId::parse("acct_2").unwrap(),
                "checkout_session:cs_1",
                "shop.example"
            )
        );
    }

    #[test]
    fn the_email_holds_the_customer_shipping_fields_items_and_total() {
        let session = json!({
            "id": "cs_test_1", "currency": "jpy", "amount_total": 4500, "customer_email": null,
            "customer_details": {"name": "Ada <Lovelace>", "email": "ada@example.com", "phone": "+44 1"},
            "collected_information": {"shipping_details": {"name": "Ada", "address": {
                "line1": "1 Analytical Way", "line2": null, "city": "London", "postal_code": "N1",
                "state": null, "country": "GB"}}},
            "custom_fields": [{"key": "gift", "label": {"custom": "Gift note", "type": "custom"},
                               "type": "text", "text": {"value": "Happy birthday"}}]
        });
        let items = [
            json!({"description": "T-shirt", "quantity": 2, "amount_total": 3000, "currency": "jpy"}),
            json!({"description": "Mug", "quantity": 1, "amount_total": 1500, "currency": "jpy"}),
        ];
        let email = render(&session, &items);
        assert!(email.subject.contains("cs_test_1"));
        for needle in [
            "Name: Ada <Lovelace>",
            "Email: ada@example.com",
            "Phone: +44 1",
            "Ship to: Ada, 1 Analytical Way, N1 London, GB",
            "Gift note: Happy birthday",
            "2 × T-shirt: 3,000 JPY",
            "1 × Mug: 1,500 JPY",
            "Total: 4,500 JPY",
        ] {
            assert!(
                email.text.contains(needle),
                "{needle:?} in:\n{}",
                email.text
            );
        }
        assert!(
            email.html.contains("Ada &lt;Lovelace&gt;"),
            "HTML is escaped"
        );
        assert!(!email.html.contains("<Lovelace>"));
        assert!(email.html.contains("4,500 JPY"));
    }
}
