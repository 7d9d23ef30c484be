//! Rules that span several keys, checked after serde has read the file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::error::Violation;
use super::model::{BackoffKind, CircuitBreaker, Config, Discovery, HashKey, Retry, Tracing, Upstream};
use crate::balancing::{AlgorithmChoice, parse_algorithm};

/// Every broken rule, in file order of the first one found per section.
pub(crate) fn check(config: &Config) -> Vec<Violation> {
    let mut found = Vec::new();
    check_global(config, &mut found);
    check_buckets(config, &mut found);
    if let Some(tracing) = &config.tracing {
        check_tracing(tracing, &mut found);
    }
    check_listeners(config, &mut found);
    for upstream in config.upstreams.values() {
        check_upstream(upstream.get_ref(), upstream.span(), &mut found);
    }
    check_routes(config, &mut found);
    check_shape(config, &mut found);
    found.sort_by_key(|v| v.span.start);
    found
}

/// A file with nothing to serve is a mistake, reported at its end.
fn check_shape(config: &Config, found: &mut Vec<Violation>) {
    const END: std::ops::Range<usize> = usize::MAX..usize::MAX;
    if config.listeners.is_empty() {
        found.push(Violation::new(
            END,
            "no [[listeners]]: the proxy would accept no connection; add one with listen = \"0.0.0.0:8080\"",
        ));
    }
    if config.routes.is_empty() {
        found.push(Violation::new(
            END,
            "no [[routes]]: every request would get 404; add one with upstream = \"NAME\"",
        ));
    }
}

fn check_global(config: &Config, found: &mut Vec<Violation>) {
    let g = &config.global;
    if *g.worker_threads.get_ref() == 0 {
        found.push(Violation::new(g.worker_threads.span(), "worker_threads must be at least 1"));
    }
    if *g.max_header_bytes.get_ref() < 8192 {
        found.push(Violation::new(g.max_header_bytes.span(), "max_header_bytes must be at least 8192"));
    }
    let h2 = &g.http2;
    if *h2.max_concurrent_streams.get_ref() == 0 {
        found.push(Violation::new(
            h2.max_concurrent_streams.span(),
            "http2.max_concurrent_streams must be at least 1",
        ));
    }
    // RFC 9113 §6.5.2: windows up to 2^31 - 1, frames from 2^14 to 2^24 - 1.
    for (value, name) in [
        (&h2.initial_stream_window, "initial_stream_window"),
        (&h2.initial_connection_window, "initial_connection_window"),
    ] {
        if !(65_535..=(1 << 31) - 1).contains(value.get_ref()) {
            found.push(Violation::new(
                value.span(),
                format!("http2.{name} must be from 65535 to 2147483647 bytes"),
            ));
        }
    }
    if !((1 << 14)..(1 << 24)).contains(h2.max_frame_size.get_ref()) {
        found.push(Violation::new(
            h2.max_frame_size.span(),
            "http2.max_frame_size must be from 16384 to 16777215 bytes",
        ));
    }
    let max_headers = *g.max_headers.get_ref();
    if !(1..=crate::http1::request::MAX_FIELDS).contains(&max_headers) {
        found.push(Violation::new(
            g.max_headers.span(),
            format!("max_headers must be from 1 to {}", crate::http1::request::MAX_FIELDS),
        ));
    }
    for network in &g.trusted_proxies {
        if let Err(error) = network.get_ref().parse::<ipnet::IpNet>() {
            found.push(Violation::new(
                network.span(),
                format!(
                    "trusted_proxies: `{}` is not a network such as \"10.0.0.0/8\" ({error})",
                    network.get_ref()
                ),
            ));
        }
    }
}

fn check_buckets(config: &Config, found: &mut Vec<Violation>) {
    let buckets = &config.admin.histogram_buckets;
    let bounds = buckets.get_ref();
    let ascending = bounds.windows(2).all(|w| w[0] < w[1]);
    if bounds.is_empty() || !ascending || bounds.iter().any(|b| !b.is_finite() || *b <= 0.0) {
        found.push(Violation::new(
            buckets.span(),
            "histogram_buckets must be positive numbers of seconds in ascending order, such as [0.01, 0.1, 1]",
        ));
    }
}

fn check_tracing(tracing: &Tracing, found: &mut Vec<Violation>) {
    let endpoint = &tracing.otlp_endpoint;
    match endpoint.get_ref().parse::<http::Uri>() {
        Ok(uri) if uri.scheme_str() == Some("http") && uri.authority().is_some() => {}
        Ok(uri) if uri.scheme_str() == Some("https") => found.push(Violation::new(
            endpoint.span(),
            "otlp_endpoint must be plain http:// (a local collector or agent); the exporter has no TLS",
        )),
        Ok(_) => found.push(Violation::new(
            endpoint.span(),
            "otlp_endpoint must be a full http:// URL, such as \"http://127.0.0.1:4318/v1/traces\"",
        )),
        Err(error) => {
            found.push(Violation::new(endpoint.span(), format!("otlp_endpoint is not a URL: {error}")))
        }
    }
    let ratio = *tracing.sample_ratio.get_ref();
    if !(0.0..=1.0).contains(&ratio) {
        found.push(Violation::new(tracing.sample_ratio.span(), "sample_ratio must be between 0 and 1"));
    }
}

