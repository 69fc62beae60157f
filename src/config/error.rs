//! Configuration errors: each one names the field (flag or net-conf key) and says why, on one line.

use std::path::PathBuf;

use super::duration::DurationError;

/// Why a value did not parse.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error(transparent)]
    Addr(#[from] std::net::AddrParseError),
    #[error(transparent)]
    Int(#[from] std::num::ParseIntError),
    #[error(transparent)]
    Duration(#[from] DurationError),
}

/// A configuration error. `Display` is a single line naming the field, e.g.
/// `invalid --network "10.0.0.0/33": prefix length 33 is larger than 32`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value that does not parse as its type.
    #[error("invalid {field} {value:?}: {source}")]
    Parse {
        field: String,
        value: String,
        #[source]
        source: ParseError,
    },
    /// A value that parses but breaks a rule.
    #[error("invalid {field} {value:?}: {reason}")]
    Invalid {
        field: String,
        value: String,
        reason: String,
    },
    /// A rule about a field as a whole (a net-conf key, a variable, a path), not one value.
    #[error("invalid {field}: {reason}")]
    Rule { field: String, reason: String },
    #[error("cannot read {field} {path:?}: {source}")]
    NetConfRead {
        field: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid {field} {path:?}: {source}")]
    NetConfSyntax {
        field: String,
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The cluster key file is missing, unreadable, malformed or open to other users.
    #[error("invalid {field}: {source}")]
    KeyFile {
        field: String,
        #[source]
        source: crate::keys::KeyStoreError,
    },
    /// A path the agent must write (state directory, subnet file) cannot be used.
    #[error("unusable {field} {path:?}: {reason}")]
    Path {
        field: String,
        path: PathBuf,
        reason: String,
    },
    /// The underlay interface or address cannot be found.
    #[error("invalid {field}: {reason}")]
    Underlay { field: String, reason: String },
    #[error("cannot read the hostname for the default --node-name (set --node-name): {source}")]
    Hostname {
        #[source]
        source: nix::Error,
    },
}

impl ConfigError {
    /// The flag or net-conf key the error is about.
    pub fn field(&self) -> &str {
        match self {
            ConfigError::Parse { field, .. }
            | ConfigError::Invalid { field, .. }
            | ConfigError::Rule { field, .. }
            | ConfigError::NetConfRead { field, .. }
            | ConfigError::NetConfSyntax { field, .. }
            | ConfigError::KeyFile { field, .. }
            | ConfigError::Path { field, .. }
            | ConfigError::Underlay { field, .. } => field,
            ConfigError::Hostname { .. } => "--node-name",
        }
    }

    pub(crate) fn invalid(
        field: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        ConfigError::Invalid {
            field: field.into(),
            value: value.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn parse(
        field: impl Into<String>,
        value: impl Into<String>,
        source: impl Into<ParseError>,
    ) -> Self {
        ConfigError::Parse {
            field: field.into(),
            value: value.into(),
            source: source.into(),
        }
    }
}
