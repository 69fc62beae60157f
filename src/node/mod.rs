//! The node's decisions that need no I/O, fed with times and observations by the agent's driver
//! (`agent/driver.rs`): when to step and push news and how long to warm up ([`pacing`]), what to
//! tell the operator once ([`notices`]), what the kernel should hold ([`desired`]), when to save the claim ([`persist`]), when to reconcile and which peers are programmed
//! ([`programming`]). The claim rule
//! itself is the [`crate::lease`] state machine; per-peer path choice and desired kernel state
//! are [`crate::dataplane::paths`] and [`crate::dataplane::desired`]. Everything here is tested
//! without root and without timers; [`generation`] is the gossip generation of a start.

pub mod core;
pub mod desired;
pub mod generation;
pub mod notices;
pub mod pacing;
pub mod persist;
pub mod programming;
