//! The path summary (spec: `proto/README.md` section 8): the chitchat value under [`PATHS_KEY`]
//! in which every node lists the peers its data path does not reach well (down, or reached only
//! below the overlay MTU), so `weft status --paths` on any host shows every broken pair of the
//! fleet. Healthy paths are not listed: when all is well the value is the same few bytes whatever
//! the number of peers, and it is bounded (at most [`MAX_ENTRIES`] entries and
//! [`MAX_PATHS_LEN`] characters; what does not fit is counted in `more`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::record::is_valid_node_name;

/// The chitchat key of the path summary.
pub const PATHS_KEY: &str = "weft/paths";
/// Longest value [`PathSummary::decode`] reads (base64 characters) and [`PathSummary::encode`]
/// writes.
pub const MAX_PATHS_LEN: usize = 4096;
/// Most entries one summary carries.
pub const MAX_ENTRIES: usize = 64;
/// Format major version: another one is refused.
pub const FORMAT_MAJOR: u8 = 1;
/// Format minor version written; newer minors only append after the entries.
pub const FORMAT_MINOR: u8 = 0;

/// How a listed path is broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PathState {
    /// Probes go unanswered, or are answered by the wrong node.
    Down,
    /// Small probes pass, full-size ones do not: the path carries at most `mtu`.
    Mtu,
}

impl PathState {
    /// The word `weft status` and the JSON use.
    pub fn as_str(self) -> &'static str {
        match self {
            PathState::Down => "down",
            PathState::Mtu => "mtu",
        }
    }
}

/// What was observed, as a code (`Other` keeps codes from newer agents).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// No answer to small probes (code 1).
    NoAnswer,
    /// Small probes answered, full-size ones not (code 2).
    FullSizeLost,
    /// Answered by another node than the peer (code 3).
    UnexpectedNode,
    /// Answered from another VTEP MAC than the peer's record announces (code 4).
    UnexpectedMac,
    /// A code this version does not know.
    Other(u8),
}

impl Reason {
    /// The code on the wire.
    pub fn code(self) -> u8 {
        match self {
            Reason::NoAnswer => 1,
            Reason::FullSizeLost => 2,
            Reason::UnexpectedNode => 3,
            Reason::UnexpectedMac => 4,
            Reason::Other(c) => c,
        }
    }

    /// The reason a code stands for.
    pub fn from_code(code: u8) -> Reason {
        match code {
            1 => Reason::NoAnswer,
            2 => Reason::FullSizeLost,
            3 => Reason::UnexpectedNode,
            4 => Reason::UnexpectedMac,
            c => Reason::Other(c),
        }
    }

    /// A short phrase for `weft status --paths`.
    pub fn describe(self) -> String {
        match self {
            Reason::NoAnswer => "no answer".into(),
            Reason::FullSizeLost => "small passes, full-size does not".into(),
            Reason::UnexpectedNode => "answered by another node".into(),
            Reason::UnexpectedMac => "answered from an unexpected VTEP MAC".into(),
            Reason::Other(c) => format!("reason {c}"),
        }
    }
}

/// One broken path, from the publishing node to `peer`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PathEntry {
    /// The peer's node name.
    pub peer: String,
    /// Down or reduced MTU.
    pub state: PathState,
    /// `Mtu`: the largest packet that passes; `Down`: 0.
    pub mtu: u32,
    /// Since when (Unix milliseconds, the publisher's clock).
    pub since_ms: u64,
    /// What was observed.
    pub reason: Reason,
}

/// A node's broken paths; empty when all is well.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathSummary {
    /// The listed paths, worst first (see [`PathSummary::new`]).
    pub entries: Vec<PathEntry>,
    /// Broken paths not listed (beyond [`MAX_ENTRIES`] or [`MAX_PATHS_LEN`]).
    pub more: u32,
}

