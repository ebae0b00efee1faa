//! The one error type of configuration loading, and the translation of YAML
//! and serde errors into it.
//!
//! Invariants: every message names the file first, then the key path when
//! there is one (`cache_nodes[1].disk_path`), then the reason, so that an
//! operator can fix the file from the message alone. Syntax errors carry the
//! line and column instead when the parser knows them.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde_saphyr::MessageFormatter;

use super::CONFIG_FILE_BYTES_MAX;

/// Why a configuration could not be loaded, or a node's settings not resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be opened or read; `source` is the OS reason.
    #[error("{}: cannot read the configuration file: {source}", .file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The file is larger than any sensible configuration, e.g. a device or a log passed by mistake.
    #[error(
        "{}: the file is more than {CONFIG_FILE_BYTES_MAX} bytes, too large for a configuration file",
        .file.display()
    )]
    TooLarge { file: PathBuf },

    /// The text is not well-formed YAML (or not a single YAML document).
    #[error("{}{}: {reason}", .file.display(), LineColumn(*.location))]
    Syntax { file: PathBuf, location: Option<(u64, u64)>, reason: String },

    /// A key the format does not know, often a misspelling.
    #[error("{}: {key}: unknown key (expected one of {})", .file.display(), .expected.join(", "))]
    UnknownKey { file: PathBuf, key: String, expected: Vec<&'static str> },

    /// A required key is absent.
    #[error("{}: {key}: missing (this key is required)", .file.display())]
    MissingKey { file: PathBuf, key: String },

    /// A key holds a value of the wrong type, out of range, or inconsistent with another key.
    #[error("{}: {key}: {reason}", .file.display())]
    InvalidValue { file: PathBuf, key: String, reason: String },

    /// `node_settings` was asked for an address that no `cache_nodes` entry has.
    #[error(
        "{}: cache_nodes: no entry has address {address} (the config lists {}); \
         give a disk path to run a node the config does not list",
        .file.display(),
        .known.join(", ")
    )]
    UnknownNode { file: PathBuf, address: String, known: Vec<String> },

    /// `node_settings` was given no address and the file lists several nodes.
    #[error("{}: cache_nodes: pass --address, the config lists {count} cache nodes", .file.display())]
    NodeNotChosen { file: PathBuf, count: usize },

    /// The address a node was asked to run at is unusable.
    #[error("{}: cache_nodes: cannot run a node at {address:?}: {reason}", .file.display())]
    InvalidNodeAddress { file: PathBuf, address: String, reason: String },
}

impl ConfigError {
    /// The configuration file the error is about.
    pub fn file(&self) -> &Path {
        match self {
            ConfigError::Read { file, .. }
            | ConfigError::TooLarge { file }
            | ConfigError::Syntax { file, .. }
            | ConfigError::UnknownKey { file, .. }
            | ConfigError::MissingKey { file, .. }
            | ConfigError::InvalidValue { file, .. }
            | ConfigError::UnknownNode { file, .. }
            | ConfigError::NodeNotChosen { file, .. }
            | ConfigError::InvalidNodeAddress { file, .. } => file,
        }
    }

    /// The key path the error is about (`node.shards`), when there is one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::UnknownKey { key, .. }
            | ConfigError::MissingKey { key, .. }
            | ConfigError::InvalidValue { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// `:line:column` after the file name, the form editors and terminals link to.
struct LineColumn(Option<(u64, u64)>);

impl fmt::Display for LineColumn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some((line, column)) => write!(f, ":{line}:{column}"),
            None => Ok(()),
        }
    }
}

/// Translates a failed deserialisation. `path` is where serde_path_to_error
/// was when the error arose; it is `None` when the parser failed outside
/// serde (e.g. a second document after the first).
pub(super) fn from_yaml(
    file: &Path,
    path: Option<&serde_path_to_error::Path>,
    error: &serde_saphyr::Error,
) -> ConfigError {
    let file = file.to_path_buf();
    let error = innermost(error);
    let parts = path.map(key_parts).unwrap_or_default();
    let key = (!parts.is_empty()).then(|| join_key(&parts));
    let child = |field: &str| join_key(&[parts.as_slice(), &[KeyPart::Name(field)]].concat());
    // The tracker has already stepped into an unknown or duplicate key, but
    // not into a missing one: only the latter needs the field appended.
    let this_or_child = |field: &str| match parts.last() {
        Some(KeyPart::Name(last)) if *last == field => join_key(&parts),
        _ => child(field),
    };
    match error {
        serde_saphyr::Error::SerdeUnknownField { field, expected, .. } => {
            ConfigError::UnknownKey { file, key: this_or_child(field), expected: expected.clone() }
        }
        serde_saphyr::Error::SerdeMissingField { field, .. } => ConfigError::MissingKey { file, key: child(field) },
        serde_saphyr::Error::DuplicateMappingKey { key: Some(duplicate), .. } => {
            ConfigError::InvalidValue { file, key: this_or_child(duplicate), reason: "appears twice".into() }
        }
        serde_saphyr::Error::Eof { .. } if key.is_none() => ConfigError::Syntax {
            file,
            location: None,
            reason: "the file holds no settings (coordinator and cache_nodes are required)".into(),
        },
        _ => {
            let reason = reason(error);
            match (key, is_value_error(error)) {
                (Some(key), true) => ConfigError::InvalidValue { file, key, reason },
                (key, _) => {
                    let location = error.location().map(|at| (at.line(), at.column()));
                    // A syntax error inside a section still says which one, as a hint.
                    let reason = match key {
                        Some(key) => format!("{reason} (in {key})"),
                        None => reason,
                    };
                    ConfigError::Syntax { file, location, reason }
                }
            }
        }
    }
}

