//! Fuzz targets for what discovery reads from outside: endpoint files
//! (TOML and JSON, arbitrary and generated then mutated) and DNS answers
//! (arbitrary SRV records and A/AAAA addresses, through to the endpoint
//! set). Bad input must give an error that says where, never a panic; good
//! input must give exactly the endpoints it describes.
//!
//! `LB_FUZZ_CASES` sets the cases per target (`cargo xtask reliability`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use lb_core::{Endpoint, EndpointSet, Timestamp};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;

use crate::dns::{SrvRecord, TargetAddresses, host_endpoints, srv_endpoints, srv_targets};
use crate::file_format::{FileFormat, parse_endpoints};
use crate::source::ListDiffer;

/// Cases per target when `LB_FUZZ_CASES` is not set: a few seconds' worth.
const DEFAULT_CASES: u32 = 512;

fn config() -> ProptestConfig {
    let cases = std::env::var("LB_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_CASES);
    // A failure is kept as a named regression test instead of a file beside the sources.
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

// ---- endpoint files ----

fn format() -> impl Strategy<Value = FileFormat> {
    prop_oneof![Just(FileFormat::Toml), Just(FileFormat::Json)]
}

/// A refused file must say where, inside the text.
fn check_file(text: &str, format: FileFormat) -> Result<Option<Vec<Endpoint>>, TestCaseError> {
    match parse_endpoints(text, format) {
        Ok(endpoints) => {
            for endpoint in &endpoints {
                prop_assert!(endpoint.weight() >= 1, "a zero weight accepted");
            }
            let set = EndpointSet::new(endpoints.clone(), Timestamp::ZERO);
            prop_assert!(set.len() <= endpoints.len());
            Ok(Some(endpoints))
        }
        Err(error) => {
            prop_assert!(error.line >= 1 && error.line <= text.matches('\n').count() + 1, "{}", error);
            prop_assert!(error.column >= 1, "{}", error);
            prop_assert!(!error.message.is_empty());
            Ok(None)
        }
    }
}

/// JSON's and TOML's punctuation, the format's keys and plausible values, in any order.
fn token_soup() -> impl Strategy<Value = String> {
    let token = proptest::sample::select(
        &[
            "{",
            "}",
            "[",
            "]",
            "[[",
            "]]",
            ":",
            "=",
            ",",
            "\"",
            "'",
            "\n",
            " ",
            "endpoints",
            "\"endpoints\"",
            "address",
            "\"address\"",
            "weight",
            "\"weight\"",
            "zone",
            "tags",
            "meta",
            "id",
            "\"10.0.0.1:80\"",
            "\"[::1]:0\"",
            "\"web:8080\"",
            "\"web\"",
            "\"\"",
            "0",
            "1",
            "-1",
            "4294967296",
            "1.5",
            "1e999",
            "null",
            "true",
            "\\u0000",
            "\\ud800",
            "\u{e9}",
            "\u{10FFFF}",
            "#",
            "//",
        ][..],
    );
    proptest::collection::vec(token, 0..48).prop_map(|tokens| tokens.concat())
}

/// One generated entry: its fields, each as written in the file or absent.
#[derive(Debug, Clone)]
struct EntryText {
    address: String,
    weight: Option<i64>,
    zone: Option<String>,
    tags: Vec<String>,
    meta: BTreeMap<String, String>,
    id: Option<String>,
}

fn entry_text() -> impl Strategy<Value = EntryText> {
    let address = prop_oneof![
        3 => proptest::sample::select(
            &["10.0.0.1:80", "10.0.0.2:8080", "[::1]:443", "web-1.internal:8080", "web_2:1"][..]
        )
        .prop_map(str::to_string),
        1 => proptest::sample::select(&["10.0.0.1", "web:0", "web:65536", ":80", "a b:80", "", "10.0.0.1:0"][..])
            .prop_map(str::to_string),
        1 => "\\PC{0,12}",
    ];
    let weight = prop_oneof![
        2 => Just(None),
        3 => (1..1000i64).prop_map(Some),
        1 => proptest::sample::select(&[0i64, -1, 4_294_967_295, 4_294_967_296][..]).prop_map(Some),
    ];
    let text = || "\\PC{0,8}";
    (
        address,
        weight,
        proptest::option::of(text()),
        proptest::collection::vec(text(), 0..3),
        proptest::collection::btree_map(text(), text(), 0..3),
        proptest::option::of(prop_oneof![Just(String::new()), Just("web-1".to_string()), text().boxed()]),
    )
        .prop_map(|(address, weight, zone, tags, meta, id)| EntryText {
            address,
            weight,
            zone,
            tags,
            meta,
            id,
        })
}

fn render(entries: &[EntryText], format: FileFormat) -> String {
    let mut out = toml::Table::new();
    let list: Vec<toml::Value> = entries
        .iter()
        .map(|entry| {
            let mut table = toml::Table::new();
            table.insert("address".into(), entry.address.clone().into());
            if let Some(weight) = entry.weight {
                table.insert("weight".into(), weight.into());
            }
            if let Some(zone) = &entry.zone {
                table.insert("zone".into(), zone.clone().into());
            }
            if !entry.tags.is_empty() {
                table.insert("tags".into(), entry.tags.clone().into());
            }
            if !entry.meta.is_empty() {
                let meta: toml::Table =
                    entry.meta.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
                table.insert("meta".into(), meta.into());
            }
            if let Some(id) = &entry.id {
                table.insert("id".into(), id.clone().into());
            }
            table.into()
        })
        .collect();
    out.insert("endpoints".into(), list.into());
    match format {
        FileFormat::Toml => toml::to_string(&out).expect("a table of strings and numbers is TOML"),
        FileFormat::Json => serde_json::to_string_pretty(&out).expect("a table is JSON"),
    }
}

/// The endpoint a valid entry must become; `None` when the entry is invalid.
fn expected(entry: &EntryText) -> Option<Endpoint> {
    let weight = match entry.weight {
        None => 1,
        Some(w) => u32::try_from(w).ok().filter(|&w| w >= 1)?,
    };
    let mut endpoint = Endpoint::new(entry.address.parse::<lb_core::Address>().ok()?).with_weight(weight);
    match entry.id.as_deref() {
        Some("") => return None,
        Some(id) => endpoint = endpoint.with_id(id),
        None => {}
    }
    if let Some(zone) = &entry.zone {
        endpoint = endpoint.with_zone(zone.as_str());
    }
    for tag in &entry.tags {
        endpoint = endpoint.with_tag(tag.as_str());
    }
    for (key, value) in &entry.meta {
        endpoint = endpoint.with_meta(key.as_str(), value.as_str());
    }
    Some(endpoint)
}

fn byte_edits() -> impl Strategy<Value = Vec<(proptest::sample::Index, u8, u8)>> {
    let byte = proptest::sample::select(&b"{}[]:=,\"'\n 0-.\\\xc3\xa9"[..]);
    proptest::collection::vec((any::<proptest::sample::Index>(), 0..3u8, byte), 0..5)
}

fn edited(text: &str, edits: &[(proptest::sample::Index, u8, u8)]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for &(place, kind, byte) in edits {
        let i = place.index(bytes.len() + 1);
        match kind {
            0 => bytes.insert(i, byte),
            _ if i == bytes.len() => {}
            1 => {
                bytes.remove(i);
            }
            _ => bytes[i] = byte,
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn endpoint_files_from_arbitrary_text(text in "\\PC{0,256}", format in format()) {
        check_file(&text, format)?;
    }

    #[test]
    fn endpoint_files_from_token_soup(text in token_soup(), format in format()) {
        check_file(&text, format)?;
    }

    #[test]
    fn endpoint_files_generated_then_mutated(
        entries in proptest::collection::vec(entry_text(), 0..5),
        edits in byte_edits(),
    ) {
        let wanted: Option<Vec<Endpoint>> = entries.iter().map(expected).collect();
        // Two entries with one id (an id defaults to the address) refuse the file.
        let wanted = wanted.filter(|endpoints| {
            let ids: std::collections::HashSet<&str> = endpoints.iter().map(|e| e.id().as_str()).collect();
            ids.len() == endpoints.len()
        });
        let mut read = Vec::new();
        for format in [FileFormat::Toml, FileFormat::Json] {
            let text = render(&entries, format);
            let parsed = check_file(&text, format)?;
            if edits.is_empty() {
                prop_assert_eq!(&parsed, &wanted, "{}", text);
            }
            read.push(parsed);
            check_file(&edited(&text, &edits), format)?;
        }
        prop_assert_eq!(&read[0], &read[1], "TOML and JSON read the same entries differently");
    }
}

// ---- DNS answers ----

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        3 => (0..4u8).prop_map(|i| IpAddr::V4(Ipv4Addr::new(10, 0, 0, i))),
        1 => (0..3u16).prop_map(|i| IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, i))),
        1 => any::<IpAddr>(),
    ]
}

