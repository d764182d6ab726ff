//! Kafka: topic names, the producer, the consume loop and the envelope.

pub mod admin;
pub mod age;
pub mod consumer;
pub mod envelope;
pub mod producer;
pub mod topics;

pub use producer::{EventProducer, ProduceError};
