//! The customers' plain settings, which `config` builds from the
//! environment; what they switch is [`super::fanout`]'s.

/// Whether the inbound worker passes the changes it applies on to the
/// other services: on when another service is configured, so a
/// deployment with Stripe alone writes no outbox rows nobody reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FanOut {
    Off,
    ToOtherServices,
}
