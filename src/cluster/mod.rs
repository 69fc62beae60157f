//! TODO

pub mod transport;