/// Why a summary value was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathsError {
    /// Longer than [`MAX_PATHS_LEN`].
    #[error("path summary too long ({0} characters)")]
    TooLong(usize),
    /// Not base64 (standard alphabet, no padding).
    #[error("path summary is not valid base64")]
    Base64,
    /// Shorter than its header.
    #[error("path summary too short")]
    Truncated,
    /// Another major version.
    #[error("unsupported path summary format {0}")]
    UnsupportedVersion(u8),
    /// A field does not decode.
    #[error("path summary body does not decode")]
    Body(#[source] postcard::Error),
    /// More entries than [`MAX_ENTRIES`].
    #[error("path summary lists {0} entries")]
    TooMany(u32),
    /// A decoded field is invalid (`"peer"`, `"state"`).
    #[error("invalid path summary {0}")]
    Field(&'static str),
}

impl PathsError {
    /// A short label for counting refusals.
    pub fn reason(&self) -> &'static str {
        match self {
            PathsError::TooLong(_) => "too_long",
            PathsError::UnsupportedVersion(_) => "version",
            PathsError::Base64
            | PathsError::Truncated
            | PathsError::Body(_)
            | PathsError::TooMany(_)
            | PathsError::Field(_) => "malformed",
        }
    }
}

/// An entry as postcard writes it.
#[derive(Serialize, Deserialize)]
struct WireEntry<'a> {
    peer: &'a str,
    state: u8,
    mtu: u32,
    since_ms: u64,
    reason: u8,
}

impl PathSummary {
    /// A summary of `entries`, worst first: down before mtu, then the oldest, then by peer
    /// name. Entries that would not fit the bounds when encoded are counted in `more`.
    pub fn new(entries: impl IntoIterator<Item = PathEntry>) -> PathSummary {
        let mut entries: Vec<PathEntry> = entries.into_iter().collect();
        entries.sort_by(|a, b| (a.state, a.since_ms, &a.peer).cmp(&(b.state, b.since_ms, &b.peer)));
        let mut summary = PathSummary { entries, more: 0 };
        let kept = summary.fitting();
        let dropped = summary.entries.len() - kept;
        summary.entries.truncate(kept);
        summary.more = u32::try_from(dropped).unwrap_or(u32::MAX);
        summary
    }

    /// Whether nothing is broken.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.more == 0
    }

    /// How many leading entries fit the bounds (with a worst-case `more` field).
    fn fitting(&self) -> usize {
        // Header: 2 version bytes, `more` (at most 5 varint bytes), the count (1 byte: ≤ 64).
        let mut bytes = 2 + 5 + 1;
        let max_bytes = MAX_PATHS_LEN / 4 * 3;
        let mut n = 0;
        for e in self.entries.iter().take(MAX_ENTRIES) {
            bytes += entry_bytes(e).len();
            if bytes > max_bytes {
                break;
            }
            n += 1;
        }
        n
    }

    /// The chitchat value: base64 (standard, no padding) of
    /// `[FORMAT_MAJOR][FORMAT_MINOR][more: varint][count: varint][entries]`. Entries past the
    /// bounds are counted in `more` instead (as [`PathSummary::new`] does).
    pub fn encode(&self) -> String {
        let kept = self.fitting();
        let dropped = u32::try_from(self.entries.len() - kept).unwrap_or(u32::MAX);
        let more = self.more.saturating_add(dropped);
        let mut bytes = vec![FORMAT_MAJOR, FORMAT_MINOR];
        bytes = postcard::to_extend(&more, bytes).expect("postcard into a Vec cannot fail");
        bytes =
            postcard::to_extend(&(kept as u32), bytes).expect("postcard into a Vec cannot fail");
        for e in &self.entries[..kept] {
            bytes.extend_from_slice(&entry_bytes(e));
        }
        STANDARD_NO_PAD.encode(bytes)
    }

    /// Reads a value written by [`PathSummary::encode`] (of this or a newer minor: bytes after
    /// the entries are ignored). Refuses values over [`MAX_PATHS_LEN`] unread, counts over
    /// [`MAX_ENTRIES`] before reading any entry, invalid peer names and unknown states.
    pub fn decode(s: &str) -> Result<PathSummary, PathsError> {
        if s.len() > MAX_PATHS_LEN {
            return Err(PathsError::TooLong(s.len()));
        }
        let bytes = STANDARD_NO_PAD
            .decode(s.as_bytes())
            .map_err(|_| PathsError::Base64)?;
        let [major, _minor, rest @ ..] = bytes.as_slice() else {
            return Err(PathsError::Truncated);
        };
        if *major != FORMAT_MAJOR {
            return Err(PathsError::UnsupportedVersion(*major));
        }
        let (more, rest) = postcard::take_from_bytes::<u32>(rest).map_err(PathsError::Body)?;
        let (count, mut rest) = postcard::take_from_bytes::<u32>(rest).map_err(PathsError::Body)?;
        if count as usize > MAX_ENTRIES {
            return Err(PathsError::TooMany(count));
        }
        let mut entries = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let (w, r) = postcard::take_from_bytes::<WireEntry>(rest).map_err(PathsError::Body)?;
            rest = r;
            if !is_valid_node_name(w.peer) {
                return Err(PathsError::Field("peer"));
            }
            let state = match w.state {
                0 => PathState::Down,
                1 => PathState::Mtu,
                _ => return Err(PathsError::Field("state")),
            };
            entries.push(PathEntry {
                peer: w.peer.to_owned(),
                state,
                mtu: w.mtu,
                since_ms: w.since_ms,
                reason: Reason::from_code(w.reason),
            });
        }
        Ok(PathSummary { entries, more })
    }
}

