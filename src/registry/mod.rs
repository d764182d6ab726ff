//! The resource registry: one entry per Stripe object type the engine
//! mirrors, as data. Everything type-specific the apply path, the pull
//! paths, the HTTP read API and the schema need is here: the relation, the
//! REST paths, how deletes work, the child lists and the typed columns.
//! Adding a type is an entry in [`RESOURCES`] and a migration whose DDL
//! [`ddl::create_relation`] prints (`stripe-sync catalog ddl TYPE`).
//!
//! Typed columns are Postgres generated columns computed from `data`, so the
//! apply path writes only `data` and the ordering state, whatever the type.

pub mod ddl;
mod describe;
mod events;
mod ids;
mod resources;

pub use describe::{describe, markdown, markdown_summary, Source};
pub use events::{handled_event_types, objects_of_event};
pub use ids::{type_of_id, IdTypeError};

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::LazyLock;

pub use resources::RESOURCES;

/// The Postgres schema holding the mirror.
pub const SCHEMA: &str = "stripe";

/// How a typed column is computed from the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// A string field, as is.
    Text,
    /// The id of a related object: the string, or `id` of an expanded object.
    Ref,
    /// An integer (amounts in the currency's smallest unit, counts): bigint.
    Int,
    /// Unix seconds: timestamptz.
    Time,
    Bool,
}

impl ColumnKind {
    pub fn sql_type(self) -> &'static str {
        match self {
            Self::Text | Self::Ref => "text",
            Self::Int => "bigint",
            Self::Time => "timestamptz",
            Self::Bool => "boolean",
        }
    }
}

/// A typed column: `name` computed from the field at `path` (dot-separated
/// for nested fields, e.g. `customer_details.email`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    /// Where the field is in the API version the engine pins
    /// (`stripe::client::DEFAULT_API_VERSION`).
    pub path: &'static str,
    pub kind: ColumnKind,
    /// Where later API versions keep the field, newest first. A webhook is
    /// rendered in its endpoint's version, and a mirror holds objects of
    /// several versions across an upgrade, so the column reads the first
    /// of these paths that holds a value, then `path`.
    pub moved: &'static [Moved],
}

/// A field's place from an API version on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    /// The first version with the field here, e.g. `2025-03-31.basil`.
    pub version: &'static str,
    pub path: &'static str,
}

impl Column {
    /// Every path the field may be at, in the order the column reads them.
    pub fn paths(&self) -> impl Iterator<Item = &'static str> {
        self.moved
            .iter()
            .map(|m| m.path)
            .chain(std::iter::once(self.path))
    }

    /// The field's value in `object`, from the first path that holds one
    /// (as the generated column reads it; the diff hashes this).
    pub fn value<'a>(&self, object: &'a serde_json::Value) -> Option<&'a serde_json::Value> {
        self.paths().find_map(|path| field(object, path))
    }
}

/// What a `*.deleted` event does to an object of the type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletes {
    /// Stripe deletes these for good: the row is tombstoned and stays so.
    Tombstone,
    /// Never deleted (canceled, voided, closed are states): a `*.deleted`
    /// event, if any, is written as the newest state.
    Never,
}

/// How to list every object of the type (backfill, diff).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// `GET /v1/{path}` with these extra parameters (e.g. `status=all`,
    /// since some lists leave canceled objects out by default).
    All(&'static [(&'static str, &'static str)]),
    /// Stripe lists these per customer only: `GET /v1/{path}?customer=cus_…`
    /// for every customer Stripe lists for the account.
    PerCustomer,
    /// No list endpoint: only webhooks (and reconcile) bring these.
    None,
    /// `GET /v1/{path}` like [`Self::All`], for a type too large to list
    /// whole on a schedule and whose objects are rarely changed once
    /// settled: `refresh` lists those created since its cursor, and from
    /// the oldest row still `unsettled` (column, value) in the mirror.
    ByCreated {
        unsettled: Option<(&'static str, &'static str)>,
    },
    /// Stripe keeps these under a parent object and serves them only
    /// there: listed at `GET /v1/{parent}/{parent id}/{path}` (with these
    /// extra parameters) and read at `…/{path}/{id}`, the parent's id being
    /// the object's own `parent.field` (a person's `account`, a customer
    /// balance transaction's `customer`). An event whose object lacks that
    /// field is not about this type (a customer's card, not a connected
    /// account's) and is ignored.
    Nested(Parent, &'static [(&'static str, &'static str)]),
}

/// The object another type is kept under ([`Listing::Nested`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    /// The parent's collection: `customers`, `accounts`.
    pub collection: &'static str,
    /// The field of the nested object naming its parent.
    pub field: &'static str,
}

