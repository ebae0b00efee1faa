//! How a process of the cluster connects to another one (coordinator → node,
//! coordinator → coordinator): with TLS when configured (presenting its own
//! certificate under mutual TLS) and with the cluster token when there is one.

use opticache_common::{SecretSource, SecurityConfig};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use opticache_common::config::security::read_secret_file;

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
    /// Reads what `security:` says the cluster's links use.
    pub fn load(security: &SecurityConfig) -> Result<ClusterLink, SecurityError> {
        let tls = security.tls.as_ref().map(ClientTls::load).transpose()?;
        let secret = match &security.cluster_token {
            None => None,
            Some(SecretSource::Inline(secret)) => Some(secret.clone()),
            Some(SecretSource::File(path)) => Some(read_secret_file(path)?),
        };
        let token = match secret {
            // The config checked the token's text already; a failure here is a bug, reported all the same.
            Some(s) => BearerToken::new(s.expose()).map_err(|reason| {
                SecurityError::Tokens(opticache_common::ConfigError::InvalidValue {
                    file: Default::default(),
                    key: "security.cluster_token".into(),
                    reason,
                })
            })?,
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
