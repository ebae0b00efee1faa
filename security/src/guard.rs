//! The server side: a tower layer in front of every gRPC service of a
//! process that lets a call through only with the credentials its method
//! needs ([`crate::access`]).
//!
//! Invariants: a refused call never reaches a handler, so nothing is read or
//! written for it; a missing or unknown token is UNAUTHENTICATED, a known
//! token whose role is too weak is PERMISSION_DENIED; with mutual TLS, calls
//! needing the cluster credential also need a client certificate (rustls has
//! already verified it against the cluster CA). Logs name the token's holder,
//! never the token.

use std::sync::Arc;
use std::task::{Context, Poll};

use opticache_common::Role;
use tonic::body::Body;
use tonic::codegen::{http, BoxFuture};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::Status;
use tower::util::Either;
use tower::{Layer, Service};

use crate::access::{method_name, required, Access};
use crate::{TokenTable, AUTHORIZATION_HEADER};

/// What a process checks on each call.
#[derive(Debug)]
pub struct Guard {
    pub tokens: TokenTable,
    /// Mutual TLS: the cluster credential includes a verified client certificate.
    pub cluster_needs_client_cert: bool,
}

impl Guard {
    /// Whether this guard checks anything at all.
    pub fn is_on(&self) -> bool {
        self.tokens.is_on() || self.cluster_needs_client_cert
    }

    /// Decides a call to `path` that carried `authorization` (the header's
    /// value) over a connection that did or did not present a client certificate.
    pub fn check(&self, path: &str, authorization: Option<&[u8]>, client_cert: bool) -> Result<(), Status> {
        let Access::Needs(role) = required(path) else { return Ok(()) };
        let method = method_name(path);
        if role == Role::Cluster && self.cluster_needs_client_cert && !client_cert {
            tracing::debug!(method, "refused: no client certificate");
            return Err(Status::unauthenticated(format!(
                "{method} needs the cluster's client certificate (mutual TLS)"
            )));
        }
        if !self.tokens.token_needed_for(role) {
            return Ok(());
        }
        let Some(value) = authorization else {
            tracing::debug!(method, "refused: no token");
            return Err(Status::unauthenticated(format!(
                "{method} needs a token: send the metadata `authorization: Bearer <token>`"
            )));
        };
        let token = strip_bearer(value).ok_or_else(|| {
            tracing::debug!(method, "refused: authorization is not a bearer token");
            Status::unauthenticated("the authorization metadata must be `Bearer <token>`")
        })?;
        let Some(holder) = self.tokens.lookup(token) else {
            tracing::debug!(method, "refused: unknown token");
            return Err(Status::unauthenticated(format!("{method}: the token is not valid")));
        };
        if holder.role < role {
            tracing::debug!(method, holder = holder.name, role = holder.role.name(), "refused: role too weak");
            return Err(Status::permission_denied(format!(
                "{method} needs the {} role; the token of {:?} has {}",
                role.name(),
                holder.name,
                holder.role.name()
            )));
        }
        Ok(())
    }
}

/// The `Bearer` scheme is case-insensitive (RFC 6750 follows RFC 7235).
fn strip_bearer(value: &[u8]) -> Option<&[u8]> {
    let scheme = b"bearer ";
    if value.len() > scheme.len() && value[..scheme.len()].eq_ignore_ascii_case(scheme) {
        Some(&value[scheme.len()..])
    } else {
        None
    }
}

/// The layer to put on a server: `Server::builder().layer(GuardLayer::new(guard))`.
/// With `None` (or a guard that checks nothing) calls pass straight through.
#[derive(Clone, Debug)]
pub struct GuardLayer(Option<Arc<Guard>>);

