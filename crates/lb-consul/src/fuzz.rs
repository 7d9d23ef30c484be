//! Fuzz targets for Consul's answers: the JSON of
//! `/v1/health/service/:service` as arbitrary bytes, as JSON-shaped token
//! soup, and as valid answers with values replaced, decoded as
//! [`ConsulClient::health_service`](crate::ConsulClient::health_service)
//! does and turned into endpoints. Bad JSON must be an error, never a panic;
//! a decoded answer must give the endpoints Consul's health rules say.
//!
//! `LB_FUZZ_CASES` sets the cases per target (`cargo xtask reliability`).

use lb_core::{EndpointSet, Timestamp};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use serde_json::{Value, json};

use crate::api::{CheckStatus, ServiceEntry};
use crate::endpoints::{aggregate_status, endpoints_from};

/// Cases per target when `LB_FUZZ_CASES` is not set: a few seconds' worth.
const DEFAULT_CASES: u32 = 512;

fn config() -> ProptestConfig {
    let cases = std::env::var("LB_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_CASES);
    // A failure is kept as a named regression test instead of a file beside the sources.
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// Decodes a body as the client does; a decoded answer's endpoints must follow the health rules.
fn check_body(body: &[u8]) -> Result<(), TestCaseError> {
    let Ok(entries) = serde_json::from_slice::<Vec<ServiceEntry>>(body) else { return Ok(()) };
    check_entries(&entries)
}

fn check_entries(entries: &[ServiceEntry]) -> Result<(), TestCaseError> {
    let endpoints = endpoints_from(entries, Some("zone"));
    let kept: Vec<&ServiceEntry> = entries
        .iter()
        .filter(|entry| match aggregate_status(entry) {
            CheckStatus::Critical => false,
            CheckStatus::Warning => entry.service.weights.warning > 0,
            CheckStatus::Passing => true,
        })
        .collect();
    // Entries with an unusable address are dropped too, so at most the healthy ones remain.
    prop_assert!(endpoints.len() <= kept.len());
    for endpoint in &endpoints {
        let node = endpoint.meta().get(crate::meta_keys::NODE).cloned().unwrap_or_default();
        let service_id = endpoint.meta().get(crate::meta_keys::SERVICE_ID).cloned().unwrap_or_default();
        let id = format!("{}/{}", crate::endpoints::id_part(&node), crate::endpoints::id_part(&service_id));
        prop_assert_eq!(endpoint.id().as_str(), id);
        let entry = kept.iter().find(|e| e.node.name == node && e.service.id == service_id);
        prop_assert!(entry.is_some(), "an endpoint from an unhealthy or unknown entry");
        let entry = entry.expect("checked");
        let weights = entry.service.weights;
        let weight = match aggregate_status(entry) {
            CheckStatus::Warning => weights.warning,
            _ => weights.passing,
        };
        prop_assert_eq!(endpoint.weight(), weight.max(1));
        prop_assert_eq!(endpoint.address().port(), entry.service.port);
    }
    let set = EndpointSet::new(endpoints.clone(), Timestamp::ZERO);
    prop_assert!(set.len() <= endpoints.len());
    Ok(())
}

/// A healthy answer as the documentation shows it.
fn valid_answer() -> Value {
    json!([
        {
            "Node": {"ID": "40e4a748", "Node": "n1", "Address": "10.1.10.12", "Datacenter": "dc1",
                     "TaggedAddresses": {"lan": "10.1.10.12"}, "Meta": {"instance_type": "t2.medium"}},
            "Service": {"ID": "web-1", "Service": "web", "Tags": ["primary"], "Address": "",
                        "Meta": {"zone": "eu-1a"}, "Port": 8000, "Weights": {"Passing": 10, "Warning": 1}},
            "Checks": [
                {"Node": "n1", "CheckID": "serfHealth", "Name": "Serf Health Status", "Status": "passing",
                 "ServiceID": ""},
                {"Node": "n1", "CheckID": "service:web-1", "Status": "warning", "ServiceID": "web-1"}
            ]
        },
        {
            "Node": {"Node": "n2", "Address": "10.1.10.13"},
            "Service": {"ID": "web-2", "Service": "web", "Tags": null, "Address": "[::1]", "Meta": null,
                        "Port": 8001},
            "Checks": null
        }
    ])
}

/// Every path from `value` to each of its parts, `value` itself first.
fn pointers(value: &Value, prefix: &str, out: &mut Vec<String>) {
    out.push(prefix.to_string());
    match value {
        Value::Object(map) => {
            for (key, part) in map {
                pointers(part, &format!("{prefix}/{}", key.replace('~', "~0").replace('/', "~1")), out);
            }
        }
        Value::Array(items) => {
            for (i, part) in items.iter().enumerate() {
                pointers(part, &format!("{prefix}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        proptest::sample::select(&[0i64, 1, -1, 65535, 65536, 4_294_967_295, 4_294_967_296, i64::MIN][..])
            .prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        proptest::sample::select(
            &[
                "",
                "passing",
                "warning",
                "critical",
                "maintenance",
                "10.0.0.1",
                "::1",
                "[::1]",
                "web.node.consul",
                "not an address",
                "host:80",
                "n1",
                "web-1",
                "zone",
            ][..],
        )
        .prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            proptest::collection::btree_map("[A-Z][a-z]{0,6}", inner, 0..3)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A replacement of the same JSON type as the value it replaces: what a
/// slightly different Consul (or a hostile one) could send and still decode.
#[derive(Debug, Clone)]
struct SameKind {
    text: String,
    number: i64,
}

/// Any value, or (usually) one of the same kind as the replaced one.
fn replacement() -> impl Strategy<Value = (Value, Option<SameKind>)> {
    let text = prop_oneof![
        3 => proptest::sample::select(
            &[
                "", "passing", "warning", "critical", "maintenance", "10.0.0.1", "::1", "[::1]", "fe80::1%eth0",
                "web.node.consul", "not an address", "host:80", "n1", "n1/x", "web-1", "zone",
            ][..],
        )
        .prop_map(str::to_string),
        1 => "\\PC{0,12}",
    ];
    let number =
        proptest::sample::select(&[0i64, 1, 2, 80, 65535, 65536, -1, 4_294_967_295, 4_294_967_296][..]);
    let same_kind = (text, number).prop_map(|(text, number)| SameKind { text, number });
    (json_value(), prop_oneof![1 => Just(None), 3 => same_kind.prop_map(Some)])
}

/// JSON's punctuation and the answer's keys and values, in any order.
fn token_soup() -> impl Strategy<Value = Vec<u8>> {
    let token = proptest::sample::select(
        &[
            "[",
            "]",
            "{",
            "}",
            ":",
            ",",
            "\"",
            "\"Node\"",
            "\"Service\"",
            "\"Checks\"",
            "\"ID\"",
            "\"Address\"",
            "\"Port\"",
            "\"Weights\"",
            "\"Passing\"",
            "\"Warning\"",
            "\"Status\"",
            "\"CheckID\"",
            "\"Tags\"",
            "\"Meta\"",
            "\"passing\"",
            "\"critical\"",
            "\"10.0.0.1\"",
            "0",
            "8080",
            "-1",
            "1e400",
            "null",
            "true",
            " ",
            "\n",
            "\\u0000",
            "\"\\ud800\"",
        ][..],
    );
    proptest::collection::vec(token, 0..64).prop_map(|tokens| tokens.concat().into_bytes())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn health_answers_from_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        check_body(&body)?;
    }

    #[test]
    fn health_answers_from_token_soup(body in token_soup()) {
        check_body(&body)?;
    }

    #[test]
    fn health_answers_with_values_replaced(
        edits in proptest::collection::vec((any::<proptest::sample::Index>(), replacement()), 1..4),
    ) {
        let mut answer = valid_answer();
        for (place, (any_value, same_kind)) in edits {
            let mut all = Vec::new();
            pointers(&answer, "", &mut all);
            let pointer = &all[place.index(all.len())];
            if let Some(part) = answer.pointer_mut(pointer) {
                *part = match (&*part, same_kind) {
                    (Value::String(_), Some(SameKind { text, .. })) => Value::from(text),
                    (Value::Number(_), Some(SameKind { number, .. })) => Value::from(number),
                    _ => any_value,
                };
            }
        }
        check_body(&serde_json::to_vec(&answer).expect("a JSON value serializes"))?;
    }
}

#[test]
fn the_valid_answer_decodes_to_its_two_endpoints() {
    let body = serde_json::to_vec(&valid_answer()).unwrap();
    let entries: Vec<ServiceEntry> = serde_json::from_slice(&body).unwrap();
    let endpoints = endpoints_from(&entries, Some("zone"));
    let shown: Vec<(String, String, u32)> =
        endpoints.iter().map(|e| (e.id().to_string(), e.address().to_string(), e.weight())).collect();
    assert_eq!(
        shown,
        [
            ("n1/web-1".to_string(), "10.1.10.12:8000".to_string(), 1),
            ("n2/web-2".to_string(), "[::1]:8001".to_string(), 1)
        ]
    );
}
