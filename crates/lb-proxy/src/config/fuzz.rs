//! Fuzz targets for the configuration: arbitrary text, TOML-shaped token
//! soup, and valid files mutated by key and by byte. Loading must give a
//! configuration that keeps every promise of `validate`, or an error that
//! points into the text; it must never panic.

use proptest::prelude::*;
use toml::Value;

use super::{Config, ConfigError};
use crate::fuzzing;

/// Every section and key, as the example documents them.
const FULL: &str = include_str!("../../examples/lb.toml");

/// The smallest useful file.
const SMALL: &str = r#"
[admin]
enabled = false

[[listeners]]
listen = "127.0.0.1:0"

[[routes]]
path_prefix = "/"
upstream = "web"

[upstreams.web]
algorithm = "maglev"
hash_key = { header = "x-user" }
discovery.static.endpoints = [{ address = "127.0.0.1:9", weight = 2 }, "web.internal:80"]
"#;

/// Keys and names the configuration knows, so mutations land on them.
const WORDS: &[&str] = &[
    "global",
    "admin",
    "listeners",
    "routes",
    "upstreams",
    "tracing",
    "web",
    "discovery",
    "static",
    "file",
    "dns",
    "consul",
    "endpoints",
    "address",
    "weight",
    "id",
    "path",
    "name",
    "port",
    "service",
    "listen",
    "enabled",
    "token",
    "actions",
    "histogram_buckets",
    "max_connections",
    "host",
    "path_prefix",
    "upstream",
    "algorithm",
    "protocol",
    "algorithm_params",
    "table_size",
    "points_per_weight",
    "balance_factor",
    "hash_key",
    "header",
    "cookie",
    "client_ip",
    "query",
    "host_header",
    "set",
    "health_check",
    "rise",
    "fall",
    "interval",
    "timeout",
    "outlier_detection",
    "preset",
    "max_ejection_percent",
    "base_ejection_time",
    "max_ejection_time",
    "circuit_breaker",
    "failure_ratio",
    "half_open_requests",
    "retry",
    "attempts",
    "retry_on",
    "budget_percent",
    "backoff",
    "backoff_base",
    "backoff_max",
    "timeouts",
    "connect",
    "per_try",
    "idle",
    "request",
    "limits",
    "slow_start",
    "panic_threshold",
    "worker_threads",
    "max_header_bytes",
    "max_headers",
    "trusted_proxies",
    "access_log",
    "access_log_file",
    "otlp_endpoint",
    "sample_ratio",
    "min_ttl",
    "max_ttl",
    "name_servers",
    "tau",
    "default_rtt",
];

/// Values that mean something to some key.
const VALUES: &[&str] = &[
    "",
    "0s",
    "1ms",
    "250ms",
    "1m 30s",
    "18446744073709551615s",
    "9999999999999999h",
    "soon",
    "127.0.0.1:0",
    "127.0.0.1:9901",
    "0.0.0.0:8080",
    "[::1]:80",
    "web.internal:80",
    "host:0",
    "10.0.0.1",
    "maglev",
    "ring_hash",
    "bounded_load",
    "slow_start",
    "p2c",
    "peak_ewma",
    "fnv_ring",
    "least_conn",
    "round_robin",
    "nope",
    "guide",
    "http1",
    "h2c",
    "json",
    "text",
    "off",
    "preserve",
    "endpoint",
    "/",
    "/health",
    "x",
    "10.0.0.0/8",
    "10.0.0.0/99",
    "http://127.0.0.1:4318/v1/traces",
    "https://x",
    "ftp://",
    "5xx",
    "timeout",
    "gateway_error",
    "full_jitter",
    "none",
    "web.toml",
    "web.yaml",
    "x-user",
];

fn word() -> impl Strategy<Value = String> {
    prop_oneof![4 => proptest::sample::select(WORDS).prop_map(str::to_string), 1 => "\\PC{0,8}"]
}

