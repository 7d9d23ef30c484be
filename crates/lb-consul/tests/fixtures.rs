//! Consul's documented sample JSON, decoded and encoded by this crate.

use lb_consul::{CheckStatus, HttpCheck, Registration, ServiceEntry, endpoints_from, meta_keys};
use serde_json::Value;
use std::time::Duration;

const HEALTH_SERVICE: &str = include_str!("fixtures/health_service.json");
const REGISTER_SERVICE: &str = include_str!("fixtures/register_service.json");

#[test]
fn the_documented_health_response_decodes() {
    let entries: Vec<ServiceEntry> = serde_json::from_str(HEALTH_SERVICE).unwrap();
    assert_eq!(entries.len(), 1);
    let entry = &entries[0];
    assert_eq!(entry.node.name, "foobar");
    assert_eq!(entry.node.datacenter, "dc1");
    assert_eq!(entry.service.id, "redis");
    assert_eq!(entry.service.port, 8000);
    assert_eq!(entry.service.weights.passing, 10);
    assert_eq!(entry.service.weights.warning, 1);
    let check_ids: Vec<&str> = entry.checks.iter().map(|c| c.check_id.as_str()).collect();
    assert_eq!(check_ids, ["service:redis", "serfHealth"]);
    assert!(entry.checks.iter().all(|c| c.status == CheckStatus::Passing));
    assert_eq!(entry.checks[1].service_id, "", "serfHealth is a node check");

    let endpoints = endpoints_from(&entries, None);
    let redis = &endpoints[0];
    assert_eq!(redis.id().as_str(), "foobar/redis");
    assert_eq!(redis.address().to_string(), "10.1.10.12:8000");
    assert_eq!(redis.weight(), 10, "passing weight");
    assert_eq!(redis.tags(), ["primary".to_string()]);
    assert_eq!(redis.meta().get("redis_version").map(String::as_str), Some("4.0"));
    assert_eq!(redis.meta().get(meta_keys::NODE).map(String::as_str), Some("foobar"));
    assert_eq!(redis.discovery_health(), lb_core::DiscoveryHealth::Passing);
}

/// The documented entry, edited the way live clusters differ from it.
fn edited(edit: impl FnOnce(&mut Value)) -> Vec<ServiceEntry> {
    let mut value: Value = serde_json::from_str(HEALTH_SERVICE).unwrap();
    edit(&mut value[0]);
    serde_json::from_value(value).unwrap()
}

#[test]
fn nulls_missing_weights_and_unknown_statuses_are_read_safely() {
    let entries = edited(|e| {
        e["Service"]["Tags"] = Value::Null;
        e["Service"]["Meta"] = Value::Null;
        e["Service"]["Address"] = Value::String(String::new());
        e["Node"]["Address"] = Value::String("10.1.10.99".into());
        e["Service"].as_object_mut().unwrap().remove("Weights");
    });
    let endpoints = endpoints_from(&entries, None);
    assert_eq!(
        endpoints[0].address().to_string(),
        "10.1.10.99:8000",
        "empty Service.Address uses Node.Address"
    );
    assert_eq!(endpoints[0].weight(), 1, "Consul's default weights are 1/1");
    assert!(endpoints[0].tags().is_empty());

    let maintenance = edited(|e| e["Checks"][1]["Status"] = Value::String("maintenance".into()));
    assert_eq!(maintenance[0].checks[1].status, CheckStatus::Critical, "an unknown status is critical");
    assert!(endpoints_from(&maintenance, None).is_empty());

    let warning = edited(|e| e["Checks"][0]["Status"] = Value::String("warning".into()));
    assert_eq!(endpoints_from(&warning, None)[0].weight(), 1, "Weights.Warning applies");

    let node_critical = edited(|e| e["Checks"][1]["Status"] = Value::String("critical".into()));
    assert!(endpoints_from(&node_critical, None).is_empty(), "a critical serfHealth drops the instance");
}

#[test]
fn a_registration_encodes_as_the_documented_payload() {
    let registration = Registration::new("redis1", "redis", 8000)
        .address("127.0.0.1")
        .tag("primary")
        .tag("v1")
        .meta("redis_version", "4.0")
        .weights(10, 1)
        .check(
            HttpCheck::new("http://localhost:5000/health", Duration::from_secs(10), Duration::from_secs(5))
                .deregister_critical_after(Duration::from_secs(90 * 60)),
        );
    let ours = serde_json::to_value(&registration).unwrap();
    let mut documented: Value = serde_json::from_str(REGISTER_SERVICE).unwrap();
    // We leave EnableTagOverride at Consul's default (false) by not sending it.
    documented.as_object_mut().unwrap().remove("EnableTagOverride");
    // Go durations: "90m" and our "5400s" mean the same.
    assert_eq!(ours["Check"]["DeregisterCriticalServiceAfter"], "5400s");
    documented["Check"]["DeregisterCriticalServiceAfter"] = "5400s".into();
    assert_eq!(ours, documented);
}
