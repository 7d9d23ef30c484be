//! Background tasks per upstream, on lb-engine's: discovery feeding new
//! snapshots, and the upkeep timer (slow start, peak-EWMA decay, outlier
//! ejections ending, active health checks).

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use lb_core::{Balancer, Clock};
use lb_discovery::{ChangeStream, DnsConfig, DnsQuery, DnsSource, FileSource, SourceStatus, watched};
use lb_engine::Upkeep;
use lb_health::prober::Prober;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{self, Config, Discovery, DnsDiscovery};
use crate::health::active_check_config;
use crate::runtime::Runtime;
use crate::server::StartError;
use crate::upstream::Upstream;

/// How often balancers get their time-driven upkeep.
const TICK: Duration = Duration::from_millis(250);

/// The background tasks of one upstream, stopped together: on shutdown, or
/// when a reload replaces or removes the upstream.
pub(crate) struct UpstreamTasks {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl UpstreamTasks {
    /// Stops the tasks and waits for them.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Starts the background tasks of every upstream of `runtime`, by name.
pub(crate) fn spawn(
    config: &Config,
    runtime: &Runtime,
) -> Result<BTreeMap<String, UpstreamTasks>, StartError> {
    let mut all = BTreeMap::new();
    for (name, cfg) in &config.upstreams {
        let Some(upstream) = runtime.upstream(name) else { continue };
        all.insert(name.clone(), spawn_upstream(name, cfg.get_ref(), upstream, &runtime.clock)?);
    }
    Ok(all)
}

/// Starts one upstream's discovery follower (unless its list is static) and
/// its timer, which also drives the active health checks.
pub(crate) fn spawn_upstream(
    name: &str,
    cfg: &config::Upstream,
    upstream: &Arc<Upstream>,
    clock: &Arc<dyn Clock>,
) -> Result<UpstreamTasks, StartError> {
    let fail = |reason: String| StartError::Upstream { upstream: name.to_string(), reason };
    let stream = discovery_stream(cfg.discovery.get_ref()).map_err(fail)?;
    let status = stream.as_ref().map(|(_, status)| status.clone());
    *upstream.discovery.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = status;
    let prober = match &cfg.health_check {
        Some(check) => {
            let prober =
                Prober::new(active_check_config(check, cfg.protocol)).map_err(|e| fail(e.to_string()))?;
            // Checks go over the TLS the traffic uses (a clone: a reload's renewed files reach both).
            Some(match &upstream.settings.tls {
                Some(tls) => prober.with_tls(tls.clone()),
                None => prober,
            })
        }
        None => None,
    };
    let (stop, stopped) = watch::channel(false);
    let mut tasks = Vec::new();
    if let Some((stream, _)) = stream {
        tasks.push(tokio::spawn(follow(stream, Arc::clone(upstream), Arc::clone(clock), stopped.clone())));
    }
    tasks.push(tokio::spawn(tick(Arc::clone(upstream), prober, Arc::clone(clock), stopped)));
    Ok(UpstreamTasks { stop, tasks })
}

/// The change stream of a dynamic source and its status; `None` for a static list.
fn discovery_stream(discovery: &Discovery) -> Result<Option<(ChangeStream, SourceStatus)>, String> {
    Ok(Some(match discovery {
        Discovery::Static(_) => return Ok(None),
        Discovery::File(file) => watched(FileSource::new(&file.path).map_err(|e| e.to_string())?),
        Discovery::Dns(dns) => watched(dns_source(dns).map_err(|e| e.to_string())?),
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
    // Fold onto what is installed: after a reload that carried endpoints over,
    // those that stay keep their live state (health, load), which probes and
    // breakers already hold.
    let installed = upstream.current.load().endpoints().clone();
    let follow = lb_engine::follow::follow_changes(stream, installed, clock, |set| {
        tracing::info!(upstream = %upstream.name, endpoints = set.len(), "discovery update");
        upstream.install(set);
        ControlFlow::Continue(())
    });
    tokio::select! {
        () = follow => {} // The source ended; the last set stays installed.
        _ = stopped.changed() => {}
    }
}

/// Runs the upstream's upkeep (lb-engine's: balancer and outlier timers,
/// active checks following the endpoint set), then the proxy's own: idle
/// connections closed, panic mode, health changes logged.
async fn tick(
    upstream: Arc<Upstream>,
    prober: Option<Prober>,
    clock: Arc<dyn Clock>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut upkeep = Upkeep::new(prober);
    let mut standings = std::collections::HashMap::new();
    let rounds = lb_engine::upkeep::every(TICK, || {
        let snapshot = upstream.current.load();
        let now = clock.now();
        upkeep.round(&snapshot, now);
        for backend in snapshot.extras() {
            backend.pool.evict_expired();
        }
        upstream.update_panic();
        upstream.log_health_changes(&mut standings, now);
        upstream.upkeep_rounds.fetch_add(1, std::sync::atomic::Ordering::Release);
        ControlFlow::Continue(())
    });
    tokio::select! {
        () = rounds => {}
        _ = stopped.changed() => {}
    }
}
