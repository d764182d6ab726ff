//! Which type an object id names, by Stripe's id prefixes (`prod_…` is a
//! product), for `resync`. A prefix two types share, and the types whose
//! ids are chosen by the account (coupons, legacy plans) or have none of
//! their own, are named with `--type`.

use super::{by_name, Resource};

/// Stripe's id prefix of each mirrored type, longest first where one is the
/// start of another (`sub_sched_` before `sub_`). Checked against Stripe's
/// examples by the registry's tests.
const PREFIXES: &[(&str, &str)] = &[
    ("prod_", "product"),
    ("price_", "price"),
    ("promo_", "promotion_code"),
    ("txr_", "tax_rate"),
    ("shr_", "shipping_rate"),
    ("plink_", "payment_link"),
    ("feat_", "entitlements.feature"),
    ("cus_", "customer"),
    ("txi_", "tax_id"),
    ("pm_", "payment_method"),
    ("ent_", "entitlements.active_entitlement"),
    ("acct_", "account"),
    ("person_", "person"),
    // A connected account's external accounts, and a customer's older
    // cards and bank accounts, which are also payment methods.
    ("ba_", "bank_account"),
    ("ba_", "payment_method"),
    ("card_", "card"),
    ("card_", "payment_method"),
    ("seti_", "setup_intent"),
    ("cs_", "checkout.session"),
    ("pi_", "payment_intent"),
    ("ch_", "charge"),
    ("py_", "charge"),
    ("re_", "refund"),
    ("pyr_", "refund"),
    ("dp_", "dispute"),
    ("du_", "dispute"),
    ("issfr_", "radar.early_fraud_warning"),
    ("prv_", "review"),
    ("sub_sched_", "subscription_schedule"),
    ("sub_", "subscription"),
    ("in_", "invoice"),
    ("ii_", "invoiceitem"),
    ("cn_", "credit_note"),
    ("inpay_", "invoice_payment"),
    ("qt_", "quote"),
    ("po_", "payout"),
    ("tr_", "transfer"),
    ("tu_", "topup"),
    ("fee_", "application_fee"),
    ("file_", "file"),
    ("clock_", "test_helpers.test_clock"),
    ("bpc_", "billing_portal.configuration"),
    ("vs_", "identity.verification_session"),
    ("ich_", "issuing.cardholder"),
    ("ic_", "issuing.card"),
    ("iauth_", "issuing.authorization"),
    ("ipi_", "issuing.transaction"),
    ("idp_", "issuing.dispute"),
    ("frr_", "reporting.report_run"),
    ("fa_", "treasury.financial_account"),
    ("climorder_", "climate.order"),
    ("mtr_", "billing.meter"),
    ("alrt_", "billing.alert"),
    ("credgr_", "billing.credit_grant"),
    // Billing's credit balance transactions and a customer's balance
    // transactions share the prefix.
    ("cbtxn_", "billing.credit_balance_transaction"),
    ("cbtxn_", "customer_balance_transaction"),
    ("txn_", "balance_transaction"),
    ("climsku_", "climate.product"),
    ("fca_", "financial_connections.account"),
    ("ipcd_", "issuing.personalization_design"),
    ("sqr_", "scheduled_query_run"),
    ("tmr_", "terminal.reader"),
    ("link_", "file_link"),
    ("txcd_", "tax_code"),
    ("taxreg_", "tax.registration"),
    ("we_", "webhook_endpoint"),
    ("pmc_", "payment_method_configuration"),
    ("pmd_", "payment_method_domain"),
    ("rsl_", "radar.value_list"),
    ("tml_", "terminal.location"),
    ("tmc_", "terminal.configuration"),
];

/// Why an id names no one type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdTypeError {
    #[error("{id:?} has no prefix of a mirrored type; name its type with --type (`stripe-sync catalog types` lists them)")]
    Unknown { id: String },
    #[error("{id:?} may be any of {}; name its type with --type", types.join(", "))]
    Shared {
        id: String,
        types: Vec<&'static str>,
    },
    #[error("{name:?} is not a mirrored type; `stripe-sync catalog types` lists them")]
    NoSuchType { name: String },
}