impl Parent {
    /// Every customer Stripe lists for the account is a parent.
    pub const CUSTOMER: Parent = Parent {
        collection: "customers",
        field: "customer",
    };
    /// A connected account is the parent of its own persons and external
    /// accounts; the platform's own are not listed (the engine does not
    /// know the platform's `acct_…` id), though their events are applied.
    pub const ACCOUNT: Parent = Parent {
        collection: "accounts",
        field: "account",
    };
}

impl Listing {
    /// The extra list parameters, for a type listed whole (backfill, diff).
    pub fn whole(self) -> Option<&'static [(&'static str, &'static str)]> {
        match self {
            Self::All(extra) => Some(extra),
            Self::ByCreated { .. } => Some(&[]),
            Self::PerCustomer | Self::Nested(..) | Self::None => None,
        }
    }
}

/// How a child list is read in full from Stripe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildSource {
    /// `GET /v1/{parent path}/{parent id}/{sub}`.
    Nested(&'static str),
    /// `GET /v1/{path}?{param}={parent id}`.
    Filtered {
        path: &'static str,
        param: &'static str,
    },
}

/// When a child list the payload leaves out is read from Stripe again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reread {
    /// Whenever a newer parent is written.
    Always,
    /// Only when the parent is new to the mirror or its `status` changed:
    /// the list cannot change otherwise (a checkout session's line items
    /// are final once it completes or expires), and each read costs one of
    /// the account's API calls.
    WhenStatusChanges,
}

/// A list nested in the parent object (invoice lines, subscription items):
/// mirrored in its own relation, replaced whenever a newer parent is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Child {
    /// The parent's field holding the list object (`lines`, `items`).
    pub field: &'static str,
    /// `object` of the list's items (`line_item`, `subscription_item`):
    /// which of Stripe's examples its typed columns are held to.
    pub item_object: &'static str,
    /// Whether the payload carries the list at all; checkout sessions leave
    /// their line items out, so they are always read.
    pub embedded: bool,
    pub relation: &'static str,
    /// The column holding the parent's id (`invoice`, `checkout_session`).
    pub parent_column: &'static str,
    pub source: ChildSource,
    /// For a list the payload leaves out (`embedded: false`).
    pub reread: Reread,
    /// A boolean field of the parent without which the list does not
    /// exist (a payout's balance transactions: `automatic`); the list is
    /// then empty, and never read.
    pub only_if: Option<&'static str>,
    pub columns: &'static [Column],
}

/// One Stripe object type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    /// `data.object.object`, e.g. `checkout.session`.
    pub object: &'static str,
    /// `object.replace(".", "_") + "s"`, in schema [`SCHEMA`].
    pub relation: &'static str,
    /// REST collection under `/v1/`: retrieve is `{path}/{id}`.
    pub path: &'static str,
    pub listing: Listing,
    pub deletes: Deletes,
    /// Whether Stripe sends events carrying this object. A type without
    /// them (webhook endpoints, tax codes, balance transactions) is kept
    /// current by pulling it (`stripe-sync refresh`).
    pub events: bool,
    pub identity: Identity,
    pub children: &'static [Child],
    pub columns: &'static [Column],
}

/// What a row of the type is keyed by, and how its current state is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// Its `id`, read back at `GET /v1/{path}/{id}`.
    Id,
    /// Its `customer`: one per customer, with no `id` and no endpoint of
    /// its own (a customer's active entitlement summary). Its state is its
    /// child lists, so reading it back is reading them
    /// (`stripe::event::KEYED_BY_CUSTOMER` keys its events the same way).
    Customer,
    /// A connected account: its `id`, kept under the platform whichever
    /// account's endpoint reported it (`account.updated` comes with the
    /// connected account's own `account`; the platform lists them all), so
    /// one account is one row; read back as the platform.
    ConnectedAccount,
}

