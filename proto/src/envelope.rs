//! The sealed gossip envelope (see proto/README.md).