fn srv_record() -> impl Strategy<Value = SrvRecord> {
    let target = prop_oneof![
        4 => proptest::sample::select(&["a.internal.", "b.internal.", "c.internal.", "."][..]).prop_map(str::to_string),
        1 => "[a-z.]{0,6}",
    ];
    let priority = prop_oneof![3 => 0..3u16, 1 => any::<u16>()];
    let weight = prop_oneof![1 => Just(0u16), 3 => 1..100u16, 1 => any::<u16>()];
    let port = prop_oneof![3 => proptest::sample::select(&[80u16, 443, 8080][..]), 1 => any::<u16>()];
    (priority, weight, port, target).prop_map(|(priority, weight, port, target)| SrvRecord {
        priority,
        weight,
        port,
        target,
    })
}

/// What each target's lookup gives; drawn for every name a record could hold.
fn lookups() -> impl Strategy<Value = Vec<(Vec<IpAddr>, u64, bool)>> {
    proptest::collection::vec((proptest::collection::vec(ip(), 0..4), 0..600u64, any::<bool>()), 8)
}

/// An SRV answer: its records, how long it is valid (seconds), and the lookups of its targets.
type SrvAnswer = (Vec<SrvRecord>, u64, Vec<(Vec<IpAddr>, u64, bool)>);

