//! Stripe's form encoding of nested parameters: `line_items[0][price_data][currency]=usd`.

use serde_json::Value;

/// Appends `value` under `prefix` as Stripe's bracketed form fields:
/// objects as `[key]`, arrays as `[index]`; `null` is left out.
pub fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                flatten(&format!("{prefix}[{k}]"), v, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), v, out);
            }
        }
        Value::String(s) => out.push((prefix.to_owned(), s.clone())),
        Value::Number(n) => out.push((prefix.to_owned(), n.to_string())),
        Value::Bool(b) => out.push((prefix.to_owned(), b.to_string())),
        Value::Null => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_values_become_bracketed_fields() {
        let mut out = Vec::new();
        flatten(
            "line_items[0][price_data]",
            &json!({"currency": "usd", "unit_amount": 1500, "product_data": {"name": "Mug"},
                    "recurring": null, "tax_behavior": "inclusive", "tags": ["a", "b"], "x": true}),
            &mut out,
        );
        let expected = [
            ("line_items[0][price_data][currency]", "usd"),
            ("line_items[0][price_data][product_data][name]", "Mug"),
            ("line_items[0][price_data][tags][0]", "a"),
            ("line_items[0][price_data][tags][1]", "b"),
            ("line_items[0][price_data][tax_behavior]", "inclusive"),
            ("line_items[0][price_data][unit_amount]", "1500"),
            ("line_items[0][price_data][x]", "true"),
        ];
        let got: Vec<(&str, &str)> = out.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, expected);
    }
}
