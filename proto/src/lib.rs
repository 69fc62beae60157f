//! weft's on-the-wire and on-disk formats: the gossiped node record, the sealed gossip envelope,
//! the UDP-tunnel frame, the path probe and the gossiped path summary, and the persisted state
//! file. Pure code: no sockets, no clock, no filesystem. Every decoder takes untrusted bytes and
//! returns an error on bad input, never panics, and never allocates from a length it read. The
//! formats are specified in `proto/README.md`, with test vectors.

pub mod envelope;
pub mod frame;
pub mod keyfile;
pub mod paths;
pub mod probe;
pub mod record;
pub mod state;

pub use envelope::{KeyError, Keyring, OpenError, Opener, SealError, Sealer, Sealing};
pub use record::{
    Backend, ClaimState, FamiliesV1, Ipv4Cidr, Ipv6Cidr, Ipv6Overlay, MAX_RECORD_LEN, NodeRecord,
    RECORD_KEY, RecordError,
};
pub use state::{PersistedState, StateError};
