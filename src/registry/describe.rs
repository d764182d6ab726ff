//! The registry described for people: `stripe-sync catalog types` and the
//! mirror page's table, both rendered from [`RESOURCES`].

use super::{Deletes, Listing, Parent, Resource, RESOURCES};

/// How a type's rows stay current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Webhooks, with backfill and diff to fill gaps.
    Events,
    /// Only pulled: listed on a schedule (`stripe-sync refresh`).
    Pull,
    /// Webhooks only: Stripe has no list of them (reconcile fills gaps).
    EventsOnly,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Events => "events",
            Self::Pull => "pull",
            Self::EventsOnly => "events only",
        }
    }
}

impl Resource {
    pub fn source(&self) -> Source {
        match (self.events, self.listing) {
            (true, Listing::None) => Source::EventsOnly,
            (true, _) => Source::Events,
            (false, _) => Source::Pull,
        }
    }
}

/// A table of every registered type, for `stripe-sync catalog types`.
pub fn describe() -> String {
    let mut out = format!(
        "{:<34} {:<40} {:<11} {:<10} {:<34} columns\n",
        "object", "relation", "source", "deletes", "children"
    );
    for r in RESOURCES {
        let children: Vec<String> = r
            .children
            .iter()
            .map(|c| format!("stripe.{}", c.relation))
            .collect();
        let columns: Vec<&str> = r.columns.iter().map(|c| c.name).collect();
        out.push_str(&format!(
            "{:<34} {:<40} {:<11} {:<10} {:<34} {}\n",
            r.object,
            format!("stripe.{}", r.relation),
            r.source().as_str(),
            match r.deletes {
                Deletes::Tombstone => "tombstone",
                Deletes::Never => "never",
            },
            if children.is_empty() {
                "-".to_owned()
            } else {
                children.join(", ")
            },
            columns.join(", ")
        ));
    }
    out
}

impl Resource {
    /// How its rows stay current, in the words of the mirror page.
    fn kept_current_by(&self) -> String {
        let per_customer = match self.listed_per() {
            Some(Parent::CUSTOMER) => " (listed per customer)",
            Some(_) => " (listed per connected account)",
            None => "",
        };
        match (self.source(), self.listing) {
            (Source::EventsOnly, _) => "webhooks; `reconcile` fills gaps".to_owned(),
            (Source::Events, _) => format!(
                "webhooks; `backfill`, `diff --repair` and `reconcile` fill gaps{per_customer}"
            ),
            (Source::Pull, Listing::ByCreated { .. }) => format!(
                "`refresh`, from a `created` cursor (no events){}",
                self.named_by_in_words()
            ),
            (Source::Pull, _) => {
                format!("`refresh`: diffed and repaired (no events){per_customer}")
            }
        }
    }
}

impl Resource {
    /// "; read with each event of a charge, … that names one" for a type
    /// other types' objects name ([`super::NAMED`]).
    fn named_by_in_words(&self) -> String {
        let by: Vec<String> = super::NAMED
            .iter()
            .filter(|n| n.named == self.object)
            .map(|n| format!("`{}`", n.by))
            .collect();
        if by.is_empty() {
            return String::new();
        }
        format!(
            "; read with each event of a {} that names one, until settled",
            by.join(", ")
        )
    }
}

fn deletes_in_words(resource: &Resource) -> &'static str {
    match resource.deletes {
        Deletes::Tombstone => "tombstone (`*.deleted`)",
        Deletes::Never => "never (a state)",
    }
}

/// The README's table of every type: object, relations and how each stays
/// current (the mirror page's [`markdown`] adds columns and deletes).
pub fn markdown_summary() -> String {
    let mut out = String::from("| object | relation | stays current by |\n|---|---|---|\n");
    for r in RESOURCES {
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            r.object,
            relations(r),
            r.kept_current_by()
        ));
    }
    out
}

fn relations(r: &Resource) -> String {
    let mut relation = if r.is_local_customer() {
        format!("`stripe.{}` (view over `customers`)", r.relation)
    } else {
        format!("`stripe.{}`", r.relation)
    };
    for c in r.children {
        relation.push_str(&format!(" + `stripe.{}`", c.relation));
    }
    relation
}

/// The mirror page's table of every type (`docs/src/mirror.md`; a test
/// holds the page to it): object, relations, how each stays current, typed
/// columns and delete semantics.
pub fn markdown() -> String {
    let mut out = String::from(
        "| object (`data.object.object`) | relation | stays current by | typed columns | deletes |\n\
         |---|---|---|---|---|\n",
    );
    for r in RESOURCES {
        let columns: Vec<&str> = r.columns.iter().map(|c| c.name).collect();
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            r.object,
            relations(r),
            r.kept_current_by(),
            columns.join(", "),
            deletes_in_words(r)
        ));
    }
    out
}
