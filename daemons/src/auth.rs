//! Authentication of every RPC: the caller's house token, bound to the house it claims.
//!
//! A caller sends two metadata entries on every call, reflection included:
//! `authorization: Bearer <token>` and `x-uw-house: <house>`. [`AuthLayer`] wraps the whole
//! gRPC server, so no handler can forget it. The one exception is [`OPEN`]: `grpc.health.v1`
//! `Check` and `Watch` answer anyone, credentials or not (they are not even looked at), so
//! standard probes (`grpc_health_probe`, a Kubernetes `grpc` probe, a load balancer) can use
//! them; they tell a serving status and nothing else. Every other method of every service,
//! reflection included, needs credentials. The presented token is compared, in constant time,
//! against every house's token of the live config (after hashing both sides, so neither the
//! token nor its length leaks through timing):
//!
//! | what came | answer |
//! |---|---|
//! | no token, or no/unknown house | `UNAUTHENTICATED`, E5001 |
//! | a token no house has | `UNAUTHENTICATED`, E5001 |
//! | another house's token | `PERMISSION_DENIED`, E5002 (impersonation) |
//! | the claimed house's token | the call goes on, with [`Peer`] in its extensions |
//!
//! Handlers then ask [`peer`] who called and decide what that house may do (E5003).
//! Tokens are never logged; the log says which house was claimed and why it was refused.

use std::task::{Context, Poll};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use uni_wizard::{Error, ErrorCode, House};

use crate::config::Secret;
use crate::live::Live;
use crate::wire;

/// Metadata key naming the house the caller acts as.
pub const HOUSE_HEADER: &str = "x-uw-house";

/// The only gRPC methods served without credentials: health's serving status, for probes
/// that cannot send our headers. Matched exactly, so no other path of the service is open.
pub const OPEN: [&str; 2] = ["/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"];

/// Who made an authenticated call; in every request's extensions after [`AuthLayer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// The caller's house, proven by its token.
    pub house: House,
}

/// The authenticated caller of a request.
///
/// # Errors
/// `UNAUTHENTICATED` when the request did not pass through [`AuthLayer`] (a wiring bug).
pub fn peer<T>(req: &tonic::Request<T>) -> Result<Peer, tonic::Status> {
    req.extensions()
        .get::<Peer>()
        .copied()
        .ok_or_else(|| wire::status(&Error::new(ErrorCode::Unauthenticated, "request was not authenticated")))
}

/// Refuses unless the caller is one of `allowed`.
///
/// # Errors
/// `PERMISSION_DENIED` with E5003 naming the caller and the call.
pub fn require(peer: Peer, allowed: &[House], what: &str) -> Result<(), tonic::Status> {
    if allowed.contains(&peer.house) {
        return Ok(());
    }
    let names: Vec<&str> = allowed.iter().map(|h| h.as_str()).collect();
    Err(wire::status(
        &Error::new(ErrorCode::Forbidden, format!("{} may not {what} (allowed: {})", peer.house, names.join(", ")))
            .with_details(serde_json::json!({ "house": peer.house, "call": what, "allowed": names })),
    ))
}

/// Checks one call's credentials against the fleet's tokens.
///
/// # Errors
/// E5001 for missing or unknown credentials, E5002 for another house's token.
pub fn authenticate(
    houses: impl Iterator<Item = (House, Secret)>,
    claimed: Option<&str>,
    authorization: Option<&str>,
) -> Result<Peer, Error> {
    let token = authorization.and_then(|v| v.strip_prefix("Bearer ")).map(str::trim).unwrap_or("");
    if token.is_empty() {
        return Err(Error::new(ErrorCode::Unauthenticated, "no credentials: send `authorization: Bearer <token>`"));
    }
    let Some(claimed) = claimed.and_then(|c| c.parse::<House>().ok()) else {
        return Err(Error::new(ErrorCode::Unauthenticated, format!("no valid `{HOUSE_HEADER}` header")));
    };
    let presented = Sha256::digest(token.as_bytes());
    // Compare with every house, always, so the time taken says nothing about which matched.
    let mut matched: Option<House> = None;
    for (house, secret) in houses {
        let expected = Sha256::digest(secret.expose().as_bytes());
        if bool::from(presented.ct_eq(&expected)) {
            matched = Some(house);
        }
    }
    match matched {
        Some(h) if h == claimed => Ok(Peer { house: h }),
        Some(h) => {
            Err(Error::new(ErrorCode::Impersonation, format!("authenticated as {h} but claims to be {claimed}"))
                .with_details(serde_json::json!({ "claimed": claimed, "authenticated": h })))
        }
        None => Err(Error::new(ErrorCode::Unauthenticated, format!("bad credentials for {claimed}"))
            .with_details(serde_json::json!({ "claimed": claimed }))),
    }
}

