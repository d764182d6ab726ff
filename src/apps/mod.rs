//! The systems teams build again and again on top of Stripe, each a thin
//! layer on the spine (topics, consume loop, mirror) with its own tables
//! and commands.

pub mod credits;
pub mod orders;
pub mod payments;
