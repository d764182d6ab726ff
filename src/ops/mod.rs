//! Seeing inside the engine without extra tools: topics, consumer lag,
//! tailing, and dead letters. Used by the `topics`/`dlq` commands and by
//! `/api/admin/*`. The Kafka calls here are blocking (librdkafka); async
//! callers run them on the blocking pool.

pub mod commands;
pub mod dlq;
pub mod history;
pub mod operator;
pub mod overview;
pub mod prune;
pub mod sync;
pub mod topics;

use crate::config::{ChangesConfig, ConfigError, Env, KafkaConfig};
use crate::kafka::topics as kafka_topics;

/// Our topics and consumer groups, as configured.
#[derive(Debug, Clone)]
pub struct Inventory {
    pub brokers: String,
    pub events_topic: String,
    pub changes_topic: String,
    pub inbound_group: String,
    pub outbound_group: String,
    pub notifier_group: String,
    pub commands_topic: String,
    pub commands_group: String,
    /// The Salesforce adapter's topic and groups, when it is configured
    /// (`SALESFORCE_INSTANCE_URL`).
    pub salesforce: Option<SalesforceInventory>,
    /// `KAFKA_FETCH_MAX_BYTES`: what reading one message may fetch.
    pub fetch_max_bytes: usize,
}

impl Inventory {
    pub fn load(env: &Env) -> Result<Self, ConfigError> {
        let kafka = KafkaConfig::load(env)?;
        Ok(Self {
            brokers: kafka.brokers.clone(),
            events_topic: kafka.events_topic,
            changes_topic: ChangesConfig::load(env).topic,
            inbound_group: crate::config::inbound_group(env).to_owned(),
            outbound_group: crate::config::outbound_group(env).to_owned(),
            notifier_group: crate::config::notifier_group(env).to_owned(),
            commands_topic: crate::config::CommandsConfig::load(env).topic,
            commands_group: crate::config::commands_group(env).to_owned(),
            salesforce: crate::config::SalesforceConfig::is_configured(env).then(|| {
                SalesforceInventory {
                    outbound_group: crate::config::salesforce_outbound_group(env).to_owned(),
                    inbound_group: crate::config::salesforce_inbound_group(env).to_owned(),
                    events_topic: crate::config::salesforce_events_topic(env).to_owned(),
                }
            }),
            fetch_max_bytes: kafka.fetch_max_bytes,
        })
    }

    /// Every topic of ours, sources first, each followed by its dead
    /// letters.
    fn topics_with_dead_letters(&self) -> Vec<(String, Vec<String>)> {
        let mut changes_dlqs = vec![kafka_topics::dead_letter_for(&self.changes_topic)];
        if self.salesforce.is_some() {
            changes_dlqs.push(kafka_topics::salesforce_dead_letters(&self.changes_topic));
        }
        let mut topics = vec![
            (
                self.events_topic.clone(),
                vec![
                    kafka_topics::dead_letter_for(&self.events_topic),
                    kafka_topics::notifier_dead_letters(&self.events_topic),
                ],
            ),
            (self.changes_topic.clone(), changes_dlqs),
            (
                self.commands_topic.clone(),
                vec![kafka_topics::dead_letter_for(&self.commands_topic)],
            ),
        ];
        if let Some(sf) = &self.salesforce {
            topics.push((
                sf.events_topic.clone(),
                vec![kafka_topics::dead_letter_for(&sf.events_topic)],
            ));
        }
        topics
    }

    pub fn dead_letter_topics(&self) -> Vec<String> {
        self.topics_with_dead_letters()
            .into_iter()
            .flat_map(|(_, dlqs)| dlqs)
            .collect()
    }

    /// Every topic of ours, sources first.
    pub fn topics(&self) -> Vec<String> {
        self.topics_with_dead_letters()
            .into_iter()
            .flat_map(|(topic, dlqs)| std::iter::once(topic).chain(dlqs))
            .collect()
    }

    /// Each group with the topic it consumes.
    pub fn groups(&self) -> Vec<(String, String)> {
        let mut groups = vec![
            (self.inbound_group.clone(), self.events_topic.clone()),
            (self.outbound_group.clone(), self.changes_topic.clone()),
            (self.notifier_group.clone(), self.events_topic.clone()),
            (self.commands_group.clone(), self.commands_topic.clone()),
        ];
        if let Some(sf) = &self.salesforce {
            groups.push((sf.outbound_group.clone(), self.changes_topic.clone()));
            groups.push((sf.inbound_group.clone(), sf.events_topic.clone()));
        }
        groups
    }
}

/// The Salesforce adapter's part of the [`Inventory`].
#[derive(Debug, Clone)]
pub struct SalesforceInventory {
    pub outbound_group: String,
    pub inbound_group: String,
    pub events_topic: String,
}

/// Renders rows as an aligned text table (header first).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = vec![line(header.iter().map(|h| h.to_string()).collect())];
    out.extend(rows.iter().map(|r| line(r.clone())));
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_salesforce_group_and_dead_letters_are_listed_only_when_configured() {
        let base = Env::from_pairs([("KAFKA_BROKERS", "b:9092")]);
        let without = Inventory::load(&base).unwrap();
        assert_eq!(without.groups().len(), 4);
        assert!(!without.topics().iter().any(|t| t.contains("salesforce")));
        // The URL alone: listing needs none of the adapter's credentials.
        let with = Inventory::load(
            &base.with("SALESFORCE_INSTANCE_URL", "https://acme.my.salesforce.com"),
        )
        .unwrap();
        assert!(with.groups().contains(&(
            "stripe-sync.salesforce-outbound".to_owned(),
            "customers.changes.v1".to_owned()
        )));
        assert!(with.groups().contains(&(
            "stripe-sync.salesforce-inbound".to_owned(),
            "salesforce.events.v1".to_owned()
        )));
        for dlq in [
            "customers.changes.v1.salesforce.dlq",
            "salesforce.events.v1.dlq",
        ] {
            assert!(with.dead_letter_topics().contains(&dlq.to_owned()), "{dlq}");
        }
        // Sources first, each followed by its dead letters.
        let topics = with.topics();
        let at = |t: &str| topics.iter().position(|x| x == t).unwrap();
        assert!(at("customers.changes.v1") < at("customers.changes.v1.salesforce.dlq"));
        assert!(at("customers.changes.v1.salesforce.dlq") < at("stripe.commands.v1"));
    }
}
