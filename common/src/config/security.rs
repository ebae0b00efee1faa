//! The `security:` section: TLS on every link and bearer tokens, as paths and
//! secrets. Validation reads no file: certificates and token files are read
//! when a process starts ([`read_tokens_file`], [`read_secret_file`], and the
//! TLS set-up in `opticache-security`), so a config is checked the same way on
//! every machine.
//!
//! Invariants of a [`SecurityConfig`]: inline tokens and a tokens file are not
//! both given, nor an inline cluster token and a cluster token file; client
//! tokens require a cluster token (nodes must be protected as soon as the
//! public API is); inline tokens are at least [`TOKEN_CHARS_MIN`] characters,
//! printable ASCII without spaces, unique, with unique names. Secrets never
//! appear in `Debug` output.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ConfigError, CONFIG_FILE_BYTES_MAX};

/// Shorter tokens can be guessed; 16 random characters are ~95 bits.
pub const TOKEN_CHARS_MIN: usize = 16;
/// A token travels in an HTTP/2 header; longer ones are a mistake.
pub const TOKEN_CHARS_MAX: usize = 4096;

/// What a client token allows, weakest first: each role may do what the ones before it may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// ReadCache, BatchRead, ReadStream.
    Read,
    /// Also WriteCache, UpdateCache, DeleteCache, BatchWrite, WriteStream.
    Write,
    /// Also ClusterStatus.
    Admin,
    /// The cluster's own credential (coordinators, smart clients): also the
    /// node API and the coordinators' peer service. Never a client token's role.
    #[serde(skip)]
    Cluster,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
            Role::Cluster => "cluster",
        }
    }
}

/// A secret string: compared and used, never printed.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    /// The secret itself, for sending or comparing; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// `security:` as validated. The default is everything off.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecurityConfig {
    pub tls: Option<TlsConfig>,
    /// Client tokens of the public API; `None` = no authentication.
    pub tokens: Option<TokenSource>,
    /// What coordinators present to nodes and to each other; required with
    /// `tokens`. With it, the node API and the peer service need it.
    pub cluster_token: Option<SecretSource>,
}

/// `security.tls`: every process serves TLS with `cert`/`key` and trusts only `ca_cert`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM: the CA every certificate of the cluster chains to.
    pub ca_cert: PathBuf,
    /// PEM: this process's certificate; its names must cover the address it serves.
    pub cert: PathBuf,
    /// PEM: the private key of `cert`.
    pub key: PathBuf,
    /// Nodes and the coordinators' peer service require a client certificate
    /// from `ca_cert`; coordinators present `cert` as theirs.
    #[serde(default)]
    pub mutual: bool,
}

/// Client tokens: in the config, or in a file it points to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSource {
    Inline(Vec<TokenEntry>),
    /// A YAML file holding `tokens: [{name, token, role}]`, read at start-up.
    File(PathBuf),
}

/// A secret in the config, or in a file holding only it (surrounding whitespace ignored).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    Inline(Secret),
    File(PathBuf),
}

/// One client token.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Who holds it: what logs and metrics name instead of the token.
    pub name: String,
    pub token: Secret,
    pub role: Role,
}

/// `security:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SecurityFile {
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub tokens: Option<Vec<TokenEntry>>,
    #[serde(default)]
    pub tokens_file: Option<PathBuf>,
    #[serde(default)]
    pub cluster_token: Option<Secret>,
    #[serde(default)]
    pub cluster_token_file: Option<PathBuf>,
}

/// The file of `tokens_file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensFile {
    pub tokens: Vec<TokenEntry>,
}

/// Checks `security:`; the error is (key under `security.`, reason).
pub(super) fn validate(raw: SecurityFile) -> Result<SecurityConfig, (String, String)> {
    let err = |key: &str, reason: &str| (key.to_string(), reason.to_string());
    if let Some(tls) = &raw.tls {
        for (key, path) in [("tls.ca_cert", &tls.ca_cert), ("tls.cert", &tls.cert), ("tls.key", &tls.key)] {
            if path.as_os_str().is_empty() {
                return Err(err(key, "must not be empty"));
            }
        }
    }
    let tokens = match (raw.tokens, raw.tokens_file) {
        (Some(_), Some(_)) => return Err(err("tokens_file", "give tokens or tokens_file, not both")),
        (Some(list), None) => {
            check_tokens(&list).map_err(|(i, field, reason)| (format!("tokens[{i}].{field}"), reason))?;
            Some(TokenSource::Inline(list))
        }
        (None, Some(path)) if path.as_os_str().is_empty() => return Err(err("tokens_file", "must not be empty")),
        (None, Some(path)) => Some(TokenSource::File(path)),
        (None, None) => None,
    };
    let cluster_token = match (raw.cluster_token, raw.cluster_token_file) {
        (Some(_), Some(_)) => {
            return Err(err("cluster_token_file", "give cluster_token or cluster_token_file, not both"))
        }
        (Some(secret), None) => {
            check_token_text(secret.expose()).map_err(|reason| ("cluster_token".to_string(), reason))?;
            Some(SecretSource::Inline(secret))
        }
        (None, Some(path)) if path.as_os_str().is_empty() => {
            return Err(err("cluster_token_file", "must not be empty"))
        }
        (None, Some(path)) => Some(SecretSource::File(path)),
        (None, None) => None,
    };
    if tokens.is_some() && cluster_token.is_none() {
        return Err(err(
            "cluster_token",
            "required with client tokens: coordinators present it to the nodes, which must not stay open",
        ));
    }
    Ok(SecurityConfig { tls: raw.tls, tokens, cluster_token })
}

