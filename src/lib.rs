//! weft: a container overlay-network agent. Every host gets a subnet of the overlay network;
//! agents find each other by gossip (chitchat), claim subnets by announcement, and program their
//! own routes, neighbour and FDB entries. This crate is both the `weft` binary's library and an
//! embedding API.

pub mod agent;
pub mod api;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod dataplane;
pub mod lease;
pub mod sim;

pub use config::Config;
