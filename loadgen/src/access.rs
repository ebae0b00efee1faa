//! Credentials for a secured cluster (docs/security.md): a bearer token (a
//! client token for `opticache://`, the cluster token for `node://`) and TLS
//! (the cluster's CA; for `node://` under mutual TLS also a certificate and
//! key issued by it).
//!
//! Invariants: the token comes from a file, never from the command line,
//! which `ps` shows and the JSON report records; Redis takes none of these;
//! an unreadable file, an empty token or a certificate without its key is a
//! bad argument, found before any connection is made.

use std::path::PathBuf;

use opticache_common::{Secret, TlsConfig};
use opticache_security::link::ClusterLink;
use opticache_security::tls::ClientTls;

use crate::error::{LoadgenError, Result};
use crate::target::TargetSpec;

/// The largest token file read: a token is a line, not a document.
pub const TOKEN_FILE_BYTES_MAX: u64 = 4096;

/// The credentials flags, as given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessArgs {
    pub token_file: Option<PathBuf>,
    pub ca_cert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// What the connections present.
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub token: Option<Secret>,
    /// The CA to trust; without it the connections are plaintext.
    pub ca_cert: Option<PathBuf>,
    /// This client's certificate and key (node:// under mutual TLS).
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl Access {
    /// Checks the flags against `target` and reads the token.
    pub fn resolve(args: AccessArgs, target: &TargetSpec) -> Result<Access> {
        let AccessArgs { token_file, ca_cert, cert, key } = args;
        let any = token_file.is_some() || ca_cert.is_some() || cert.is_some() || key.is_some();
        if any && matches!(target, TargetSpec::Redis { .. }) {
            return Err(LoadgenError::invalid(
                "--token-file/--ca-cert/--cert/--key",
                "are for OptiCache targets; redis:// takes none",
            ));
        }
        let identity = match (cert, key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some((cert, key)),
            _ => return Err(LoadgenError::invalid("--cert/--key", "go together: a certificate and its key")),
        };
        if identity.is_some() {
            if !matches!(target, TargetSpec::Node { .. }) {
                return Err(LoadgenError::invalid(
                    "--cert/--key",
                    "are for node:// under mutual TLS; the public API authenticates with tokens",
                ));
            }
            if ca_cert.is_none() {
                return Err(LoadgenError::invalid(
                    "--cert/--key",
                    "need --ca-cert: a client certificate is sent over TLS",
                ));
            }
        }
        let token = token_file.map(|path| read_token(&path)).transpose()?;
        Ok(Access { token, ca_cert, identity })
    }

    /// The links of a node:// target: TLS as given, the token on every call.
    pub fn node_link(&self) -> Result<ClusterLink> {
        let invalid =
            |e: opticache_security::SecurityError| LoadgenError::invalid("--ca-cert/--cert/--key", e.to_string());
        let tls = match (&self.ca_cert, &self.identity) {
            (None, _) => None,
            (Some(ca), None) => Some(ClientTls::trusting(ca).map_err(invalid)?),
            (Some(ca), Some((cert, key))) => Some(
                ClientTls::load(&TlsConfig { ca_cert: ca.clone(), cert: cert.clone(), key: key.clone(), mutual: true })
                    .map_err(invalid)?,
            ),
        };
        ClusterLink::new(tls, self.token.as_ref()).map_err(|e| LoadgenError::invalid("--token-file", e.to_string()))
    }
}

/// The token in `path`: its one line, surrounding white space dropped.
fn read_token(path: &PathBuf) -> Result<Secret> {
    let invalid = |why: String| LoadgenError::invalid("--token-file", format!("{}: {why}", path.display()));
    let len = std::fs::metadata(path).map_err(|e| invalid(e.to_string()))?.len();
    if len > TOKEN_FILE_BYTES_MAX {
        return Err(invalid(format!("{len} bytes; a token file holds at most {TOKEN_FILE_BYTES_MAX}")));
    }
    let text = std::fs::read_to_string(path).map_err(|e| invalid(e.to_string()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(invalid("is empty".into()));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid("holds characters a bearer token cannot carry (one line of printable ASCII)".into()));
    }
    Ok(Secret::new(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> TargetSpec {
        "node://127.0.0.1:6001".parse().expect("target")
    }

    #[test]
    fn the_token_is_read_trimmed_and_bad_files_are_refused_by_name() {
        let dir = tempfile::tempdir().expect("dir");
        let good = dir.path().join("token");
        std::fs::write(&good, "  s3cret-token-value\n").expect("write");
        let args = AccessArgs { token_file: Some(good), ..AccessArgs::default() };
        let access = Access::resolve(args, &node()).expect("valid");
        assert_eq!(access.token.as_ref().map(Secret::expose), Some("s3cret-token-value"));
        assert!(access.node_link().is_ok());

        for (name, content, says) in [
            ("empty", "\n \n", "is empty"),
            ("two-words", "a b", "printable ASCII"),
            ("big", &"x".repeat(5000), "at most"),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, content).expect("write");
            let err = Access::resolve(AccessArgs { token_file: Some(path), ..AccessArgs::default() }, &node())
                .expect_err(name)
                .to_string();
            assert!(err.contains("--token-file") && err.contains(name) && err.contains(says), "{name}: {err}");
            assert!(!err.contains("xxxxx"), "the file's content is not echoed: {err}");
        }
        let missing = dir.path().join("missing");
        let err = Access::resolve(AccessArgs { token_file: Some(missing), ..AccessArgs::default() }, &node())
            .expect_err("missing")
            .to_string();
        assert!(err.contains("missing"), "{err}");
    }

    #[test]
    fn flags_that_do_not_fit_the_target_are_refused() {
        let p = |s: &str| Some(PathBuf::from(s));
        let redis: TargetSpec = "redis://127.0.0.1:6379".parse().expect("target");
        let cluster: TargetSpec = "opticache://127.0.0.1:50051".parse().expect("target");
        let cases = [
            (AccessArgs { ca_cert: p("ca.pem"), ..AccessArgs::default() }, &redis, "redis:// takes none"),
            (AccessArgs { cert: p("c.pem"), ..AccessArgs::default() }, &node(), "go together"),
            (AccessArgs { cert: p("c.pem"), key: p("k.pem"), ..AccessArgs::default() }, &node(), "need --ca-cert"),
            (
                AccessArgs { ca_cert: p("ca.pem"), cert: p("c.pem"), key: p("k.pem"), ..AccessArgs::default() },
                &cluster,
                "authenticates with tokens",
            ),
        ];
        for (args, target, says) in cases {
            let err = Access::resolve(args.clone(), target).expect_err(says).to_string();
            assert!(err.contains(says), "{args:?} against {target}: {err}");
        }
        assert!(Access::resolve(AccessArgs::default(), &redis).is_ok(), "no flags, any target");
        let unreadable_ca =
            Access::resolve(AccessArgs { ca_cert: p("/nonexistent/ca.pem"), ..AccessArgs::default() }, &node())
                .expect("resolving reads no certificate");
        let err = unreadable_ca.node_link().expect_err("no such CA file").to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}