fn srv_answer() -> impl Strategy<Value = SrvAnswer> {
    (proptest::collection::vec(srv_record(), 0..8), 0..600u64, lookups())
}

/// The lookups of the targets `srv_targets` asks for, as `resolve_srv` records them.
fn resolve(records: &[SrvRecord], lookups: &[(Vec<IpAddr>, u64, bool)]) -> BTreeMap<String, TargetAddresses> {
    srv_targets(records)
        .into_iter()
        .enumerate()
        .map(|(i, target)| {
            let (ips, ttl, exists) = &lookups[i % lookups.len()];
            let answer = if *exists && !ips.is_empty() {
                TargetAddresses::Found(ips.clone(), Duration::from_secs(*ttl))
            } else {
                TargetAddresses::Missing
            };
            (target.to_string(), answer)
        })
        .collect()
}

/// Checks one SRV answer against RFC 2782's reading; the endpoints, when any.
fn check_srv(answer: &SrvAnswer) -> Result<Option<Vec<Endpoint>>, TestCaseError> {
    let (records, ttl, lookups) = answer;
    let targets = srv_targets(records);
    let best = records.iter().map(|r| r.priority).min();
    let best_records: Vec<&SrvRecord> = records.iter().filter(|r| Some(r.priority) == best).collect();
    let wanted: BTreeSet<&str> =
        best_records.iter().filter(|r| r.target != ".").map(|r| r.target.as_str()).collect();
    prop_assert_eq!(targets.iter().copied().collect::<BTreeSet<_>>(), wanted.clone());
    prop_assert_eq!(targets.len(), wanted.len(), "a target looked up twice");
    let resolved = resolve(records, lookups);
    let answer_ttl = Duration::from_secs(*ttl);
    let outcome = srv_endpoints("_http._tcp.web.", records, answer_ttl, &resolved);
    // Every address of every best record whose target has one, with the record's port and weight.
    let mut addresses = Vec::new();
    let mut valid_for = answer_ttl;
    for record in best_records.iter().filter(|r| r.target != ".") {
        if let Some(TargetAddresses::Found(ips, target_ttl)) = resolved.get(&record.target) {
            valid_for = valid_for.min(*target_ttl);
            addresses.extend(ips.iter().map(|&ip| (ip, record.port, u32::from(record.weight).max(1))));
        }
    }
    let only_root = best_records.iter().all(|r| r.target == ".");
    match outcome {
        Ok((endpoints, got_valid_for)) => {
            prop_assert!(!records.is_empty(), "endpoints from no record");
            prop_assert!(!addresses.is_empty() || only_root, "no address and no explicit `.`");
            let got: Vec<_> =
                endpoints.iter().map(|e| (e.address().to_string(), e.address().port(), e.weight())).collect();
            let expected: Vec<_> = addresses
                .iter()
                .map(|&(ip, port, weight)| (std::net::SocketAddr::new(ip, port).to_string(), port, weight))
                .collect();
            prop_assert_eq!(got, expected);
            prop_assert_eq!(got_valid_for, valid_for);
            let priority = best.map(|p| p.to_string());
            for endpoint in &endpoints {
                prop_assert_eq!(endpoint.meta().get("dns.priority"), priority.as_ref());
            }
            Ok(Some(endpoints))
        }
        Err(crate::DnsError::NoAddress { .. }) => {
            prop_assert!(records.is_empty() || (addresses.is_empty() && !only_root));
            Ok(None)
        }
        Err(other) => Err(TestCaseError::fail(format!("an answer without lookups failed: {other}"))),
    }
}