/// The type of `id`: `named` (an object type or relation) when given,
/// else the one type its prefix names.
pub fn type_of_id(id: &str, named: Option<&str>) -> Result<&'static Resource, IdTypeError> {
    if let Some(name) = named {
        return by_name(name).ok_or_else(|| IdTypeError::NoSuchType {
            name: name.to_owned(),
        });
    }
    let longest = PREFIXES
        .iter()
        .filter(|(prefix, _)| id.starts_with(prefix) && id.len() > prefix.len())
        .map(|(prefix, _)| prefix.len())
        .max();
    let types: Vec<&'static str> = PREFIXES
        .iter()
        .filter(|(prefix, _)| Some(prefix.len()) == longest && id.starts_with(prefix))
        .map(|(_, object)| *object)
        .collect();
    match types[..] {
        [] => Err(IdTypeError::Unknown { id: id.to_owned() }),
        [object] => Ok(by_name(object).expect("every prefix names a registered type")),
        _ => Err(IdTypeError::Shared {
            id: id.to_owned(),
            types,
        }),
    }
}

/// Types whose ids carry no prefix of their own: chosen by the account
/// (coupons, legacy plans, whose newer ids are their price's), Stripe's
/// names (report types), or none (a customer's entitlement summary).
#[cfg(test)]
const WITHOUT_PREFIX: &[&str] = &[
    "plan",
    "coupon",
    "reporting.report_type",
    "entitlements.active_entitlement_summary",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::RESOURCES;

    /// Every type has its prefix, and Stripe's example of it is found by
    /// its id (where the example's id is real, not `obj_123`).
    #[test]
    fn stripe_s_examples_are_found_by_their_ids() {
        let raw = include_str!("../../tests/fixtures/stripe/fixtures3.json");
        let examples: serde_json::Value = serde_json::from_str(raw).unwrap();
        let mut checked = 0;
        for r in RESOURCES
            .iter()
            .filter(|r| !WITHOUT_PREFIX.contains(&r.object))
        {
            assert!(
                PREFIXES.iter().any(|(_, o)| *o == r.object),
                "{} has no prefix",
                r.object
            );
            let id = examples["resources"][r.object]["id"].as_str().unwrap_or("");
            if id.is_empty() || id.ends_with("_123") {
                continue;
            }
            match type_of_id(id, None) {
                Ok(found) => assert_eq!(found.object, r.object, "{id}"),
                Err(IdTypeError::Shared { types, .. }) => assert!(types.contains(&r.object)),
                Err(e) => panic!("{}: {e}", r.object),
            }
            checked += 1;
        }
        assert!(checked > 55, "only {checked} examples checked");
    }

    #[test]
    fn every_prefix_names_a_registered_type() {
        for (prefix, object) in PREFIXES {
            assert!(by_name(object).is_some(), "{prefix} names {object}");
        }
    }

    #[test]
    fn the_longest_prefix_wins_and_a_shared_one_asks_for_the_type() {
        assert_eq!(
            type_of_id("sub_sched_1", None).unwrap().object,
            "subscription_schedule"
        );
        assert_eq!(type_of_id("sub_1", None).unwrap().object, "subscription");
        assert_eq!(type_of_id("py_1", None).unwrap().object, "charge");
        assert!(matches!(
            type_of_id("cbtxn_1", None),
            Err(IdTypeError::Shared { .. })
        ));
        assert_eq!(
            type_of_id("cbtxn_1", Some("customer_balance_transactions"))
                .unwrap()
                .object,
            "customer_balance_transaction"
        );
        // A coupon's id is whatever the account chose.
        assert!(matches!(
            type_of_id("SUMMER25", None),
            Err(IdTypeError::Unknown { .. })
        ));
        assert_eq!(
            type_of_id("SUMMER25", Some("coupon")).unwrap().object,
            "coupon"
        );
        assert!(matches!(
            type_of_id("prod_", None),
            Err(IdTypeError::Unknown { .. })
        ));
        assert!(matches!(
            type_of_id("x", Some("nope")),
            Err(IdTypeError::NoSuchType { .. })
        ));
    }
}
