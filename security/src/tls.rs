//! rustls (through tonic) configurations from `security.tls`: what a server
//! presents and whom it trusts, and what a client of the cluster trusts and
//! presents.
//!
//! Invariants: every file is read at start-up and refused with its key and
//! path if unreadable or not PEM, so a process with a bad TLS set-up never
//! starts serving; clients trust only the configured CA, never the system's
//! roots, so a certificate from any other CA is refused.

use std::path::Path;

use opticache_common::TlsConfig;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::SecurityError;

/// What a server of the cluster serves TLS with. `Debug` leaves out the key.
#[derive(Clone)]
pub struct ServerTls {
    pub config: ServerTlsConfig,
    /// Mutual TLS: callers of the internal services must present a client certificate.
    pub mutual: bool,
    /// What was read for `config`, kept for [`ServerTls::client`].
    identity: Identity,
    ca: Option<Certificate>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").field("mutual", &self.mutual).finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads the certificate, key and CA of `tls`. With `mutual`, client
    /// certificates are verified against the CA when presented (the public API
    /// stays usable without one; the guard requires one for internal calls).
    pub fn load(tls: &TlsConfig) -> Result<ServerTls, SecurityError> {
        let identity = identity(tls)?;
        let mut config = ServerTlsConfig::new().identity(identity.clone());
        let ca = if tls.mutual { Some(ca(tls)?) } else { None };
        if let Some(ca) = &ca {
            config = config.client_ca_root(ca.clone()).client_auth_optional(true);
        }
        Ok(ServerTls { config, mutual: tls.mutual, identity, ca })
    }

    /// The client side of the same process (its links to other processes),
    /// as [`ClientTls::load`] of `tls` would build it, reading only what
    /// [`ServerTls::load`] did not.
    pub fn client(&self, tls: &TlsConfig) -> Result<ClientTls, SecurityError> {
        let ca = match &self.ca {
            Some(ca) => ca.clone(),
            None => ca(tls)?,
        };
        let mut config = ClientTlsConfig::new().ca_certificate(ca);
        if self.mutual {
            config = config.identity(self.identity.clone());
        }
        Ok(ClientTls { config })
    }
}

/// What a client of the cluster (coordinator → node, coordinator → coordinator,
/// a smart client) connects with. `Debug` leaves out the key (tonic's own shows it).
#[derive(Clone)]
pub struct ClientTls {
    config: ClientTlsConfig,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Trusts only the cluster CA; with `mutual`, presents the process's own certificate.
    pub fn load(tls: &TlsConfig) -> Result<ClientTls, SecurityError> {
        let mut config = ClientTlsConfig::new().ca_certificate(ca(tls)?);
        if tls.mutual {
            config = config.identity(identity(tls)?);
        }
        Ok(ClientTls { config })
    }

    /// Trusts only the CA in the PEM file `ca_cert` (a client outside the cluster).
    pub fn trusting(ca_cert: &Path) -> Result<ClientTls, SecurityError> {
        let pem = read_pem("ca_cert", ca_cert, "CERTIFICATE")?;
        Ok(ClientTls { config: ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)) })
    }

    /// The tonic configuration, for `Endpoint::tls_config`.
    pub fn config(&self) -> ClientTlsConfig {
        self.config.clone()
    }
}

/// The URI of `address` (`host:port`) for a channel with or without TLS.
pub fn uri(address: &str, tls: bool) -> String {
    let bare = address.strip_prefix("http://").or_else(|| address.strip_prefix("https://")).unwrap_or(address);
    format!("{}://{bare}", if tls { "https" } else { "http" })
}

fn identity(tls: &TlsConfig) -> Result<Identity, SecurityError> {
    let cert = read_pem("cert", &tls.cert, "CERTIFICATE")?;
    let key = read_pem("key", &tls.key, "PRIVATE KEY")?;
    Ok(Identity::from_pem(cert, key))
}

fn ca(tls: &TlsConfig) -> Result<Certificate, SecurityError> {
    Ok(Certificate::from_pem(read_pem("ca_cert", &tls.ca_cert, "CERTIFICATE")?))
}

/// The file's bytes, if it holds a PEM block whose label ends with `wanted`
/// ("PRIVATE KEY" matches PKCS#8, RSA and EC keys).
fn read_pem(key: &'static str, path: &Path, wanted: &'static str) -> Result<Vec<u8>, SecurityError> {
    let bytes =
        std::fs::read(path).map_err(|source| SecurityError::ReadPem { key, path: path.to_path_buf(), source })?;
    let text = String::from_utf8_lossy(&bytes);
    let has_block = text.lines().any(|line| {
        line.strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
            .is_some_and(|label| label.ends_with(wanted))
    });
    if !has_block {
        return Err(SecurityError::NotPem { key, path: path.to_path_buf(), wanted });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_switch_scheme_whatever_the_address_carried() {
        assert_eq!(uri("127.0.0.1:1", true), "https://127.0.0.1:1");
        assert_eq!(uri("http://127.0.0.1:1", true), "https://127.0.0.1:1");
        assert_eq!(uri("https://h:1", false), "http://h:1");
    }

    #[test]
    fn unreadable_and_non_pem_files_are_refused_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let tls =
            TlsConfig { ca_cert: junk.clone(), cert: dir.path().join("missing.pem"), key: junk.clone(), mutual: false };
        let message = ServerTls::load(&tls).unwrap_err().to_string();
        assert!(message.contains("security.tls.cert") && message.contains("missing.pem"), "{message}");
        let message = ClientTls::load(&tls).unwrap_err().to_string();
        assert!(message.contains("security.tls.ca_cert") && message.contains("no PEM CERTIFICATE"), "{message}");
    }
}
