//! What a node or a coordinator serves with, read once at start-up: its TLS,
//! the guard in front of its services, and (for a coordinator) the
//! credentials of its own links to other processes, built from the same
//! files and token rather than read again.

use opticache_common::{Secret, SecurityConfig};
use tonic::transport::Server;

use crate::tokens::cluster_token;
use crate::{ClusterLink, Guard, GuardLayer, SecurityError, ServerTls, TokenTable};

/// A server process's security, everything off when `security:` is absent.
#[derive(Debug)]
pub struct ServerSecurity {
    config: SecurityConfig,
    tls: Option<ServerTls>,
    guard: GuardLayer,
    cluster_token: Option<Secret>,
}

impl ServerSecurity {
    /// Reads every certificate, key and token file `security` points to; a bad one stops the start.
    pub fn load(security: &SecurityConfig) -> Result<ServerSecurity, SecurityError> {
        let tls = security.tls.as_ref().map(ServerTls::load).transpose()?;
        let cluster_token = cluster_token(security)?;
        let guard = Guard {
            tokens: TokenTable::with_cluster_token(security, cluster_token.as_ref())?,
            cluster_needs_client_cert: tls.as_ref().is_some_and(|t| t.mutual),
        };
        Ok(ServerSecurity { config: security.clone(), tls, guard: GuardLayer::new(Some(guard)), cluster_token })
    }

    /// A tonic server builder serving TLS when configured; add `guard_layer()` and the services.
    pub fn server(&self) -> Result<Server, SecurityError> {
        let builder = Server::builder();
        match (&self.tls, &self.config.tls) {
            (Some(tls), Some(paths)) => builder.tls_config(tls.config.clone()).map_err(|e| SecurityError::Tls {
                cert: paths.cert.clone(),
                key: paths.key.clone(),
                reason: e.to_string(),
            }),
            _ => Ok(builder),
        }
    }

    /// The layer that checks each call's credentials (a pass-through when nothing is configured).
    pub fn guard_layer(&self) -> GuardLayer {
        self.guard.clone()
    }

    /// How this process connects to the others: TLS from the same files, the same cluster token.
    pub fn cluster_link(&self) -> Result<ClusterLink, SecurityError> {
        let tls = match (&self.tls, &self.config.tls) {
            (Some(server), Some(paths)) => Some(server.client(paths)?),
            _ => None,
        };
        ClusterLink::new(tls, self.cluster_token.as_ref())
    }
}