fn toml_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        proptest::sample::select(VALUES).prop_map(|s| Value::String(s.to_string())),
        "\\PC{0,16}".prop_map(Value::String),
        proptest::sample::select(
            &[0i64, 1, -1, 2, 3, 5, 100, 101, 255, 256, 8191, 65537, 4_294_967_291, i64::MAX][..]
        )
        .prop_map(Value::Integer),
        any::<i64>().prop_map(Value::Integer),
        proptest::sample::select(&[0.0, 0.6, 1.0, 1.5, -1.0, f64::NAN, f64::INFINITY, 1e300][..])
            .prop_map(Value::Float),
        any::<bool>().prop_map(Value::Boolean),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(word(), inner, 0..4)
                .prop_map(|entries| Value::Table(entries.into_iter().collect())),
        ]
    })
}

/// A step from a value into one of its parts.
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Item(usize),
}

/// Every path from `value` down to each of its parts, `value` itself first.
fn paths(value: &Value, prefix: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    out.push(prefix.clone());
    match value {
        Value::Table(table) => {
            for (key, part) in table {
                prefix.push(Step::Key(key.clone()));
                paths(part, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) => {
            for (i, part) in items.iter().enumerate() {
                prefix.push(Step::Item(i));
                paths(part, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn at<'a>(value: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    let Some((step, rest)) = path.split_first() else { return Some(value) };
    let part = match (value, step) {
        (Value::Table(table), Step::Key(key)) => table.get_mut(key)?,
        (Value::Array(items), Step::Item(i)) => items.get_mut(*i)?,
        _ => return None,
    };
    at(part, rest)
}

/// A change to one part of a parsed file.
#[derive(Debug, Clone)]
enum Edit {
    Remove,
    Replace(Value),
    /// Adds a key to a table, or an item to an array.
    Add(String, Value),
    /// Repeats the first item of an array, or a table inside its parent's array.
    Repeat,
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        2 => Just(Edit::Remove),
        4 => toml_value().prop_map(Edit::Replace),
        2 => (word(), toml_value()).prop_map(|(key, value)| Edit::Add(key, value)),
        1 => Just(Edit::Repeat),
    ]
}

fn apply(root: &mut Value, target: proptest::sample::Index, edit: Edit) {
    let mut all = Vec::new();
    paths(root, &mut Vec::new(), &mut all);
    let path = &all[target.index(all.len())];
    match edit {
        // The root stays a table: the file is one.
        Edit::Remove | Edit::Replace(_) if path.is_empty() => {}
        Edit::Remove => {
            let (last, parent) = path.split_last().expect("not the root");
            match (at(root, parent), last) {
                (Some(Value::Table(table)), Step::Key(key)) => drop(table.remove(key)),
                (Some(Value::Array(items)), Step::Item(i)) => drop(items.remove(*i)),
                _ => {}
            }
        }
        Edit::Replace(value) => {
            if let Some(part) = at(root, path) {
                *part = value;
            }
        }
        Edit::Add(key, value) => match at(root, path) {
            Some(Value::Table(table)) => drop(table.insert(key, value)),
            Some(Value::Array(items)) => items.push(value),
            _ => {}
        },
        Edit::Repeat => {
            if let Some(Value::Array(items)) = at(root, path)
                && let Some(first) = items.first().cloned()
            {
                items.push(first);
            }
        }
    }
}

/// Loads `text`: an accepted file must keep the promises of validation, and
/// a refused one must say where, inside the text.
fn check(text: &str) -> Result<(), TestCaseError> {
    match Config::parse(text, "fuzz.toml") {
        Ok(config) => check_accepted(&config, text),
        Err(error) => check_refused(&error, text),
    }
}

fn check_refused(error: &ConfigError, text: &str) -> Result<(), TestCaseError> {
    let Some((line, column)) = error.location() else {
        return Err(TestCaseError::fail(format!("no location: {error}")));
    };
    prop_assert!(line >= 1 && line <= text.matches('\n').count() + 1, "line {} outside the text", line);
    prop_assert!(column >= 1);
    prop_assert!(!error.reason().trim().is_empty(), "an error without a reason");
    let prefix = format!("fuzz.toml:{line}:{column}: ");
    prop_assert!(error.to_string().starts_with(&prefix), "{}", error);
    Ok(())
}

fn check_accepted(config: &Config, text: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(&config.text, text);
    prop_assert!(!config.listeners.is_empty() && !config.routes.is_empty());
    let global = &config.global;
    prop_assert!(*global.worker_threads.get_ref() >= 1);
    prop_assert!(*global.max_header_bytes.get_ref() >= 8192);
    prop_assert!((1..=crate::http1::request::MAX_FIELDS).contains(global.max_headers.get_ref()));
    for route in &config.routes {
        let route = route.get_ref();
        prop_assert!(config.upstreams.contains_key(route.upstream.get_ref()), "a route to no upstream");
        prop_assert!(route.path_prefix.get_ref().starts_with('/'));
    }
    for listener in &config.listeners {
        prop_assert!(*listener.get_ref().max_connections.get_ref() >= 1);
    }
    for upstream in config.upstreams.values() {
        let upstream = upstream.get_ref();
        let algorithm = crate::balancing::parse_algorithm(
            upstream.algorithm.get_ref(),
            &upstream.algorithm_params,
            upstream.slow_start,
        );
        prop_assert!(algorithm.is_ok(), "{:?}", algorithm.err());
        prop_assert!((1..=5).contains(upstream.retry.attempts.get_ref()));
        prop_assert!(crate::upstream::retry_budget(&upstream.retry).is_ok());
        prop_assert!(upstream.retry.backoff_base.get_ref() <= upstream.retry.backoff_max.get_ref());
        prop_assert!(*upstream.panic_threshold.get_ref() <= 100);
        let t = &upstream.timeouts;
        prop_assert!(![t.connect, t.request, t.per_try, t.idle, t.read, t.send].iter().any(|d| d.is_zero()));
    }
    Ok(())
}

/// TOML's punctuation, the configuration's words, and stray characters, in any order.
fn token_soup() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        3 => proptest::sample::select(
            &[
                "[", "]", "[[", "]]", "=", " = ", "\"", "'", "\"\"\"", "'''", "\n", "\r\n", "\r", " ", "\t", ".",
                ",", "{", "}", "#", "\\", "\\u", "\\U0010FFFF", "1", "-1", "1.5", "1e400", "nan", "inf",
                "0x1F", "true", "1979-05-27T07:32:00Z", "\u{e9}", "\u{10FFFF}", "\u{feff}", "\0",
            ][..],
        )
        .prop_map(str::to_string),
        2 => proptest::sample::select(WORDS).prop_map(str::to_string),
        1 => proptest::sample::select(VALUES).prop_map(|v| format!("\"{v}\"")),
    ];
    proptest::collection::vec(token, 0..64).prop_map(|tokens| tokens.concat())
}

/// A byte-level edit of a text: insert, delete or overwrite at a place.
fn byte_edits() -> impl Strategy<Value = Vec<(proptest::sample::Index, u8, u8)>> {
    let byte = proptest::sample::select(&b"[]=\"'\n #.,{}0a\xc3\xa9\\"[..]);
    proptest::collection::vec((any::<proptest::sample::Index>(), 0..3u8, byte), 1..6)
}

proptest! {
    #![proptest_config(fuzzing::config())]

    #[test]
    fn config_from_arbitrary_text(text in "\\PC{0,256}") {
        check(&text)?;
    }

    #[test]
    fn config_from_token_soup(text in token_soup()) {
        check(&text)?;
    }

    #[test]
    fn config_with_mutated_keys(
        seed in proptest::sample::select(&[FULL, SMALL][..]),
        edits in proptest::collection::vec((any::<proptest::sample::Index>(), edit()), 1..4),
    ) {
        let mut root = Value::Table(seed.parse::<toml::Table>().expect("the seeds are TOML"));
        for (target, edit) in edits {
            apply(&mut root, target, edit);
        }
        let Value::Table(table) = root else {
            return Err(TestCaseError::fail("the root is no longer a table"));
        };
        // A few shapes (an array of tables after a plain value) have no TOML text.
        if let Ok(text) = toml::to_string(&table) {
            check(&text)?;
        }
    }

    #[test]
    fn config_with_mutated_bytes(seed in proptest::sample::select(&[FULL, SMALL][..]), edits in byte_edits()) {
        let mut bytes = seed.as_bytes().to_vec();
        for (place, kind, byte) in edits {
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
        check(&String::from_utf8_lossy(&bytes))?;
    }
}

#[test]
fn the_seeds_are_valid() {
    for seed in [FULL, SMALL] {
        assert!(Config::parse(seed, "seed.toml").is_ok(), "{:?}", Config::parse(seed, "seed.toml").err());
    }
}
