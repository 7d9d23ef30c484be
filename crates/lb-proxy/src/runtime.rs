//! The immutable run-time view of a configuration: compiled routes and live
//! upstreams. Held behind an `ArcSwap` so a reload can replace it whole.

use std::collections::BTreeMap;
use std::sync::Arc;

use lb_core::{Clock, Endpoint, EndpointSet};

use crate::access_log::AccessSink;
use crate::balancing::parse_algorithm;
use crate::body::ReplayStats;
use crate::config::{self, Config, Discovery, StaticEndpoint};
use crate::headers::{RequestIds, TrustedProxies};
use crate::otel::Tracing;
use crate::route::{Route, Routes};
use crate::upstream::{Upstream, UpstreamConnectors};

/// Everything a request needs, built once per configuration.
pub(crate) struct Runtime {
    pub(crate) routes: Routes,
    pub(crate) upstreams: Vec<Arc<Upstream>>,
    pub(crate) upstream_names: BTreeMap<String, usize>,
    pub(crate) replay_limit: usize,
    pub(crate) max_body_bytes: u64,
    pub(crate) access_log: Arc<AccessSink>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) replay_stats: Arc<ReplayStats>,
    pub(crate) request_ids: RequestIds,
    /// OpenTelemetry spans, when the configuration asks for them.
    pub(crate) tracing: Option<Arc<Tracing>>,
    /// Peers whose forwarding fields are kept and extended.
    pub(crate) trusted_proxies: TrustedProxies,
    /// The configuration's text with its secrets redacted, for the admin listener's `/config`.
    pub(crate) config_text: Arc<str>,
}

impl Runtime {
    /// Compiles `config` (already validated). Static upstreams get their
    /// endpoints here; the others start empty until discovery reports.
    ///
    /// On a reload, `previous` is the running generation: an upstream whose
    /// section did not change is carried over whole (endpoints, health,
    /// breakers, pooled connections, background tasks); a changed one whose
    /// discovery source is the same starts from the endpoints it had.
    pub(crate) fn build(
        config: &Config,
        clock: Arc<dyn Clock>,
        tracing: Option<Arc<Tracing>>,
        access_log: Arc<AccessSink>,
        connectors: &UpstreamConnectors,
        previous: Option<Previous<'_>>,
    ) -> Runtime {
        let mut upstreams = Vec::with_capacity(config.upstreams.len());
        let mut upstream_names = BTreeMap::new();
        for (name, cfg) in &config.upstreams {
            let cfg = cfg.get_ref();
            let upstream = match previous.and_then(|p| p.unchanged(name, cfg)) {
                Some(same) => same,
                None => {
                    // Validation already refused unknown names.
                    let Ok(choice) =
                        parse_algorithm(cfg.algorithm.get_ref(), &cfg.algorithm_params, cfg.slow_start)
                    else {
                        continue;
                    };
                    let tls = connectors.get(name).cloned();
                    let upstream = Upstream::new(name, cfg, choice, config, tls, &clock);
                    if let Discovery::Static(list) = cfg.discovery.get_ref() {
                        let endpoints = list.endpoints.iter().map(static_endpoint);
                        upstream.install(EndpointSet::new(endpoints, clock.now()));
                    } else if let Some(set) = previous.and_then(|p| p.same_source_endpoints(name, cfg)) {
                        // Until discovery reports again; a reload must not empty an upstream.
                        upstream.install(set);
                    }
                    Arc::new(upstream)
                }
            };
            upstream_names.insert(name.clone(), upstreams.len());
            upstreams.push(upstream);
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
            access_log,
            clock,
            replay_stats: previous.map_or_else(Default::default, |p| Arc::clone(&p.runtime.replay_stats)),
            request_ids: RequestIds::default(),
            tracing,
            trusted_proxies: TrustedProxies::new(
                config.global.trusted_proxies.iter().filter_map(|n| n.get_ref().parse().ok()).collect(),
            ),
            config_text: redacted(&config.text).into(),
        }
    }

    /// The upstream called `name`.
    pub(crate) fn upstream(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.upstream_names.get(name).map(|&i| &self.upstreams[i])
    }
}

/// The running generation a reload starts from.
#[derive(Clone, Copy)]
pub(crate) struct Previous<'a> {
    /// What the running generation was built from.
    pub(crate) config: &'a Config,
    /// The running generation.
    pub(crate) runtime: &'a Runtime,
}

impl Previous<'_> {
    /// The running upstream `name`, if its section is exactly `cfg`.
    fn unchanged(&self, name: &str, cfg: &config::Upstream) -> Option<Arc<Upstream>> {
        let before = self.config.upstreams.get(name)?;
        (before.get_ref() == cfg).then(|| self.runtime.upstream(name).cloned()).flatten()
    }

    /// The endpoints upstream `name` has now, if it is discovered from the same source as `cfg` says.
    fn same_source_endpoints(&self, name: &str, cfg: &config::Upstream) -> Option<EndpointSet> {
        let before = self.config.upstreams.get(name)?;
        if before.get_ref().discovery != cfg.discovery {
            return None;
        }
        let snapshot = self.runtime.upstream(name)?.current.load();
        Some(lb_core::Balancer::endpoints(&*snapshot).clone())
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

/// `text` with the value of every `token` key replaced, so `/config` never shows a secret.
fn redacted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let key = line.trim_start();
        let is_token = key.strip_prefix("token").is_some_and(|rest| rest.trim_start().starts_with('='));
        if is_token {
            let indent = &line[..line.len() - key.len()];
            out.push_str(indent);
            out.push_str("token = \"(redacted)\"");
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod redaction_tests {
    use super::redacted;

    #[test]
    fn token_values_are_redacted_and_nothing_else() {
        let text =
            "[admin]\ntoken = \"s3cret\"\n  token=\"x\"\ntokens_seen = 1\nlisten = \"127.0.0.1:9901\"\n";
        let shown = redacted(text);
        assert!(!shown.contains("s3cret") && !shown.contains("\"x\""), "{shown}");
        assert!(shown.contains("token = \"(redacted)\"\n  token = \"(redacted)\""), "{shown}");
        assert!(
            shown.contains("tokens_seen = 1") && shown.contains("listen = \"127.0.0.1:9901\""),
            "{shown}"
        );
    }
}