/// One step of a key path: `cache_nodes`, `[1]`, `disk_path`.
#[derive(Clone, Copy)]
enum KeyPart<'a> {
    Name(&'a str),
    Index(usize),
}

/// The tracked path as key parts; segments the tracker could not name (which
/// its own Display prints as `?`) are left out rather than shown.
fn key_parts(path: &serde_path_to_error::Path) -> Vec<KeyPart<'_>> {
    path.iter()
        .filter_map(|segment| match segment {
            serde_path_to_error::Segment::Map { key } => Some(KeyPart::Name(key)),
            serde_path_to_error::Segment::Enum { variant } => Some(KeyPart::Name(variant)),
            serde_path_to_error::Segment::Seq { index } => Some(KeyPart::Index(*index)),
            serde_path_to_error::Segment::Unknown => None,
        })
        .collect()
}

/// `cache_nodes[1].disk_path`: names joined by dots, indices in brackets.
fn join_key(parts: &[KeyPart<'_>]) -> String {
    let mut key = String::new();
    for part in parts {
        match part {
            KeyPart::Name(name) => {
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(name);
            }
            KeyPart::Index(index) => key.push_str(&format!("[{index}]")),
        }
    }
    key
}

/// The error under the alias and snippet wrappers, which only add context we print our own way.
fn innermost(mut error: &serde_saphyr::Error) -> &serde_saphyr::Error {
    loop {
        match error {
            serde_saphyr::Error::AliasError { error: inner, .. } => error = inner,
            serde_saphyr::Error::WithSnippet { error: inner, .. } => error = inner,
            _ => return error,
        }
    }
}

/// Errors about one value (its type, its text) rather than the document's structure.
fn is_value_error(error: &serde_saphyr::Error) -> bool {
    matches!(
        error,
        serde_saphyr::Error::Message { .. }
            | serde_saphyr::Error::SerdeInvalidType { .. }
            | serde_saphyr::Error::SerdeInvalidValue { .. }
            | serde_saphyr::Error::SerdeInvalidLength { .. }
            | serde_saphyr::Error::SerdeUnknownVariant { .. }
            | serde_saphyr::Error::SerdeVariantId { .. }
            | serde_saphyr::Error::InvalidScalar { .. }
            | serde_saphyr::Error::NullIntoString { .. }
            | serde_saphyr::Error::DuplicateMappingKey { .. }
            | serde_saphyr::Error::Unexpected { .. }
            | serde_saphyr::Error::UnsupportedTag { .. }
            | serde_saphyr::Error::ExternallyTaggedEnumExpectedScalarOrMapping { .. }
    )
}

/// The reason in our own words where serde's would name internal types.
fn reason(error: &serde_saphyr::Error) -> String {
    match error {
        // Our own messages (byte sizes, addresses) are complete reasons already.
        serde_saphyr::Error::Message { msg, .. } => msg.clone(),
        serde_saphyr::Error::SerdeInvalidType { unexpected, expected, .. }
        | serde_saphyr::Error::SerdeInvalidValue { unexpected, expected, .. } => {
            // serde calls YAML's null (`~` or nothing) "unit value".
            let unexpected = if unexpected == "unit value" { "nothing (null)" } else { unexpected };
            format!("expected {expected}, found {unexpected}")
        }
        serde_saphyr::Error::InvalidScalar { ty, .. } => format!("expected {}", describe_scalar(ty)),
        serde_saphyr::Error::Unexpected { expected, .. } => format!("expected {}", describe_structure(expected)),
        // Our enums are names; only a list or mapping gets here.
        serde_saphyr::Error::ExternallyTaggedEnumExpectedScalarOrMapping { .. } => {
            "expected a name, found a list".into()
        }
        serde_saphyr::Error::SerdeUnknownVariant { variant, expected, .. } => {
            format!("{variant:?} is not one of {}", expected.join(", "))
        }
        serde_saphyr::Error::DuplicateMappingKey { key: Some(key), .. } => format!("key {key} appears twice"),
        other => serde_saphyr::UserMessageFormatter.format_message(other).into_owned(),
    }
}

/// The Rust scalar type serde_saphyr names, as a file's author knows it.
fn describe_scalar(ty: &str) -> String {
    match ty {
        "u8" => format!("a whole number from 0 to {}", u8::MAX),
        "u16" => format!("a whole number from 0 to {}", u16::MAX),
        "u32" => format!("a whole number from 0 to {}", u32::MAX),
        "u64" => format!("a whole number from 0 to {}", u64::MAX),
        other => other.to_string(),
    }
}

/// serde_saphyr's parser-event names, as a file's author knows them.
fn describe_structure(expected: &str) -> &str {
    match expected {
        "sequence start" => "a list",
        "mapping start" => "a mapping (key: value lines)",
        "string scalar" => "a single value",
        other => other,
    }
}
