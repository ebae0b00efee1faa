//! The client side of tokens: an interceptor that puts `authorization:
//! Bearer <token>` on every call of a channel, or nothing when there is no token.

use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::{AUTHORIZATION_HEADER, BEARER_PREFIX};

/// Sends a token with each call. `Debug` does not show the token.
#[derive(Clone, Default)]
pub struct BearerToken(Option<MetadataValue<tonic::metadata::Ascii>>);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "BearerToken(<redacted>)" } else { "BearerToken(none)" })
    }
}

impl BearerToken {
    /// No token: calls go out as they are.
    pub fn none() -> BearerToken {
        BearerToken(None)
    }

    /// `token`, which must be printable ASCII (as the config requires).
    pub fn new(token: &str) -> Result<BearerToken, String> {
        let mut value: MetadataValue<tonic::metadata::Ascii> = format!("{BEARER_PREFIX}{token}")
            .parse()
            .map_err(|_| "a token must be printable ASCII without spaces".to_string())?;
        value.set_sensitive(true);
        Ok(BearerToken(Some(value)))
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert(AUTHORIZATION_HEADER, value.clone());
        }
        Ok(request)
    }
}