/// Checks a list of client tokens (inline or from a tokens file); the error is (index, field, reason).
pub fn check_tokens(list: &[TokenEntry]) -> Result<(), (usize, &'static str, String)> {
    if list.is_empty() {
        return Err((0, "token", "the list is empty: remove it to turn authentication off".into()));
    }
    for (i, entry) in list.iter().enumerate() {
        if entry.name.trim().is_empty() {
            return Err((i, "name", "must not be empty".into()));
        }
        check_token_text(entry.token.expose()).map_err(|reason| (i, "token", reason))?;
        if let Some(first) = list[..i].iter().position(|e| e.name == entry.name) {
            return Err((i, "name", format!("{:?} is already the name of tokens[{first}]", entry.name)));
        }
        if let Some(first) = list[..i].iter().position(|e| e.token == entry.token) {
            return Err((i, "token", format!("the same token as tokens[{first}]")));
        }
    }
    Ok(())
}

/// A token's text: long enough, and sendable as an HTTP header value after "Bearer ".
pub fn check_token_text(token: &str) -> Result<(), String> {
    let chars = token.chars().count();
    if chars < TOKEN_CHARS_MIN {
        return Err(format!("{chars} characters; at least {TOKEN_CHARS_MIN} are needed"));
    }
    if chars > TOKEN_CHARS_MAX {
        return Err(format!("{chars} characters; at most {TOKEN_CHARS_MAX}"));
    }
    if !token.chars().all(|c| c.is_ascii_graphic()) {
        return Err("only printable ASCII without spaces may be used".into());
    }
    Ok(())
}

/// Reads the tokens file of `security.tokens_file` (`tokens: [{name, token, role}]`) and checks it
/// as inline tokens are checked; errors name that file and the entry.
pub fn read_tokens_file(path: &Path) -> Result<Vec<TokenEntry>, ConfigError> {
    let text = read_small_file(path)?;
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    let parsed: TokensFile = serde_saphyr::from_str_with_options(&text, options).map_err(|e| {
        ConfigError::InvalidValue { file: path.to_path_buf(), key: "tokens".into(), reason: e.to_string() }
    })?;
    check_tokens(&parsed.tokens).map_err(|(i, field, reason)| ConfigError::InvalidValue {
        file: path.to_path_buf(),
        key: format!("tokens[{i}].{field}"),
        reason,
    })?;
    Ok(parsed.tokens)
}

/// Reads a file holding one secret (`security.cluster_token_file`); surrounding whitespace is ignored.
pub fn read_secret_file(path: &Path) -> Result<Secret, ConfigError> {
    let text = read_small_file(path)?;
    let secret = text.trim();
    check_token_text(secret).map_err(|reason| ConfigError::InvalidValue {
        file: path.to_path_buf(),
        key: "cluster token".into(),
        reason,
    })?;
    Ok(Secret::new(secret))
}

/// The whole file, refused beyond [`CONFIG_FILE_BYTES_MAX`] like the configuration itself.
fn read_small_file(path: &Path) -> Result<String, ConfigError> {
    let read_error = |source| ConfigError::Read { file: path.to_path_buf(), source };
    let mut bytes = Vec::new();
    File::open(path)
        .map_err(read_error)?
        .take(CONFIG_FILE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > CONFIG_FILE_BYTES_MAX {
        return Err(ConfigError::TooLarge { file: path.to_path_buf() });
    }
    String::from_utf8(bytes).map_err(|_| ConfigError::InvalidValue {
        file: path.to_path_buf(),
        key: "(whole file)".into(),
        reason: "the file is not UTF-8".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug_output() {
        let s = Secret::new("abcdefghijklmnopqrstuvwxyz");
        let entry = TokenEntry { name: "trainer".into(), token: s.clone(), role: Role::Write };
        let text = format!("{entry:?} {:?}", SecretSource::Inline(s));
        assert!(!text.contains("abcdefghijklmnop"), "{text}");
        assert!(text.contains("trainer"));
    }

    #[test]
    fn roles_are_ordered_by_what_they_allow() {
        assert!(Role::Read < Role::Write && Role::Write < Role::Admin && Role::Admin < Role::Cluster);
    }

    #[test]
    fn token_text_limits_hold_at_and_beyond() {
        assert!(check_token_text(&"a".repeat(TOKEN_CHARS_MIN)).is_ok());
        assert!(check_token_text(&"a".repeat(TOKEN_CHARS_MIN - 1)).is_err());
        assert!(check_token_text(&"a".repeat(TOKEN_CHARS_MAX)).is_ok());
        assert!(check_token_text(&"a".repeat(TOKEN_CHARS_MAX + 1)).is_err());
        assert!(check_token_text("abcdefgh ijklmnopq").is_err());
        assert!(check_token_text("abcdefghijklmnopé").is_err());
    }
}