/// A field of one type's objects naming an object of a type Stripe sends
/// no events for: a charge's `balance_transaction`. Applying the naming
/// object reads the named one too, unless the mirror holds it settled
/// ([`Listing::ByCreated`]'s `unsettled`), so it is in the mirror with the
/// event rather than at the next `refresh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Named {
    /// `object` of the naming type, e.g. `charge`.
    pub by: &'static str,
    pub field: &'static str,
    /// `object` of the named type.
    pub named: &'static str,
}

/// Every money movement's balance transaction.
pub const NAMED: &[Named] = &[
    balance_transaction_of("charge"),
    balance_transaction_of("refund"),
    balance_transaction_of("payout"),
    balance_transaction_of("application_fee"),
    balance_transaction_of("topup"),
    balance_transaction_of("transfer"),
    balance_transaction_of("issuing.transaction"),
];

const fn balance_transaction_of(by: &'static str) -> Named {
    Named {
        by,
        field: "balance_transaction",
        named: "balance_transaction",
    }
}

/// The types whose list call takes a `created` filter (`created[gte]`,
/// `created[lt]`), as Stripe's API declares them (a test holds this to the
/// official `stripe` Python package): backfill reads them in `created`
/// slices at once, and `--created-since` is sent to Stripe for them only
/// (for the others it is applied to what the list returns).
pub const LISTED_BY_CREATED: &[&str] = &[
    "product",
    "price",
    "plan",
    "coupon",
    "promotion_code",
    "tax_rate",
    "shipping_rate",
    "customer",
    "account",
    "setup_intent",
    "checkout.session",
    "payment_intent",
    "charge",
    "refund",
    "dispute",
    "radar.early_fraud_warning",
    "review",
    "subscription",
    "subscription_schedule",
    "invoice",
    "invoiceitem",
    "credit_note",
    "invoice_payment",
    "payout",
    "transfer",
    "topup",
    "application_fee",
    "file",
    "identity.verification_session",
    "issuing.cardholder",
    "issuing.card",
    "issuing.authorization",
    "issuing.transaction",
    "issuing.dispute",
    "reporting.report_run",
    "treasury.financial_account",
    "balance_transaction",
    "file_link",
    "radar.value_list",
];

/// The one type that is not mirrored by the generic path: customers live in
/// the local-first `customers` table (two-way sync) and `stripe.customers`
/// is a view over it.
pub const CUSTOMER: &str = "customer";

impl Resource {
    /// The local-first customer table rather than a `stripe.*` relation.
    pub fn is_local_customer(&self) -> bool {
        self.object == CUSTOMER
    }

    /// `stripe.products`, quoted for SQL.
    pub fn table(&self) -> String {
        format!("{SCHEMA}.\"{}\"", self.relation)
    }

    /// The synthetic event type of a state read through the API (backfill,
    /// diff repair): `product.snapshot`.
    pub fn snapshot_type(&self) -> String {
        format!("{}.snapshot", self.object)
    }

