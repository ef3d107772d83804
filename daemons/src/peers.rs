//! Client channels to the other houses, with this node's credentials and TLS.
//!
//! One lazily connected channel per house endpoint, shared by every client of that house
//! (router dispatch, health probes, approval requests). A hot reload that moves a house to a
//! new endpoint gets a new channel on the next call; the old one is dropped with its last user.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use uni_wizard::{Error, ErrorCode, House};
use uni_wizard_proto::v1::{
    router_client::RouterClient, sovereign_client::SovereignClient, worker_client::WorkerClient,
};

use crate::auth::{Authed, Credentials};
use crate::config::{DaemonConfig, TlsConfig, parse_endpoint};
use crate::live::Live;

/// TLS material for client connections, read once.
#[derive(Clone)]
pub struct ClientTls {
    ca: Certificate,
    identity: Identity,
    server_name: Option<String>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Reads the CA, certificate and key files.
    ///
    /// # Errors
    /// E4001 naming the unreadable file.
    pub fn load(tls: &TlsConfig) -> Result<ClientTls, Error> {
        Ok(ClientTls {
            ca: Certificate::from_pem(read(&tls.ca)?),
            identity: Identity::from_pem(read(&tls.cert)?, read(&tls.key)?),
            server_name: tls.server_name.clone(),
        })
    }
}

pub use crate::config::read_tls_file as read;

/// HTTP/2 pings between daemons: a peer that stops answering them is cut off (health finds a
/// hung worker sooner; this only bounds what nobody else watches).
pub const DAEMON_PINGS: Pings = Pings { every: Duration::from_secs(10), within: Duration::from_secs(5) };

/// HTTP/2 pings of the CLI: a router that stops answering (frozen, cut off without a reset)
/// is left within about three seconds, so the CLI asks the next one (with the same key)
/// instead of waiting on it; a long call on a router that answers pings is not cut.
pub const CLI_PINGS: Pings = Pings { every: Duration::from_secs(1), within: Duration::from_secs(2) };

/// How often a channel pings its peer, and how long it waits for the answer before it closes
/// the connection (failing the calls on it).
#[derive(Debug, Clone, Copy)]
pub struct Pings {
    /// Between two pings.
    pub every: Duration,
    /// The longest wait for a ping's answer.
    pub within: Duration,
}

/// A channel to `endpoint`, TLS when `tls` is given (plaintext otherwise: loopback only,
/// which config validation has already insisted on), pinging as `pings` says.
///
/// # Errors
/// E4001 when the endpoint or TLS settings are unusable.
pub fn channel(
    endpoint: &str,
    tls: Option<&ClientTls>,
    connect_timeout: Duration,
    pings: Pings,
) -> Result<Channel, Error> {
    let bad = |e: String| Error::new(ErrorCode::ConfigInvalid, format!("endpoint `{endpoint}`: {e}"));
    let (host, _) = parse_endpoint(endpoint).map_err(bad)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut ep = Endpoint::from_shared(format!("{scheme}://{endpoint}"))
        .map_err(|e| bad(e.to_string()))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(pings.every)
        .keep_alive_timeout(pings.within);
    if let Some(t) = tls {
        let name = t.server_name.clone().unwrap_or(host);
        let cfg = ClientTlsConfig::new().ca_certificate(t.ca.clone()).identity(t.identity.clone()).domain_name(name);
        ep = ep.tls_config(cfg).map_err(|e| bad(e.to_string()))?;
    }
    Ok(ep.connect_lazy())
}

/// Connections kept to each house. One HTTP/2 connection multiplexes every call, but its
/// single buffer task caps throughput on a busy router; a few, used in turn, lift that cap.
pub const CONNECTIONS_PER_PEER: usize = 4;

/// A house's endpoint and the connections open to it.
type Connections = (String, Vec<Channel>);

/// Channels to every house, as this node.
#[derive(Clone)]
pub struct Peers {
    live: Live,
    tls: Option<ClientTls>,
    channels: Arc<Mutex<HashMap<House, Connections>>>,
    next: Arc<std::sync::atomic::AtomicUsize>,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers").finish_non_exhaustive()
    }
}

impl Peers {
    /// Peers of the node `live` describes.
    ///
    /// # Errors
    /// E4001 when the TLS files cannot be read.
    pub fn new(live: Live) -> Result<Peers, Error> {
        let tls = match &live.get().tls {
            Some(t) => Some(ClientTls::load(t)?),
            None => None,
        };
        Ok(Peers {
            live,
            tls,
            channels: Arc::new(Mutex::new(HashMap::new())),
            next: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        })
    }

    /// This node's credentials, from the live config.
    ///
    /// # Errors
    /// E4001 when the token cannot travel as metadata.
    pub fn credentials(&self) -> Result<Credentials, Error> {
        let c = self.live.get();
        Credentials::new(c.house, &c.me().auth_token)
    }

    fn channel(&self, house: House) -> Result<Channel, Error> {
        let config: Arc<DaemonConfig> = self.live.get();
        let entry = config
            .houses
            .get(&house)
            .ok_or_else(|| Error::new(ErrorCode::ConfigInvalid, format!("house {house} has no entry in `houses`")))?;
        let turn = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % CONNECTIONS_PER_PEER;
        let mut map = self.channels.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((ep, chs)) = map.get(&house)
            && *ep == entry.endpoint
        {
            return Ok(chs[turn].clone());
        }
        let timeout = Duration::from_millis(config.health.timeout_ms.max(200));
        let chs = (0..CONNECTIONS_PER_PEER)
            .map(|_| channel(&entry.endpoint, self.tls.as_ref(), timeout, DAEMON_PINGS))
            .collect::<Result<Vec<_>, _>>()?;
        let ch = chs[turn].clone();
        map.insert(house, (entry.endpoint.clone(), chs));
        Ok(ch)
    }

    /// The raw channel to `house`, with credentials (for the health client).
    ///
    /// # Errors
    /// E4001 when `house` is unknown or its endpoint unusable.
    pub fn authed(&self, house: House) -> Result<Authed, Error> {
        Ok(tonic::service::interceptor::InterceptedService::new(self.channel(house)?, self.credentials()?))
    }

    /// A worker client for `house`.
    ///
    /// # Errors
    /// As [`Peers::authed`].
    pub fn worker(&self, house: House) -> Result<WorkerClient<Authed>, Error> {
        Ok(WorkerClient::new(self.authed(house)?))
    }

    /// A router client for `house`.
    ///
    /// # Errors
    /// As [`Peers::authed`].
    pub fn router(&self, house: House) -> Result<RouterClient<Authed>, Error> {
        Ok(RouterClient::new(self.authed(house)?))
    }

    /// Timmy's Sovereign service.
    ///
    /// # Errors
    /// As [`Peers::authed`].
    pub fn sovereign(&self) -> Result<SovereignClient<Authed>, Error> {
        Ok(SovereignClient::new(self.authed(House::Timmy)?))
    }
}