fn entry_bytes(e: &PathEntry) -> Vec<u8> {
    let w = WireEntry {
        peer: &e.peer,
        state: match e.state {
            PathState::Down => 0,
            PathState::Mtu => 1,
        },
        mtu: e.mtu,
        since_ms: e.since_ms,
        reason: e.reason.code(),
    };
    postcard::to_allocvec(&w).expect("postcard into a Vec cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(peer: &str, state: PathState, since_ms: u64) -> PathEntry {
        PathEntry {
            peer: peer.into(),
            state,
            mtu: if state == PathState::Mtu { 1400 } else { 0 },
            since_ms,
            reason: if state == PathState::Mtu {
                Reason::FullSizeLost
            } else {
                Reason::NoAnswer
            },
        }
    }

    #[test]
    fn all_well_is_a_constant_few_bytes() {
        let empty = PathSummary::new(std::iter::empty());
        assert!(empty.is_empty());
        assert_eq!(empty.encode(), "AQAAAA");
        assert_eq!(PathSummary::decode("AQAAAA"), Ok(PathSummary::default()));
    }

    #[test]
    fn round_trip_sorted_worst_first() {
        let s = PathSummary::new([
            entry("c", PathState::Mtu, 5),
            entry("b", PathState::Down, 9),
            entry("a", PathState::Down, 9),
            entry("z", PathState::Down, 1),
        ]);
        let names: Vec<&str> = s.entries.iter().map(|e| e.peer.as_str()).collect();
        assert_eq!(names, ["z", "a", "b", "c"]);
        assert_eq!(s.more, 0);
        assert_eq!(PathSummary::decode(&s.encode()), Ok(s));
    }

    #[test]
    fn bounded_whatever_the_number_of_broken_paths() {
        // 1,000 broken paths with short names: 64 listed, the rest counted.
        let many = (0..1000).map(|i| entry(&format!("node-{i:04}"), PathState::Down, i));
        let s = PathSummary::new(many);
        assert_eq!(s.entries.len(), MAX_ENTRIES);
        assert_eq!(s.more, 1000 - MAX_ENTRIES as u32);
        let v = s.encode();
        assert!(v.len() <= MAX_PATHS_LEN);
        assert_eq!(PathSummary::decode(&v), Ok(s));
        // Long names: the length bound cuts first.
        let long =
            (0..100).map(|i| entry(&format!("{i:03}{}", "n".repeat(250)), PathState::Mtu, 0));
        let s = PathSummary::new(long);
        assert!(s.entries.len() < 20, "{}", s.entries.len());
        assert_eq!(s.entries.len() as u32 + s.more, 100);
        let v = s.encode();
        assert!(v.len() <= MAX_PATHS_LEN, "{}", v.len());
        assert_eq!(PathSummary::decode(&v), Ok(s));
        // A summary built by hand is bounded on encode too.
        let raw = PathSummary {
            entries: (0..100)
                .map(|i| entry(&format!("n{i}"), PathState::Down, 0))
                .collect(),
            more: 3,
        };
        let d = PathSummary::decode(&raw.encode()).unwrap();
        assert_eq!(
            (d.entries.len(), d.more),
            (MAX_ENTRIES, 3 + 100 - MAX_ENTRIES as u32)
        );
    }

    #[test]
    fn unknown_reasons_survive_and_newer_minors_are_read() {
        let mut e = entry("peer-1", PathState::Down, 7);
        e.reason = Reason::Other(200);
        let s = PathSummary::new([e]);
        let mut bytes = STANDARD_NO_PAD.decode(s.encode()).unwrap();
        bytes[1] = 3;
        bytes.extend_from_slice(b"future");
        assert_eq!(PathSummary::decode(&STANDARD_NO_PAD.encode(&bytes)), Ok(s));
        for c in 0..=255u8 {
            assert_eq!(Reason::from_code(c).code(), c);
        }
    }

    #[test]
    fn hostile_values_are_refused() {
        assert_eq!(PathSummary::decode(""), Err(PathsError::Truncated));
        assert_eq!(PathSummary::decode("!!"), Err(PathsError::Base64));
        assert_eq!(
            PathSummary::decode(&"A".repeat(MAX_PATHS_LEN + 1)),
            Err(PathsError::TooLong(MAX_PATHS_LEN + 1))
        );
        let enc = |b: &[u8]| STANDARD_NO_PAD.encode(b);
        assert_eq!(
            PathSummary::decode(&enc(&[2, 0, 0, 0])),
            Err(PathsError::UnsupportedVersion(2))
        );
        // A count far beyond the bound is refused before any entry is read or allocated.
        assert_eq!(
            PathSummary::decode(&enc(&[1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f])),
            Err(PathsError::TooMany(u32::MAX))
        );
        assert!(matches!(
            PathSummary::decode(&enc(&[1, 0, 0, 1])),
            Err(PathsError::Body(_))
        ));
        // Bad name, bad state.
        assert_eq!(
            PathSummary::decode(&enc(&[1, 0, 0, 1, 1, b' ', 0, 0, 0, 1])),
            Err(PathsError::Field("peer"))
        );
        assert_eq!(
            PathSummary::decode(&enc(&[1, 0, 0, 1, 1, b'a', 2, 0, 0, 1])),
            Err(PathsError::Field("state"))
        );
        assert_eq!(PathsError::TooMany(65).reason(), "malformed");
    }

    proptest! {
        #[test]
        fn prop_arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..3100)
        ) {
            if let Ok(s) = PathSummary::decode(&STANDARD_NO_PAD.encode(&bytes)) {
                prop_assert!(s.entries.len() <= MAX_ENTRIES);
            }
        }

        #[test]
        fn prop_arbitrary_text_never_panics(s in ".{0,5000}") {
            let _ = PathSummary::decode(&s);
        }

        #[test]
        fn prop_round_trip(entries in proptest::collection::vec(
            ("[A-Za-z0-9._-]{1,40}", any::<bool>(), any::<u32>(), any::<u64>(), any::<u8>()),
            0..80,
        )) {
            let entries = entries.into_iter();
            let s = PathSummary::new(entries.map(|(peer, down, mtu, since_ms, r)| PathEntry {
                peer,
                state: if down { PathState::Down } else { PathState::Mtu },
                mtu, since_ms, reason: Reason::from_code(r),
            }));
            let v = s.encode();
            prop_assert!(v.len() <= MAX_PATHS_LEN);
            prop_assert_eq!(PathSummary::decode(&v), Ok(s));
        }
    }
}
