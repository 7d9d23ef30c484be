//! From Consul's health entries to lb endpoints.

use std::net::{IpAddr, SocketAddr};

use lb_core::{Address, DiscoveryHealth, Endpoint};

use crate::api::{CheckStatus, ServiceEntry};

/// The metadata keys this crate adds to each endpoint, next to the service's own `Meta`.
pub mod meta_keys {
    /// The Consul node name.
    pub const NODE: &str = "consul.node";
    /// The node's datacenter.
    pub const DATACENTER: &str = "consul.datacenter";
    /// The instance's service id (unique per node).
    pub const SERVICE_ID: &str = "consul.service_id";
    /// `Weights.Passing`.
    pub const WEIGHT_PASSING: &str = "consul.weight.passing";
    /// `Weights.Warning`.
    pub const WEIGHT_WARNING: &str = "consul.weight.warning";
}

/// How an entry's checks add up: the worst status of all its checks,
/// node checks (such as `serfHealth`) included. No checks is passing.
pub fn aggregate_status(entry: &ServiceEntry) -> CheckStatus {
    entry.checks.iter().map(|c| c.status).max().unwrap_or(CheckStatus::Passing)
}

/// The endpoints of `entries`, by Consul's health rules:
/// - an instance with any critical check is dropped;
/// - a warning instance stays at `Weights.Warning` (dropped when that is 0)
///   with [`DiscoveryHealth::Warning`], which the snapshot consumer turns into the
///   `DiscoveryWarning` health flag; a passing one gets `Weights.Passing` and
///   [`DiscoveryHealth::Passing`];
/// - the address is `Service.Address`, or `Node.Address` when that is empty;
/// - the id is `node/service-id`, because service ids are unique per node only
///   (a `/` or `%` inside either part is percent-encoded, so two instances never share one);
/// - tags and `Service.Meta` are carried, plus the [`meta_keys`];
/// - with `zone_meta_key`, that `Service.Meta` entry becomes the zone.
///
/// Entries whose address is unusable are skipped with a warning.
pub fn endpoints_from(entries: &[ServiceEntry], zone_meta_key: Option<&str>) -> Vec<Endpoint> {
    entries.iter().filter_map(|entry| endpoint_from(entry, zone_meta_key)).collect()
}

fn endpoint_from(entry: &ServiceEntry, zone_meta_key: Option<&str>) -> Option<Endpoint> {
    let service = &entry.service;
    let (weight, health) = match aggregate_status(entry) {
        CheckStatus::Critical => return None,
        CheckStatus::Warning if service.weights.warning == 0 => return None,
        CheckStatus::Warning => (service.weights.warning, DiscoveryHealth::Warning),
        CheckStatus::Passing => (service.weights.passing, DiscoveryHealth::Passing),
    };
    let host = if service.address.is_empty() { &entry.node.address } else { &service.address };
    let Some(address) = address_of(host, service.port) else {
        tracing::warn!(node = %entry.node.name, service_id = %service.id, %host, "Consul instance has an unusable address; skipping it");
        return None;
    };
    let mut endpoint = Endpoint::new(address)
        .with_id(format!("{}/{}", id_part(&entry.node.name), id_part(&service.id)).as_str())
        .with_weight(weight);
    for tag in &service.tags {
        endpoint = endpoint.with_tag(tag.as_str());
    }
    for (key, value) in &service.meta {
        endpoint = endpoint.with_meta(key.as_str(), value.as_str());
    }
    if let Some(zone) = zone_meta_key.and_then(|key| service.meta.get(key)) {
        endpoint = endpoint.with_zone(zone.as_str());
    }
    Some(
        endpoint
            .with_meta(meta_keys::NODE, entry.node.name.as_str())
            .with_meta(meta_keys::DATACENTER, entry.node.datacenter.as_str())
            .with_meta(meta_keys::SERVICE_ID, service.id.as_str())
            .with_meta(meta_keys::WEIGHT_PASSING, service.weights.passing.to_string())
            .with_meta(meta_keys::WEIGHT_WARNING, service.weights.warning.to_string())
            .with_discovery_health(health),
    )
}

/// One part of an endpoint id, with the separator (and the escape) percent-encoded.
pub(crate) fn id_part(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains(['/', '%']) { text.replace('%', "%25").replace('/', "%2F").into() } else { text.into() }
}