    pub fn column(&self, name: &str) -> Option<&'static Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Where an object of this type is read, `GET /v1/{path}/{id}`: the
    /// type's collection, or for one kept under a parent
    /// ([`Listing::Nested`]) the collection under the parent the object
    /// names; None when it names none (or a parent id that is not one:
    /// it goes into the path).
    pub fn object_path(&self, object: &serde_json::Value) -> Option<Cow<'static, str>> {
        match self.listing {
            Listing::Nested(parent, _) => {
                let named = object.get(parent.field)?;
                let id = named
                    .as_str()
                    .or_else(|| named.get("id").and_then(serde_json::Value::as_str))?;
                let id = crate::stripe::ObjectId::parse(id).ok()?;
                Some(Cow::Owned(self.path_under(parent, id.as_str())))
            }
            _ => Some(Cow::Borrowed(self.path)),
        }
    }

    /// `{parent collection}/{parent id}/{path}`: where Stripe lists this
    /// type under one parent.
    pub fn path_under(&self, parent: Parent, parent_id: &str) -> String {
        format!("{}/{parent_id}/{}", parent.collection, self.path)
    }

    /// The parent whose objects are listed one by one: a type listed per
    /// customer (by filter or under each), or under each connected account.
    /// Whether its list call takes a `created` filter ([`LISTED_BY_CREATED`]).
    pub fn listed_by_created(&self) -> bool {
        LISTED_BY_CREATED.contains(&self.object)
    }

    pub fn listed_per(&self) -> Option<Parent> {
        match self.listing {
            Listing::PerCustomer => Some(Parent::CUSTOMER),
            Listing::Nested(parent, _) => Some(parent),
            _ => None,
        }
    }

    /// The fields of this type's objects naming objects of other types
    /// ([`Named`]), with the named type.
    pub fn names(&self) -> impl Iterator<Item = (&'static str, &'static Resource)> + '_ {
        NAMED
            .iter()
            .filter(|n| n.by == self.object)
            .filter_map(|n| Some((n.field, by_object(n.named)?)))
    }

    /// Whether a stored object of this type in `status` is final, so that
    /// an object naming it need not read it again: one past the listing's
    /// `unsettled` status, or any, for a type without one.
    pub fn settled(&self, status: Option<&str>) -> bool {
        match self.listing {
            Listing::ByCreated {
                unsettled: Some((_, pending)),
            } => status != Some(pending),
            _ => true,
        }
    }
}

impl Child {
    /// Whether `parent` has this list at all ([`Child::only_if`]).
    pub fn exists_for(&self, parent: &serde_json::Value) -> bool {
        self.only_if
            .is_none_or(|field| parent.get(field) == Some(&serde_json::Value::Bool(true)))
    }

    pub fn table(&self) -> String {
        format!("{SCHEMA}.\"{}\"", self.relation)
    }
}

/// The relation name the SQL contract gives an object type.
pub fn relation_name(object: &str) -> String {
    format!("{}s", object.replace('.', "_"))
}

static BY_OBJECT: LazyLock<HashMap<&'static str, &'static Resource>> =
    LazyLock::new(|| RESOURCES.iter().map(|r| (r.object, r)).collect());

static BY_RELATION: LazyLock<HashMap<&'static str, &'static Resource>> =
    LazyLock::new(|| RESOURCES.iter().map(|r| (r.relation, r)).collect());

/// The resource for an event's `data.object.object`; None: not mirrored.
pub fn by_object(object: &str) -> Option<&'static Resource> {
    BY_OBJECT.get(object).copied()
}

/// The resource behind `stripe.{relation}`.
pub fn by_relation(relation: &str) -> Option<&'static Resource> {
    BY_RELATION.get(relation).copied()
}

/// A type named on the command line: its object (`checkout.session`) or its
/// relation (`checkout_sessions`).
pub fn by_name(name: &str) -> Option<&'static Resource> {
    by_object(name).or_else(|| by_relation(name))
}

/// The child relation behind `stripe.{relation}`, with its parent.
pub fn child_by_relation(relation: &str) -> Option<(&'static Resource, &'static Child)> {
    RESOURCES.iter().find_map(|r| {
        r.children
            .iter()
            .find(|c| c.relation == relation)
            .map(|c| (r, c))
    })
}

/// Resolves type names from the command line (`all` for every type).
pub fn resolve(names: &[String]) -> anyhow::Result<Vec<&'static Resource>> {
    if names.iter().any(|n| n == "all") {
        return Ok(RESOURCES.iter().collect());
    }
    names
        .iter()
        .map(|n| {
            by_name(n).ok_or_else(|| {
                anyhow::anyhow!(
                    "{n:?} is not a mirrored type; `stripe-sync catalog types` lists them"
                )
            })
        })
        .collect()
}

