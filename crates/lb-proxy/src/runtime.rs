//! The immutable run-time view of a configuration: compiled routes and live
//! upstreams. Held behind an `ArcSwap` so a reload can replace it whole.

use std::collections::BTreeMap;
use std::sync::Arc;

use lb_core::{Clock, Endpoint, EndpointSet};

use crate::balancing::parse_algorithm;
use crate::body::ReplayStats;
use crate::config::{AccessLog, Config, Discovery, StaticEndpoint};
use crate::headers::RequestIds;
use crate::otel::Tracing;
use crate::route::{Route, Routes};
use crate::upstream::Upstream;

/// Everything a request needs, built once per configuration.
pub(crate) struct Runtime {
    pub(crate) routes: Routes,
    pub(crate) upstreams: Vec<Arc<Upstream>>,
    pub(crate) upstream_names: BTreeMap<String, usize>,
    pub(crate) replay_limit: usize,
    pub(crate) max_body_bytes: u64,
    pub(crate) access_log: AccessLog,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) replay_stats: Arc<ReplayStats>,
    pub(crate) request_ids: RequestIds,
    /// OpenTelemetry spans, when the configuration asks for them.
    pub(crate) tracing: Option<Arc<Tracing>>,
}

impl Runtime {
    /// Compiles `config` (already validated). Static upstreams get their
    /// endpoints here; the others start empty until discovery reports.
    pub(crate) fn build(config: &Config, clock: Arc<dyn Clock>, tracing: Option<Arc<Tracing>>) -> Runtime {
        let mut upstreams = Vec::with_capacity(config.upstreams.len());
        let mut upstream_names = BTreeMap::new();
        for (name, cfg) in &config.upstreams {
            let cfg = cfg.get_ref();
            // Validation already refused unknown names.
            let Ok(choice) = parse_algorithm(cfg.algorithm.get_ref(), &cfg.algorithm_params, cfg.slow_start)
            else {
                continue;
            };
            let upstream = Upstream::new(name, cfg, choice);
            if let Discovery::Static(list) = cfg.discovery.get_ref() {
                upstream.install(EndpointSet::new(list.endpoints.iter().map(static_endpoint), clock.now()));
            }
            upstream_names.insert(name.clone(), upstreams.len());
            upstreams.push(Arc::new(upstream));
        }
        let routes = config
            .routes
            .iter()
            .filter_map(|r| {
                let r = r.get_ref();
                Some(Route {
                    host: r.host.as_ref().map(|h| h.to_ascii_lowercase()),
                    path_prefix: r.path_prefix.get_ref().clone(),
                    upstream: *upstream_names.get(r.upstream.get_ref())?,
                })
            })
            .collect();
        Runtime {
            routes: Routes::new(routes),
            upstreams,
            upstream_names,
            replay_limit: config.global.replay_buffer_bytes,
            max_body_bytes: config.global.max_body_bytes,
            access_log: config.global.access_log,
            clock,
            replay_stats: Arc::new(ReplayStats::default()),
            request_ids: RequestIds::default(),
            tracing,
        }
    }

    /// The upstream called `name`.
    pub(crate) fn upstream(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.upstream_names.get(name).map(|&i| &self.upstreams[i])
    }
}

/// The core endpoint for one static list entry.
pub(crate) fn static_endpoint(e: &StaticEndpoint) -> Endpoint {
    let endpoint = Endpoint::new(e.address.clone()).with_weight(e.weight);
    match &e.id {
        Some(id) => endpoint.with_id(id.as_str()),
        None => endpoint,
    }
}
