//! What a [`Client`](crate::Client) is built from: the coordinators to talk
//! to and how long and how often to try them.
//!
//! Invariant after [`ClientConfig::validate`]: at least one coordinator, at
//! least one attempt, and non-zero timeouts, so the retry loop always makes
//! at least one attempt and every attempt ends.

use std::path::PathBuf;
use std::time::Duration;

use opticache_security::Secret;

use crate::error::{ClientError, Result};
use crate::retry;

/// Per-attempt deadline when none is configured: the standby takes over
/// within 2 s of a lost primary, so an attempt that waited longer than that
/// on one coordinator should have gone to the other.
pub const DEFAULT_TIMEOUT_MS: u64 = 2_000;

/// Attempts for calls that may be retried when none is configured: one per
/// coordinator of a primary/standby pair, plus one for a primary that came
/// back while we tried the standby.
pub const DEFAULT_RETRIES: u32 = 3;

/// How long to wait for a TCP connection when none is configured. Shorter
/// than the attempt deadline so that a black-holed coordinator shows up as a
/// connect error, which is safe to retry even for UpdateCache.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 1_000;

/// The primary and the standby of the local cluster (`config/config.yaml`).
pub const DEFAULT_COORDINATORS: [&str; 2] = ["127.0.0.1:50051", "127.0.0.1:50052"];

/// How to reach the cluster. Build it with [`ClientConfig::new`] or
/// `ClientConfig { coordinators, ..Default::default() }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Every coordinator, `host:port` (`http://host:port` is accepted too),
    /// primary and standby alike: both serve the data path, and the client
    /// fails over between them in this order.
    pub coordinators: Vec<String>,
    /// Deadline of one attempt of a unary call, and the longest a stream may
    /// go without progress.
    pub timeout_ms: u64,
    /// Attempts in total (not extra ones) for a call that may be retried.
    pub retries: u32,
    /// Deadline of establishing a TCP connection to one coordinator.
    pub connect_timeout_ms: u64,
    /// Overall deadline of a call, attempts and pauses between them
    /// included. `None`: as long as all attempts and pauses may take
    /// ([`retry::RetryPolicy::natural_deadline`]); set it lower to bound the
    /// wait. Streams are bounded by their progress instead once data flows.
    pub deadline_ms: Option<u64>,
    /// Sent as `authorization: Bearer <token>` on every call when the cluster has tokens on.
    pub token: Option<Secret>,
    /// TLS: trust only the CA in this PEM file (`security.tls.ca_cert` of the cluster). `None`: plaintext.
    pub tls_ca_cert: Option<PathBuf>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            coordinators: DEFAULT_COORDINATORS.iter().map(|a| (*a).to_owned()).collect(),
            timeout_ms: DEFAULT_TIMEOUT_MS,
            retries: DEFAULT_RETRIES,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            deadline_ms: None,
            token: None,
            tls_ca_cert: None,
        }
    }
}

impl ClientConfig {
    /// The defaults, with these coordinators.
    pub fn new<S: Into<String>>(coordinators: impl IntoIterator<Item = S>) -> Self {
        Self { coordinators: coordinators.into_iter().map(Into::into).collect(), ..Self::default() }
    }

    /// Rejects configurations under which a call could never be attempted or
    /// never end.
    pub fn validate(&self) -> Result<()> {
        if self.coordinators.is_empty() {
            return Err(ClientError::InvalidConfig("no coordinator address given".into()));
        }
        if let Some(bad) = self.coordinators.iter().find(|a| a.trim().is_empty()) {
            return Err(ClientError::InvalidConfig(format!("empty coordinator address {bad:?}")));
        }
        if self.retries == 0 {
            return Err(ClientError::InvalidConfig("retries must be at least 1 (it counts attempts)".into()));
        }
        if self.timeout_ms == 0 || self.connect_timeout_ms == 0 || self.deadline_ms == Some(0) {
            return Err(ClientError::InvalidConfig("timeouts must be at least 1 ms".into()));
        }
        Ok(())
    }

    /// The retry policy these settings describe.
    pub fn retry_policy(&self) -> retry::RetryPolicy {
        let timeout = Duration::from_millis(self.timeout_ms);
        let mut policy = retry::RetryPolicy::new(self.retries, timeout);
        if let Some(ms) = self.deadline_ms {
            policy.deadline = Duration::from_millis(ms);
        }
        policy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = ClientConfig::default();
        assert_eq!(c.coordinators, vec!["127.0.0.1:50051".to_owned(), "127.0.0.1:50052".to_owned()]);
        assert_eq!((c.timeout_ms, c.retries, c.connect_timeout_ms, c.deadline_ms), (2_000, 3, 1_000, None));
        c.validate().expect("defaults are valid");
    }

    #[test]
    fn new_keeps_the_order_of_coordinators() {
        let c = ClientConfig::new(["b:1", "a:2"]);
        assert_eq!(c.coordinators, vec!["b:1".to_owned(), "a:2".to_owned()]);
        assert_eq!(c.timeout_ms, DEFAULT_TIMEOUT_MS);
    }

    #[test]
    fn validate_rejects_what_could_never_run() {
        let cases = [
            ClientConfig { coordinators: vec![], ..Default::default() },
            ClientConfig::new([" "]),
            ClientConfig { retries: 0, ..Default::default() },
            ClientConfig { timeout_ms: 0, ..Default::default() },
            ClientConfig { connect_timeout_ms: 0, ..Default::default() },
            ClientConfig { deadline_ms: Some(0), ..Default::default() },
        ];
        for c in cases {
            let err = c.validate().expect_err("invalid");
            assert!(matches!(err, ClientError::InvalidConfig(_)), "{c:?} -> {err:?}");
        }
    }

    #[test]
    fn an_explicit_deadline_replaces_the_natural_one() {
        let c = ClientConfig { timeout_ms: 100, retries: 2, ..Default::default() };
        let natural = c.retry_policy();
        assert_eq!(natural.deadline, natural.natural_deadline());
        let capped = ClientConfig { deadline_ms: Some(150), ..c }.retry_policy();
        assert_eq!(capped.deadline, Duration::from_millis(150));
        assert_eq!(capped.attempt_timeout, Duration::from_millis(100));
    }
}
