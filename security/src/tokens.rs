//! The tokens a process accepts, each with the role it grants, and the
//! constant-time lookup of a presented token.
//!
//! Invariants: a lookup compares the presented token with every entry, with
//! no early exit and byte comparisons that do not stop at the first
//! difference (`subtle`), so timing reveals at most a token's length. Token
//! text is never formatted: `Debug` shows names and roles only.

use std::fmt;

use opticache_common::config::security::{read_secret_file, read_tokens_file};
use opticache_common::{Role, Secret, SecretSource, SecurityConfig, TokenEntry, TokenSource};
use subtle::ConstantTimeEq;

use crate::SecurityError;

/// The name the cluster token goes by in logs.
pub const CLUSTER_TOKEN_NAME: &str = "cluster";

struct Entry {
    name: String,
    token: Vec<u8>,
    role: Role,
}

/// The accepted tokens. Client tokens are checked only when `clients_need_tokens`;
/// the cluster token, when present, always grants [`Role::Cluster`].
pub struct TokenTable {
    entries: Vec<Entry>,
    clients_need_tokens: bool,
    cluster_needs_token: bool,
}

impl fmt::Debug for TokenTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenTable")
            .field("entries", &self.entries.iter().map(|e| (&e.name, e.role)).collect::<Vec<_>>())
            .field("clients_need_tokens", &self.clients_need_tokens)
            .field("cluster_needs_token", &self.cluster_needs_token)
            .finish()
    }
}

/// Who a token belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holder<'a> {
    pub name: &'a str,
    pub role: Role,
}

/// The cluster token of `security:`, read from its file if the config points to one.
pub fn cluster_token(security: &SecurityConfig) -> Result<Option<Secret>, SecurityError> {
    Ok(match &security.cluster_token {
        None => None,
        Some(SecretSource::Inline(secret)) => Some(secret.clone()),
        Some(SecretSource::File(path)) => Some(read_secret_file(path)?),
    })
}

impl TokenTable {
    /// Builds the table of `security:`, reading a tokens file and a cluster
    /// token file if the config points to them.
    pub fn load(security: &SecurityConfig) -> Result<TokenTable, SecurityError> {
        TokenTable::with_cluster_token(security, cluster_token(security)?.as_ref())
    }

    /// Builds the table of `security:` with the cluster token already resolved
    /// ([`cluster_token`]); reads the tokens file if the config points to one.
    pub fn with_cluster_token(
        security: &SecurityConfig,
        cluster: Option<&Secret>,
    ) -> Result<TokenTable, SecurityError> {
        let from_file;
        let clients: &[TokenEntry] = match &security.tokens {
            None => &[],
            Some(TokenSource::Inline(list)) => list,
            Some(TokenSource::File(path)) => {
                from_file = read_tokens_file(path)?;
                &from_file
            }
        };
        let mut entries: Vec<Entry> = clients
            .iter()
            .map(|t| Entry { name: t.name.clone(), token: t.token.expose().as_bytes().to_vec(), role: t.role })
            .collect();
        if let Some(secret) = cluster {
            entries.push(Entry {
                name: CLUSTER_TOKEN_NAME.into(),
                token: secret.expose().as_bytes().to_vec(),
                role: Role::Cluster,
            });
        }
        Ok(TokenTable {
            entries,
            clients_need_tokens: security.tokens.is_some(),
            cluster_needs_token: cluster.is_some(),
        })
    }

    /// Whether a call needing `role` must carry a token.
    pub fn token_needed_for(&self, role: Role) -> bool {
        if role == Role::Cluster {
            self.cluster_needs_token
        } else {
            self.clients_need_tokens
        }
    }

    /// Whether any call needs a token.
    pub fn is_on(&self) -> bool {
        self.clients_need_tokens || self.cluster_needs_token
    }