proptest! {
    #![proptest_config(config())]

    /// A run of SRV answers, each turned into endpoints and through the
    /// differ into the endpoint set: the set must hold exactly the last
    /// good answer's endpoints (one per address, the last record winning).
    #[test]
    fn dns_srv_answers(answers in proptest::collection::vec(srv_answer(), 1..4)) {
        let mut differ = ListDiffer::new();
        let mut set = EndpointSet::empty();
        let mut last = None;
        for answer in &answers {
            let Some(endpoints) = check_srv(answer)? else { continue };
            for change in differ.next(endpoints.clone()) {
                set = set.applied(&change, Timestamp::ZERO);
            }
            last = Some(endpoints);
        }
        let from_scratch = EndpointSet::new(last.unwrap_or_default(), Timestamp::ZERO);
        let ids = |s: &EndpointSet| s.iter().map(|m| m.endpoint().clone()).collect::<Vec<_>>();
        prop_assert_eq!(ids(&set), ids(&from_scratch));
    }

    #[test]
    fn dns_host_answers(ips in proptest::collection::vec(ip(), 0..12), port in any::<u16>()) {
        let endpoints = host_endpoints("web.internal.", port, ips.clone());
        prop_assert_eq!(endpoints.len(), ips.len());
        for (endpoint, ip) in endpoints.iter().zip(&ips) {
            prop_assert_eq!(endpoint.address().to_string(), std::net::SocketAddr::new(*ip, port).to_string());
            prop_assert_eq!(endpoint.weight(), 1);
        }
        let set = EndpointSet::new(endpoints, Timestamp::ZERO);
        prop_assert_eq!(set.len(), ips.iter().collect::<BTreeSet<_>>().len(), "one endpoint per address");
    }
}
