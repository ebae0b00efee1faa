//! How a process of the cluster connects to another one (coordinator → node,
//! coordinator → coordinator): with TLS when configured (presenting its own
//! certificate under mutual TLS) and with the cluster token when there is one.

use opticache_common::Secret;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::tls::uri;
use crate::{BearerToken, ClientTls, SecurityError};

/// A channel that carries the cluster's credentials.
pub type AuthedChannel = InterceptedService<Channel, BearerToken>;

/// The credentials of the cluster's own links.
#[derive(Clone, Debug, Default)]
pub struct ClusterLink {
    tls: Option<ClientTls>,
    token: BearerToken,
}

impl ClusterLink {
    /// Links with `tls` (none: plaintext) carrying `cluster_token` (none: no token).
    pub fn new(tls: Option<ClientTls>, cluster_token: Option<&Secret>) -> Result<ClusterLink, SecurityError> {
        let token = match cluster_token {
            Some(secret) => BearerToken::new(secret.expose()).map_err(SecurityError::ClusterToken)?,
            None => BearerToken::none(),
        };
        Ok(ClusterLink { tls, token })
    }

    /// An endpoint for `address` (`host:port`) with this link's TLS, if any.
    pub fn endpoint(&self, address: &str) -> Result<Endpoint, String> {
        let endpoint = Endpoint::from_shared(uri(address, self.tls.is_some())).map_err(|e| e.to_string())?;
        match &self.tls {
            Some(tls) => endpoint.tls_config(tls.config()).map_err(|e| e.to_string()),
            None => Ok(endpoint),
        }
    }

    /// `channel` with the cluster token on every call.
    pub fn authed(&self, channel: Channel) -> AuthedChannel {
        InterceptedService::new(channel, self.token.clone())
    }
}