impl GuardLayer {
    pub fn new(guard: Option<Guard>) -> GuardLayer {
        GuardLayer(guard.filter(Guard::is_on).map(Arc::new))
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = Either<Guarded<S>, S>;

    fn layer(&self, inner: S) -> Self::Service {
        match &self.0 {
            Some(guard) => Either::Left(Guarded { guard: guard.clone(), inner }),
            None => Either::Right(inner),
        }
    }
}

/// A service behind a [`Guard`].
#[derive(Clone, Debug)]
pub struct Guarded<S> {
    guard: Arc<Guard>,
    inner: S,
}

impl<S, B> Service<http::Request<B>> for Guarded<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let client_cert = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(TlsConnectInfo::peer_certs)
            .is_some_and(|certs| !certs.is_empty());
        let authorization = request.headers().get(AUTHORIZATION_HEADER).map(|v| v.as_bytes());
        match self.guard.check(request.uri().path(), authorization, client_cert) {
            Ok(()) => Box::pin(self.inner.call(request)),
            Err(status) => Box::pin(std::future::ready(Ok(status.into_http()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use opticache_common::{Secret, SecretSource, SecurityConfig, TokenEntry, TokenSource};
    use tonic::Code;

    use super::*;

    const READER: &[u8] = b"Bearer rrrrrrrrrrrrrrrrrrrr";
    const WRITER: &[u8] = b"bearer wwwwwwwwwwwwwwwwwwww";
    const ADMIN: &[u8] = b"BEARER aaaaaaaaaaaaaaaaaaaa";
    const CLUSTER: &[u8] = b"Bearer cccccccccccccccccccc";

    fn guard(client_tokens: bool, mutual: bool) -> Guard {
        let e = |name: &str, token: &str, role| TokenEntry { name: name.into(), token: Secret::new(token), role };
        let security = SecurityConfig {
            tls: None,
            tokens: client_tokens.then(|| {
                TokenSource::Inline(vec![
                    e("reader", "rrrrrrrrrrrrrrrrrrrr", Role::Read),
                    e("writer", "wwwwwwwwwwwwwwwwwwww", Role::Write),
                    e("ops", "aaaaaaaaaaaaaaaaaaaa", Role::Admin),
                ])
            }),
            cluster_token: Some(SecretSource::Inline(Secret::new("cccccccccccccccccccc"))),
        };
        Guard { tokens: TokenTable::load(&security).unwrap(), cluster_needs_client_cert: mutual }
    }

    fn code(result: Result<(), Status>) -> Option<Code> {
        result.err().map(|s| s.code())
    }

    #[test]
    fn roles_reach_what_they_may_and_no_further() {
        let g = guard(true, false);
        let read = "/opticache.v1.OptiCache/ReadCache";
        let write = "/opticache.v1.OptiCache/WriteCache";
        let status = "/opticache.v1.OptiCache/ClusterStatus";
        let node = "/opticache.node.v1.Node/Put";
        assert_eq!(code(g.check(read, Some(READER), false)), None);
        assert_eq!(code(g.check(write, Some(READER), false)), Some(Code::PermissionDenied));
        assert_eq!(code(g.check(write, Some(WRITER), false)), None);
        assert_eq!(code(g.check(status, Some(WRITER), false)), Some(Code::PermissionDenied));
        assert_eq!(code(g.check(status, Some(ADMIN), false)), None);
        assert_eq!(code(g.check(node, Some(ADMIN), false)), Some(Code::PermissionDenied));
        assert_eq!(code(g.check(node, Some(CLUSTER), false)), None);
        assert_eq!(code(g.check(write, Some(CLUSTER), false)), None);
    }

    #[test]
    fn missing_malformed_and_wrong_tokens_are_unauthenticated_and_not_echoed() {
        let g = guard(true, false);
        let write = "/opticache.v1.OptiCache/WriteCache";
        for header in [
            None,
            Some(&b"rrrrrrrrrrrrrrrrrrrr"[..]),
            Some(b"Basic rrrrrrrrrrrrrrrrrrrr"),
            Some(b"Bearer "),
            Some(b"Bearer rrrrrrrrrrrrrrrrrrrX"),
            Some(b"Bearer  rrrrrrrrrrrrrrrrrrrr"),
        ] {
            let status = g.check(write, header, false).unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated, "{header:?}");
            assert!(!status.message().contains("rrrrrrrr"), "{}", status.message());
        }
        assert_eq!(code(g.check("/grpc.health.v1.Health/Check", None, false)), None);
    }

    #[test]
    fn without_client_tokens_the_public_api_is_open_and_the_nodes_are_not() {
        let g = guard(false, false);
        assert_eq!(code(g.check("/opticache.v1.OptiCache/WriteCache", None, false)), None);
        assert_eq!(code(g.check("/opticache.node.v1.Node/Put", None, false)), Some(Code::Unauthenticated));
        assert_eq!(code(g.check("/opticache.node.v1.Node/Put", Some(CLUSTER), false)), None);
    }

    #[test]
    fn with_mutual_tls_the_cluster_credential_includes_a_client_certificate() {
        let g = guard(false, true);
        let peer = "/opticache.coordinator.v1.Peer/Exchange";
        assert_eq!(code(g.check(peer, Some(CLUSTER), false)), Some(Code::Unauthenticated));
        assert_eq!(code(g.check(peer, Some(CLUSTER), true)), None);
        assert_eq!(code(g.check(peer, None, true)), Some(Code::Unauthenticated));
        assert_eq!(code(g.check("/opticache.v1.OptiCache/ReadCache", None, false)), None);
    }
}
