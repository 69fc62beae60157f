//! Desired data-plane state computed from the local claim and the programmable peers.