    /// The holder of `presented`, if it is one of the table's tokens.
    pub fn lookup(&self, presented: &[u8]) -> Option<Holder<'_>> {
        let mut found = None;
        for entry in &self.entries {
            let equal: bool = entry.token.as_slice().ct_eq(presented).into();
            if equal && found.is_none() {
                found = Some(Holder { name: &entry.name, role: entry.role });
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use opticache_common::{Secret, TokenEntry};

    use super::*;

    fn entry(name: &str, token: &str, role: Role) -> TokenEntry {
        TokenEntry { name: name.into(), token: Secret::new(token), role }
    }

    #[test]
    fn a_token_finds_its_holder_and_nothing_else_does() {
        let security = SecurityConfig {
            tls: None,
            tokens: Some(TokenSource::Inline(vec![
                entry("reader", "rrrrrrrrrrrrrrrrrrrr", Role::Read),
                entry("ops", "aaaaaaaaaaaaaaaaaaaa", Role::Admin),
            ])),
            cluster_token: Some(SecretSource::Inline(Secret::new("cccccccccccccccccccc"))),
        };
        let table = TokenTable::load(&security).unwrap();
        assert_eq!(table.lookup(b"rrrrrrrrrrrrrrrrrrrr"), Some(Holder { name: "reader", role: Role::Read }));
        assert_eq!(table.lookup(b"aaaaaaaaaaaaaaaaaaaa"), Some(Holder { name: "ops", role: Role::Admin }));
        assert_eq!(table.lookup(b"cccccccccccccccccccc").map(|h| h.role), Some(Role::Cluster));
        assert_eq!(table.lookup(b"rrrrrrrrrrrrrrrrrrrX"), None);
        assert_eq!(table.lookup(b"rrrrrrrrrrrrrrrrrrr"), None);
        assert_eq!(table.lookup(b""), None);
        assert!(table.token_needed_for(Role::Read) && table.token_needed_for(Role::Cluster));
        let shown = format!("{table:?}");
        assert!(!shown.contains("rrrr") && !shown.contains("cccc") && shown.contains("reader"), "{shown}");
    }

    #[test]
    fn a_cluster_token_alone_guards_the_internal_services_only() {
        let security = SecurityConfig {
            tls: None,
            tokens: None,
            cluster_token: Some(SecretSource::Inline(Secret::new("cccccccccccccccccccc"))),
        };
        let table = TokenTable::load(&security).unwrap();
        assert!(!table.token_needed_for(Role::Write));
        assert!(table.token_needed_for(Role::Cluster));
    }

    #[test]
    fn token_files_are_read_and_their_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens.yaml");
        std::fs::write(&tokens, "tokens:\n  - {name: trainer, token: tttttttttttttttttttt, role: write}\n").unwrap();
        let cluster = dir.path().join("cluster.token");
        std::fs::write(&cluster, "  cccccccccccccccccccc\n").unwrap();
        let security = SecurityConfig {
            tls: None,
            tokens: Some(TokenSource::File(tokens.clone())),
            cluster_token: Some(SecretSource::File(cluster.clone())),
        };
        let table = TokenTable::load(&security).unwrap();
        assert_eq!(table.lookup(b"tttttttttttttttttttt"), Some(Holder { name: "trainer", role: Role::Write }));
        assert_eq!(table.lookup(b"cccccccccccccccccccc").map(|h| h.role), Some(Role::Cluster));

        std::fs::write(&tokens, "tokens:\n  - {name: trainer, token: short, role: write}\n").unwrap();
        let message = TokenTable::load(&security).unwrap_err().to_string();
        assert!(message.contains("tokens.yaml") && message.contains("tokens[0].token"), "{message}");
        assert!(!message.contains("short"), "the token must not be echoed: {message}");

        std::fs::write(&tokens, "tokens:\n  - {name: trainer, token: tttttttttttttttttttt, role: root}\n").unwrap();
        let message = TokenTable::load(&security).unwrap_err().to_string();
        assert!(message.contains("tokens.yaml") && message.contains("root"), "{message}");

        std::fs::remove_file(&cluster).unwrap();
        std::fs::write(&tokens, "tokens:\n  - {name: trainer, token: tttttttttttttttttttt, role: write}\n").unwrap();
        let message = TokenTable::load(&security).unwrap_err().to_string();
        assert!(message.contains("cluster.token"), "{message}");
    }
}