fn check_listeners(config: &Config, found: &mut Vec<Violation>) {
    let mut seen: BTreeMap<SocketAddr, ()> = BTreeMap::new();
    if config.admin.enabled {
        let admin = &config.admin.listen;
        seen.insert(*admin.get_ref(), ());
        if !admin.get_ref().ip().is_loopback() && config.admin.token().is_none() {
            found.push(Violation::new(
                admin.span(),
                format!(
                    "the admin listener on {} is reachable from other hosts: set admin.token or {} \
                     (every admin request must then carry it), or listen on 127.0.0.1",
                    admin.get_ref(),
                    super::model::ADMIN_TOKEN_ENV
                ),
            ));
        }
    }
    for listener in &config.listeners {
        if let Some(tls) = &listener.get_ref().tls
            && tls.get_ref().certificates.is_empty()
        {
            found.push(Violation::new(
                tls.span(),
                "tls needs at least one certificate: tls.certificates = [{ cert_file = \"...\", key_file = \"...\" }]",
            ));
        }
        let redirect = &listener.get_ref().redirect_to_https;
        if *redirect.get_ref() && listener.get_ref().tls.is_some() {
            found.push(Violation::new(
                redirect.span(),
                "redirect_to_https is for a plain listener: this one has tls, and would redirect to itself",
            ));
        }
        let max = &listener.get_ref().max_connections;
        if *max.get_ref() == 0 {
            found.push(Violation::new(max.span(), "max_connections must be at least 1"));
        }
        let listen = &listener.get_ref().listen;
        let addr = *listen.get_ref();
        if addr.port() != 0 && seen.insert(addr, ()).is_some() {
            found.push(Violation::new(
                listen.span(),
                format!("{addr} is already used by another listener or the admin listener"),
            ));
        }
    }
}

fn check_routes(config: &Config, found: &mut Vec<Violation>) {
    let mut seen: BTreeMap<(Option<String>, &str), ()> = BTreeMap::new();
    for spanned in &config.routes {
        let route = spanned.get_ref();
        let host = route.host.as_ref().map(|h| h.to_ascii_lowercase());
        if seen.insert((host, route.path_prefix.get_ref().as_str()), ()).is_some() {
            found.push(Violation::new(
                spanned.span(),
                format!(
                    "duplicate route: host {} and path_prefix `{}` are routed by an earlier [[routes]] already",
                    route.host.as_deref().map_or("(any)".to_string(), |h| format!("`{h}`")),
                    route.path_prefix.get_ref()
                ),
            ));
        }
        let name = route.upstream.get_ref();
        if !config.upstreams.contains_key(name) {
            let known: Vec<&str> = config.upstreams.keys().map(String::as_str).collect();
            found.push(Violation::new(
                route.upstream.span(),
                format!(
                    "route refers to unknown upstream `{name}`; defined upstreams: [{}]",
                    known.join(", ")
                ),
            ));
        }
        if !route.path_prefix.get_ref().starts_with('/') {
            found.push(Violation::new(route.path_prefix.span(), "path_prefix must start with `/`"));
        }
    }
}

