//! The health daemon: probes every house and writes what it finds into the membership view
//! the router routes by ([`crate::membership`]).
//!
//! Every `health.interval_ms` each house in `houses:` is asked `grpc.health.v1/Check` and, when
//! serving, `Worker/Capacity`, each under `health.timeout_ms`. `health.down_after` consecutive
//! failures mark a house down; one success marks it up again. The router also reports a
//! dispatch that could not reach a worker ([`Membership::report_unreachable`]), which marks the
//! house down at once instead of waiting for the next probes. With the defaults (500 ms, 400 ms,
//! 2) a killed worker is down within about 1.5 s.

use std::time::Duration;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use uni_wizard::House;
use uni_wizard_proto::v1::CapacityRequest;

use crate::live::Live;
use crate::membership::Membership;
use crate::peers::Peers;

/// Probes one house once: health, then capacity.
///
/// # Errors
/// A sentence saying why the house does not count as up.
pub async fn probe(
    peers: &Peers,
    house: House,
    timeout: Duration,
) -> Result<uni_wizard_proto::v1::CapacityResponse, String> {
    let once = async {
        let mut health = HealthClient::new(peers.authed(house).map_err(|e| e.message)?);
        let status = health
            .check(HealthCheckRequest { service: String::new() })
            .await
            .map_err(|s| format!("health check: {:?} {}", s.code(), s.message()))?
            .into_inner()
            .status();
        if status != ServingStatus::Serving {
            return Err(format!("health check answered {status:?}"));
        }
        let mut worker = peers.worker(house).map_err(|e| e.message)?;
        match worker.capacity(CapacityRequest {}).await {
            Ok(c) => Ok(c.into_inner()),
            // A node that serves no worker (a router-only node) is up with no capacity.
            Err(s) if s.code() == tonic::Code::Unimplemented => Ok(Default::default()),
            Err(s) => Err(format!("capacity: {:?} {}", s.code(), s.message())),
        }
    };
    tokio::time::timeout(timeout, once).await.map_err(|_| format!("no answer within {} ms", timeout.as_millis()))?
}

/// Probes every house of the live config until `stop` fires.
pub async fn run_prober(
    live: Live,
    peers: Peers,
    membership: Membership,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let config = live.get();
        let timeout = Duration::from_millis(config.health.timeout_ms);
        let probes = config.houses.keys().map(|&house| {
            let (peers, membership) = (&peers, &membership);
            let down_after = config.health.down_after;
            async move {
                match probe(peers, house, timeout).await {
                    Ok(c) => membership.report_up(house, Some(&c)),
                    Err(why) => membership.report_failure(house, down_after, why),
                }
            }
        });
        futures::future::join_all(probes).await;
        tokio::select! {
            _ = tokio::time::sleep(config.probe_interval()) => {}
            _ = stop.changed() => return,
        }
    }
}