/// Wraps a gRPC server so that every call is authenticated against the live config.
#[derive(Clone)]
pub struct AuthLayer {
    live: Live,
}

impl AuthLayer {
    /// Authenticates against `live`'s `houses:` (hot-reloaded tokens apply at once).
    pub fn new(live: Live) -> AuthLayer {
        AuthLayer { live }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService { inner, live: self.live.clone() }
    }
}

/// The service [`AuthLayer`] makes.
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    live: Live,
}

impl<S, B> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::Either<S::Future, std::future::Ready<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if OPEN.contains(&req.uri().path()) {
            return futures::future::Either::Left(self.inner.call(req));
        }
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        let config = self.live.get();
        let houses = config.houses.iter().map(|(h, e)| (*h, e.auth_token.clone()));
        match authenticate(houses, header(HOUSE_HEADER), header("authorization")) {
            Ok(peer) => {
                req.extensions_mut().insert(peer);
                futures::future::Either::Left(self.inner.call(req))
            }
            Err(e) => {
                metrics::counter!("uw_auth_refused_total", "code" => e.code.as_str()).increment(1);
                tracing::warn!(code = e.code.as_str(), path = %req.uri().path(), reason = %e.message, "refused a call");
                futures::future::Either::Right(std::future::ready(Ok(wire::status(&e).into_http())))
            }
        }
    }
}

/// Adds a house's credentials to every outgoing call.
#[derive(Clone)]
pub struct Credentials {
    house: MetadataValue<tonic::metadata::Ascii>,
    bearer: MetadataValue<tonic::metadata::Ascii>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("house", &self.house).finish_non_exhaustive()
    }
}

impl Credentials {
    /// Credentials of `house` with `token`.
    ///
    /// # Errors
    /// E4001 when the token is not printable ASCII (it could not travel as metadata).
    pub fn new(house: House, token: &Secret) -> Result<Credentials, Error> {
        let bearer = format!("Bearer {}", token.expose()).parse().map_err(|_| {
            Error::new(ErrorCode::ConfigInvalid, format!("the auth token of {house} is not printable ASCII"))
        })?;
        let house =
            house.as_str().parse().map_err(|_| Error::new(ErrorCode::ConfigInvalid, "house name is not ASCII"))?;
        Ok(Credentials { house, bearer })
    }
}

impl Interceptor for Credentials {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert(HOUSE_HEADER, self.house.clone());
        req.metadata_mut().insert("authorization", self.bearer.clone());
        Ok(req)
    }
}

/// A shared handle for a `Credentials`-wrapped client (clients are cheap to clone).
pub type Authed = tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Credentials>;

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet() -> Vec<(House, Secret)> {
        vec![
            (House::Timmy, Secret::new("timmy-token-0123456789")),
            (House::Allegro, Secret::new("allegro-token-0123456789")),
        ]
    }

    /// Proves the claimed house's own token passes and names the peer.
    #[test]
    fn own_token_passes() {
        let p = authenticate(fleet().into_iter(), Some("allegro"), Some("Bearer allegro-token-0123456789"));
        assert_eq!(p.ok(), Some(Peer { house: House::Allegro }));
    }

    /// Proves no token, a wrong token and an unknown house are E5001, and Allegro's token
    /// claiming Timmy is E5002.
    #[test]
    fn missing_wrong_and_impersonating_credentials_are_refused() {
        let code = |house: Option<&str>, auth: Option<&str>| {
            authenticate(fleet().into_iter(), house, auth).map_err(|e| e.code).err()
        };
        assert_eq!(code(Some("timmy"), None), Some(ErrorCode::Unauthenticated));
        assert_eq!(code(Some("timmy"), Some("Bearer nope")), Some(ErrorCode::Unauthenticated));
        assert_eq!(code(Some("nobody"), Some("Bearer timmy-token-0123456789")), Some(ErrorCode::Unauthenticated));
        assert_eq!(code(Some("timmy"), Some("Bearer allegro-token-0123456789")), Some(ErrorCode::Impersonation));
        assert_eq!(code(Some("timmy"), Some("Basic timmy-token-0123456789")), Some(ErrorCode::Unauthenticated));
    }
}
