//! Who may talk to whom in an OptiCache cluster.
//!
//! - [`tokens`]: the token table a process checks bearer tokens against,
//!   built from `security:` (client tokens with roles, and the cluster token).
//! - [`access`]: which role each gRPC method needs.
//! - [`guard`]: the tower layer servers put in front of every service; it
//!   answers UNAUTHENTICATED or PERMISSION_DENIED before any handler runs.
//! - [`tls`]: rustls server and client configurations from `security.tls`.
//! - [`bearer`]: the client-side interceptor that sends a token.
//! - [`link`]: the credentials a process presents to the others.
//! - [`server`]: all of the above for one node or coordinator, read once.
//! - [`dev_certs`]: a development CA and a cluster certificate
//!   (`opticache-dev-certs`, `make certs`, and the tests).
//!
//! With no `security:` section everything here is inert: no layer is added,
//! channels are plaintext, and no header is sent.

pub mod access;
pub mod bearer;
#[cfg(feature = "dev-certs")]
pub mod dev_certs;
pub mod error;
pub mod guard;
pub mod link;
pub mod server;
pub mod tls;
pub mod tokens;

pub use bearer::BearerToken;
pub use error::SecurityError;
pub use guard::{Guard, GuardLayer};
pub use link::{AuthedChannel, ClusterLink};
pub use opticache_common::Secret;
pub use server::ServerSecurity;
pub use tls::{ClientTls, ServerTls};
pub use tokens::TokenTable;

/// The gRPC metadata key that carries a token.
pub const AUTHORIZATION_HEADER: &str = "authorization";
/// The scheme in front of the token: `authorization: Bearer <token>`.
pub const BEARER_PREFIX: &str = "Bearer ";

/// Whether a listen address can be reached only from this machine
/// (an IP in 127.0.0.0/8 or ::1, or `localhost`).
pub fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Logs a warning when `address` is reachable from other machines without TLS or without tokens.
pub fn warn_if_exposed(address: &opticache_common::HostPort, security: &opticache_common::SecurityConfig, what: &str) {
    if is_loopback(address.host()) {
        return;
    }
    let mut missing = Vec::new();
    if security.tls.is_none() {
        missing.push("TLS (security.tls)");
    }
    if security.tokens.is_none() && security.cluster_token.is_none() {
        missing.push("tokens (security.tokens, security.cluster_token)");
    }
    if !missing.is_empty() {
        tracing::warn!(
            address = %address,
            "this {what} listens on a non-loopback address without {}: anyone who can reach it can read and write the cache",
            missing.join(" or ")
        );
    }
}

/// Logs a warning when a node serves TLS but checks no cluster credential:
/// anyone who trusts the CA could then call the node API directly.
pub fn warn_if_node_open(address: &opticache_common::HostPort, security: &opticache_common::SecurityConfig) {
    if security.tls.as_ref().is_some_and(|t| !t.mutual) && security.cluster_token.is_none() {
        tracing::warn!(
            address = %address,
            "this node takes data calls from any TLS client: set security.tls.mutual or security.cluster_token \
             so that only the cluster's coordinators and holders of its credentials can call it"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_recognised_in_every_spelling() {
        for host in ["127.0.0.1", "127.3.4.5", "::1", "[::1]", "localhost", "LOCALHOST"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["0.0.0.0", "10.0.0.1", "::", "example.com", "192.168.1.1"] {
            assert!(!is_loopback(host), "{host}");
        }
    }
}