fn check_upstream(upstream: &Upstream, span: std::ops::Range<usize>, found: &mut Vec<Violation>) {
    match parse_algorithm(upstream.algorithm.get_ref(), &upstream.algorithm_params, upstream.slow_start) {
        Err(reason) => found.push(Violation::new(upstream.algorithm.span(), reason)),
        Ok(AlgorithmChoice { hashed: true, .. }) if upstream.hash_key.is_none() => {
            found.push(Violation::new(
                upstream.algorithm.span(),
                format!(
                    "algorithm `{}` hashes a key: set hash_key (header, cookie, client_ip, path or query)",
                    upstream.algorithm.get_ref()
                ),
            ))
        }
        Ok(_) => {}
    }
    if let Some(HashKey::Header(name) | HashKey::Cookie(name) | HashKey::Query(name)) = &upstream.hash_key
        && name.is_empty()
    {
        found.push(Violation::new(span.clone(), "hash_key needs a non-empty name"));
    }
    match upstream.discovery.get_ref() {
        Discovery::Static(list) if list.endpoints.is_empty() => {
            found.push(Violation::new(
                upstream.discovery.span(),
                "a static upstream needs at least one endpoint",
            ));
        }
        Discovery::Consul(consul) => {
            if let Some(Err(reason)) = consul.address.as_deref().map(crate::consul::check_address) {
                found.push(Violation::new(upstream.discovery.span(), reason));
            }
        }
        Discovery::File(file) if lb_discovery::FileFormat::from_path(&file.path).is_none() => {
            found.push(Violation::new(
                upstream.discovery.span(),
                format!("endpoint file `{}` must end in .toml or .json (its format)", file.path.display()),
            ))
        }
        _ => {}
    }
    if let Some(check) = &upstream.health_check {
        for (value, name) in [(&check.rise, "rise"), (&check.fall, "fall")] {
            if *value.get_ref() == 0 {
                found.push(Violation::new(value.span(), format!("health_check.{name} must be at least 1")));
            }
        }
        if !check.path.starts_with('/') {
            found.push(Violation::new(span.clone(), "health_check.path must start with `/`"));
        }
        if let Some(service) = &check.grpc_service
            && !upstream.protocol.is_http2()
        {
            found.push(Violation::new(
                service.span(),
                "health_check.grpc_service speaks gRPC: it needs protocol = \"h2c\" (or \"h2\" over tls) on this upstream",
            ));
        }
    }
    match (&upstream.tls, upstream.protocol) {
        (Some(tls), crate::config::UpstreamProtocol::H2c) => found.push(Violation::new(
            tls.span(),
            "protocol = \"h2c\" is HTTP/2 in cleartext: over tls write protocol = \"h2\"",
        )),
        (None, crate::config::UpstreamProtocol::H2) => found.push(Violation::new(
            span.clone(),
            "protocol = \"h2\" is HTTP/2 over TLS: add a tls table (e.g. tls = { ca_file = \"ca.pem\" }), or use \"h2c\"",
        )),
        _ => {}
    }
    if let Some(outlier) = &upstream.outlier_detection {
        if *outlier.max_ejection_percent.get_ref() > 100 {
            found.push(Violation::new(
                outlier.max_ejection_percent.span(),
                "max_ejection_percent is at most 100",
            ));
        }
        if outlier.base_ejection_time > outlier.max_ejection_time {
            found.push(Violation::new(
                span.clone(),
                "outlier_detection.base_ejection_time is longer than max_ejection_time",
            ));
        }
    }
    if let Some(breaker) = &upstream.circuit_breaker {
        check_breaker(breaker, span.clone(), found);
    }
    if *upstream.panic_threshold.get_ref() > 100 {
        found.push(Violation::new(
            upstream.panic_threshold.span(),
            "panic_threshold is a percentage, at most 100",
        ));
    }
    let attempts = &upstream.retry.attempts;
    if !(1..=5).contains(attempts.get_ref()) {
        found.push(Violation::new(attempts.span(), "retry.attempts must be from 1 (no retry) to 5"));
    }
    if *upstream.retry.budget_percent.get_ref() > 100 {
        found.push(Violation::new(upstream.retry.budget_percent.span(), "budget_percent is at most 100"));
    } else if let Err(e) = crate::upstream::retry_budget(&upstream.retry) {
        found.push(Violation::new(span.clone(), format!("retry budget: {e}")));
    }
    check_backoff(&upstream.retry, found);
    let t = &upstream.timeouts;
    if [t.connect, t.request, t.per_try, t.idle].iter().any(|d| d.is_zero()) {
        found.push(Violation::new(span, "timeouts must be longer than zero"));
    }
}

fn check_breaker(breaker: &CircuitBreaker, span: std::ops::Range<usize>, found: &mut Vec<Violation>) {
    if let Some(half_open) = &breaker.half_open_requests
        && *half_open.get_ref() == 0
    {
        found.push(Violation::new(half_open.span(), "half_open_requests must be at least 1"));
    }
    if let Some(ratio) = &breaker.failure_ratio
        && !(*ratio.get_ref() > 0.0 && *ratio.get_ref() <= 1.0)
    {
        found.push(Violation::new(ratio.span(), "failure_ratio must be above 0 and at most 1"));
    }
    let rules = breaker.rules();
    if rules.consecutive_failures == 0 && rules.ratio.is_none() {
        found.push(Violation::new(
            span,
            "circuit_breaker never opens: set consecutive_failures above 0, or failure_ratio (or preset = \"guide\")",
        ));
    }
}

/// The longest backoff accepted; longer waits belong to the request timeout.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

fn check_backoff(retry: &Retry, found: &mut Vec<Violation>) {
    let (base, max) = (&retry.backoff_base, &retry.backoff_max);
    if retry.backoff != BackoffKind::None && base.get_ref().is_zero() {
        found.push(Violation::new(
            base.span(),
            "retry.backoff_base must be longer than zero; write backoff = \"none\" to retry at once",
        ));
    }
    if *max.get_ref() > MAX_BACKOFF {
        found.push(Violation::new(max.span(), "retry.backoff_max is at most 1h"));
    } else if max.get_ref() < base.get_ref() {
        found.push(Violation::new(max.span(), "retry.backoff_max must be at least retry.backoff_base"));
    }
}
