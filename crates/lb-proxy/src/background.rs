//! Background tasks per upstream: discovery feeding new snapshots, the
//! balancer's timer (slow start, peak-EWMA decay) and active health checks.

use std::sync::Arc;
use std::time::Duration;

use lb_core::{Balancer, Clock, EndpointSet};
use lb_discovery::{ChangeStream, DnsConfig, DnsQuery, DnsSource, FileSource, changes, watch_snapshots};
use lb_health::prober::{ProbeSet, Prober};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Config, Discovery, DnsDiscovery};
use crate::health::active_check_config;
use crate::runtime::Runtime;
use crate::server::StartError;
use crate::upstream::Upstream;

/// How often balancers get their time-driven upkeep.
const TICK: Duration = Duration::from_millis(250);

/// Starts every background task of `runtime`; they end when `stopped` turns true.
pub(crate) fn spawn(
    config: &Config,
    runtime: &Runtime,
    stopped: &watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>, StartError> {
    let mut tasks = Vec::new();
    for (name, cfg) in &config.upstreams {
        let Some(upstream) = runtime.upstream(name) else { continue };
        let cfg = cfg.get_ref();
        let fail = |reason: String| StartError::Upstream { upstream: name.clone(), reason };
        if let Some(stream) = discovery_stream(cfg.discovery.get_ref()).map_err(fail)? {
            tasks.push(tokio::spawn(follow(
                stream,
                Arc::clone(upstream),
                Arc::clone(&runtime.clock),
                stopped.clone(),
            )));
        }
        let prober = match &cfg.health_check {
            Some(check) => Some(Prober::new(active_check_config(check)).map_err(|e| fail(e.to_string()))?),
            None => None,
        };
        tasks.push(tokio::spawn(tick(
            Arc::clone(upstream),
            prober,
            Arc::clone(&runtime.clock),
            stopped.clone(),
        )));
    }
    Ok(tasks)
}

/// The change stream of a dynamic source; `None` for a static list.
fn discovery_stream(discovery: &Discovery) -> Result<Option<ChangeStream>, String> {
    Ok(Some(match discovery {
        Discovery::Static(_) => return Ok(None),
        Discovery::File(file) => changes(FileSource::new(&file.path).map_err(|e| e.to_string())?),
        Discovery::Dns(dns) => changes(dns_source(dns).map_err(|e| e.to_string())?),
        Discovery::Consul(consul) => crate::consul::stream(consul)?,
    }))
}

fn dns_source(dns: &DnsDiscovery) -> Result<DnsSource, lb_discovery::DnsError> {
    let query = match dns.port {
        Some(port) => DnsQuery::Host { name: dns.name.clone(), port },
        None => DnsQuery::Srv { name: dns.name.clone() },
    };
    let config = DnsConfig { min_ttl: dns.min_ttl, max_ttl: dns.max_ttl, ..DnsConfig::default() };
    if dns.name_servers.is_empty() {
        DnsSource::system(query, config)
    } else {
        DnsSource::with_name_servers(query, &dns.name_servers, config)
    }
}

/// Installs every snapshot discovery publishes. In-flight requests keep the
/// snapshot they picked from, so an endpoint that leaves finishes its requests.
async fn follow(
    stream: ChangeStream,
    upstream: Arc<Upstream>,
    clock: Arc<dyn Clock>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut snapshots = watch_snapshots(stream, clock);
    loop {
        tokio::select! {
            changed = snapshots.changed() => {
                if changed.is_err() {
                    return; // The source ended; the last set stays installed.
                }
                let set = snapshots.borrow_and_update().clone();
                tracing::info!(upstream = %upstream.name, endpoints = set.len(), "discovery update");
                upstream.install(set);
            }
            _ = stopped.changed() => return,
        }
    }
}

/// Runs the upstream's timers, and keeps active health checks following
/// the current endpoint set (one probe task per endpoint, stopped on drop).
async fn tick(
    upstream: Arc<Upstream>,
    prober: Option<Prober>,
    clock: Arc<dyn Clock>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut probes: Option<(ProbeSet, EndpointSet)> = None;
    loop {
        tokio::select! {
            _ = interval.tick() => {
                let snapshot = upstream.current.load();
                snapshot.tick(clock.now());
                if let Some(prober) = &prober {
                    let set = snapshot.endpoints();
                    match &mut probes {
                        Some((_, seen)) if seen.same_snapshot(set) => {}
                        Some((probe_set, seen)) => {
                            probe_set.update(set);
                            *seen = set.clone();
                        }
                        None => probes = Some((prober.watch(set), set.clone())),
                    }
                }
            }
            _ = stopped.changed() => return,
        }
    }
}