fn address_of(host: &str, port: u16) -> Option<Address> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(Address::Socket(SocketAddr::new(ip, port)));
    }
    format!("{host}:{port}").parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AgentService, HealthCheck, Node, Weights};

    fn entry(id: &str, service_address: &str, checks: &[(&str, &str, CheckStatus)]) -> ServiceEntry {
        ServiceEntry {
            node: Node { name: "n1".into(), address: "10.0.0.9".into(), datacenter: "dc1".into() },
            service: AgentService {
                id: id.into(),
                service: "web".into(),
                tags: vec!["v2".into()],
                address: service_address.into(),
                port: 8080,
                meta: [("zone".to_string(), "eu-1a".to_string())].into(),
                weights: Weights { passing: 10, warning: 2 },
            },
            checks: checks
                .iter()
                .map(|&(check_id, service_id, status)| HealthCheck {
                    check_id: check_id.into(),
                    status,
                    service_id: service_id.into(),
                })
                .collect(),
        }
    }

    #[test]
    fn health_decides_presence_weight_and_flag() {
        use CheckStatus::*;
        let entries = [
            entry("ok", "", &[("serfHealth", "", Passing), ("service:ok", "ok", Passing)]),
            entry("warn", "10.0.0.5", &[("service:warn", "warn", Warning)]),
            entry("crit", "10.0.0.6", &[("service:crit", "crit", Critical), ("x", "crit", Warning)]),
            entry(
                "node-down",
                "10.0.0.7",
                &[("serfHealth", "", Critical), ("service:node-down", "node-down", Passing)],
            ),
        ];
        let endpoints = endpoints_from(&entries, Some("zone"));
        assert_eq!(endpoints.len(), 2, "critical service and node checks drop the instance");
        let ok = &endpoints[0];
        assert_eq!(ok.id().as_str(), "n1/ok");
        assert_eq!(ok.address().to_string(), "10.0.0.9:8080", "node address when the service has none");
        assert_eq!(ok.weight(), 10);
        assert_eq!(ok.zone(), Some("eu-1a"));
        assert_eq!(ok.tags(), ["v2".to_string()]);
        assert_eq!(ok.meta().get("zone").map(String::as_str), Some("eu-1a"));
        assert_eq!(ok.meta().get(meta_keys::WEIGHT_WARNING).map(String::as_str), Some("2"));
        let warn = &endpoints[1];
        assert_eq!(warn.address().to_string(), "10.0.0.5:8080");
        assert_eq!(warn.weight(), 2, "warning instances take the warning weight");
        assert_eq!(warn.discovery_health(), DiscoveryHealth::Warning);
        assert_eq!(ok.discovery_health(), DiscoveryHealth::Passing);
    }

    #[test]
    fn zero_warning_weight_drops_warning_instances_and_hostnames_are_kept() {
        let mut warn = entry("warn", "", &[("c", "warn", CheckStatus::Warning)]);
        warn.service.weights.warning = 0;
        assert!(endpoints_from(&[warn], None).is_empty());
        let named = entry("named", "web-1.node.consul", &[]);
        let endpoints = endpoints_from(&[named], None);
        assert_eq!(endpoints[0].address().to_string(), "web-1.node.consul:8080");
        assert_eq!(endpoints[0].zone(), None);
        let bad = entry("bad", "not an address", &[]);
        assert!(endpoints_from(&[bad], None).is_empty());
    }

    #[test]
    fn a_slash_in_a_node_name_or_service_id_cannot_make_two_ids_one() {
        let mut first = entry("b/c", "10.0.0.1", &[]);
        first.node.name = "a".into();
        let mut second = entry("c", "10.0.0.2", &[]);
        second.node.name = "a/b".into();
        let endpoints = endpoints_from(&[first, second], None);
        assert_eq!(endpoints[0].id().as_str(), "a/b%2Fc");
        assert_eq!(endpoints[1].id().as_str(), "a%2Fb/c");
        let mut percent = entry("x%2Fy", "10.0.0.3", &[]);
        percent.node.name = "n".into();
        assert_eq!(
            endpoints_from(&[percent], None)[0].id().as_str(),
            "n/x%252Fy",
            "the escape is escaped too"
        );
    }
}