/// Reads a typed column's value out of an object, as Postgres computes it
/// (used by tests and the diff to agree with the generated columns).
pub fn field<'a>(object: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.split('.')
        .try_fold(object, |v, key| v.get(key))
        .filter(|v| !v.is_null())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::collections::HashSet;

    fn fixtures() -> Value {
        let raw = include_str!("../../tests/fixtures/stripe/fixtures3.json");
        serde_json::from_str::<Value>(raw).unwrap()["resources"].clone()
    }

    /// Each naming field is one Stripe's example of the naming type has,
    /// between registered types, and a named type's `unsettled` column is
    /// `status` (what the apply reads of a stored row).
    #[test]
    fn named_objects_are_registered_and_in_stripe_s_examples() {
        let examples = fixtures();
        for named in NAMED {
            let by = by_object(named.by).unwrap_or_else(|| panic!("{} registered", named.by));
            let target = by_object(named.named).expect("named type registered");
            assert!(
                examples[named.by].get(named.field).is_some(),
                "{}.{} is in Stripe's example",
                named.by,
                named.field
            );
            assert_eq!(by.names().count(), 1);
            if let Listing::ByCreated {
                unsettled: Some((column, _)),
            } = target.listing
            {
                assert_eq!(column, "status");
            }
        }
        let bt = by_object("balance_transaction").unwrap();
        assert!(!bt.settled(Some("pending")));
        assert!(bt.settled(Some("available")));
    }

    /// A type kept under a parent is read under the parent its object
    /// names, and only a plain id goes into the path.
    #[test]
    fn an_object_kept_under_a_parent_is_read_there() {
        let person = by_object("person").unwrap();
        let of = |account: serde_json::Value| {
            person
                .object_path(&serde_json::json!({"id": "person_1", "account": account}))
                .map(Cow::into_owned)
        };
        assert_eq!(
            of(serde_json::json!("acct_1")).as_deref(),
            Some("accounts/acct_1/persons")
        );
        assert_eq!(
            of(serde_json::json!({"id": "acct_2", "object": "account"})).as_deref(),
            Some("accounts/acct_2/persons")
        );
        for bad in [
            serde_json::Value::Null,
            serde_json::json!(""),
            serde_json::json!("acct_1/../x"),
        ] {
            assert_eq!(of(bad.clone()), None, "{bad}");
        }
        let product = by_object("product").unwrap();
        assert_eq!(
            product.object_path(&serde_json::json!({})).as_deref(),
            Some("products")
        );
    }

    #[test]
    fn relations_follow_the_naming_rule_and_are_unique() {
        let mut seen = HashSet::new();
        for r in RESOURCES {
            assert_eq!(r.relation, relation_name(r.object), "{}", r.object);
            assert!(seen.insert(r.relation), "{} twice", r.relation);
            for c in r.children {
                assert!(seen.insert(c.relation), "{} twice", c.relation);
            }
        }
    }

    #[test]
    fn the_issue_s_types_are_all_registered() {
        for object in [
            "product",
            "price",
            "plan",
            "coupon",
            "promotion_code",
            "tax_rate",
            "shipping_rate",
            "payment_link",
            "customer",
            "tax_id",
            "payment_method",
            "setup_intent",
            "checkout.session",
            "payment_intent",
            "charge",
            "refund",
            "dispute",
            "radar.early_fraud_warning",
            "review",
            "subscription",
            "subscription_schedule",
            "invoice",
            "invoiceitem",
            "credit_note",
            "invoice_payment",
            "quote",
            "payout",
            "transfer",
            "topup",
            "entitlements.feature",
            "entitlements.active_entitlement",
        ] {
            assert!(by_object(object).is_some(), "{object} is not registered");
        }
        for child in [
            "checkout_session_line_items",
            "invoice_line_items",
            "subscription_items",
            "credit_note_line_items",
        ] {
            assert!(child_by_relation(child).is_some(), "{child} is missing");
        }
    }

    /// The rest of the account (issue 33): the peer's default set, the
    /// listable types a finance or support team queries, and the lists
    /// nested in types already mirrored.
    #[test]
    fn the_whole_account_s_types_are_registered() {
        for object in [
            "balance_transaction",
            "billing.meter",
            "billing.alert",
            "billing.credit_grant",
            "billing.credit_balance_transaction",
            "climate.product",
            "financial_connections.account",
            "issuing.personalization_design",
            "reporting.report_type",
            "scheduled_query_run",
            "terminal.reader",
            "file_link",
            "tax_code",
            "tax.registration",
            "webhook_endpoint",
            "payment_method_configuration",
            "payment_method_domain",
            "radar.value_list",
            "terminal.location",
            "terminal.configuration",
        ] {
            assert!(by_object(object).is_some(), "{object} is not registered");
        }
        for child in [
            "transfer_reversals",
            "application_fee_refunds",
            "payout_balance_transactions",
            "setup_attempts",
        ] {
            assert!(child_by_relation(child).is_some(), "{child} is missing");
        }
    }

    /// The event parser keys exactly the types the registry says are keyed
    /// by their customer by it (ingest cannot look in the registry).
    #[test]
    fn the_types_keyed_by_customer_agree_with_the_event_parser() {
        let registry: Vec<&str> = RESOURCES
            .iter()
            .filter(|r| r.identity == Identity::Customer)
            .map(|r| r.object)
            .collect();
        assert_eq!(registry, crate::stripe::event::KEYED_BY_CUSTOMER);
    }

    /// Every type is reachable: Stripe sends events for it, or it can be
    /// listed (and so pulled); and a pulled type is not said to have events.
    #[test]
    fn every_type_stays_current_one_way_or_another() {
        for r in RESOURCES {
            assert!(
                r.events || r.listing != Listing::None,
                "{} has neither events nor a list",
                r.object
            );
        }
        assert_eq!(by_object("tax_code").unwrap().source(), Source::Pull);
        assert_eq!(by_object("invoice").unwrap().source(), Source::Events);
        let table = describe();
        let line = table
            .lines()
            .find(|l| l.starts_with("webhook_endpoint "))
            .unwrap();
        assert!(
            line.contains("stripe.webhook_endpoints") && line.contains(" pull "),
            "{line}"
        );
    }

    /// Typed columns are checked against Stripe's own example of each
    /// object: the field exists and holds the JSON kind the column expects
    /// (or null). A typo or a wrong kind fails here, not in production.
    #[test]
    fn typed_columns_match_stripe_s_fixtures() {
        let fixtures = fixtures();
        let mut checked = Vec::new();
        for r in RESOURCES {
            checked.push((r.object, r.columns));
            for c in r.children {
                checked.push((c.item_object, c.columns));
            }
        }
        for (object, columns) in checked {
            let example = &fixtures[object];
            assert!(example.is_object(), "no fixture for {object}");
            for col in columns {
                // Stripe's examples are of no single version: one of the
                // field's paths is there, and each present holds its kind.
                assert!(
                    col.paths()
                        .any(|path| example.get(path.split('.').next().unwrap()).is_some()),
                    "{object}.{} is not a field of Stripe's {object}",
                    col.path
                );
                for path in col.paths() {
                    let Some(value) = field(example, path) else {
                        continue;
                    };
                    let fits = match col.kind {
                        ColumnKind::Text => value.is_string(),
                        ColumnKind::Ref => value.is_string() || value.get("id").is_some(),
                        ColumnKind::Int | ColumnKind::Time => value.is_i64(),
                        ColumnKind::Bool => value.is_boolean(),
                    };
                    assert!(fits, "{object}.{path} is {value}, not {:?}", col.kind);
                }
            }
        }
    }

    /// Every integer field named like an amount, and every time field, of
    /// Stripe's example is a typed column: what people filter on is typed.
    #[test]
    fn amounts_and_times_of_the_fixtures_are_typed() {
        let fixtures = fixtures();
        for r in RESOURCES.iter().filter(|r| !r.is_local_customer()) {
            let example = fixtures[r.object].as_object().unwrap();
            for (name, value) in example {
                let amount = name.starts_with("amount") || name.ends_with("_amount");
                let time = name == "created" || name.ends_with("_at");
                if value.is_i64() && (amount || time) {
                    assert!(
                        r.column(name).is_some(),
                        "{}.{name} ({value}) has no typed column",
                        r.object
                    );
                }
            }
        }
    }

    #[test]
    fn names_resolve_by_object_and_relation() {
        assert_eq!(
            by_name("checkout.session").unwrap().relation,
            "checkout_sessions"
        );
        assert_eq!(
            by_name("checkout_sessions").unwrap().object,
            "checkout.session"
        );
        assert!(by_name("nope").is_none());
        let (parent, child) = child_by_relation("invoice_line_items").unwrap();
        assert_eq!((parent.object, child.parent_column), ("invoice", "invoice"));
    }
}
