//! The endpoint file format, in TOML or JSON, and its parse errors with positions.

use std::collections::BTreeMap;
use std::path::Path;

use lb_core::{Address, Endpoint};
use serde::{Deserialize, Deserializer};

/// How an endpoint file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// TOML: `[[endpoints]]` tables.
    Toml,
    /// JSON: `{"endpoints": [...]}`.
    Json,
}

impl FileFormat {
    /// The format a file name's extension implies: `.toml` or `.json`.
    pub fn from_path(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "toml" => Some(FileFormat::Toml),
            "json" => Some(FileFormat::Json),
            _ => None,
        }
    }
}

/// Why an endpoint file's text was rejected, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct ParseError {
    /// The 1-based line of the problem.
    pub line: usize,
    /// The 1-based column (in characters) of the problem.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointFile {
    endpoints: Vec<Entry>,
}

/// One endpoint as the file format (and an inline `static` list) writes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Entry {
    #[serde(deserialize_with = "address")]
    address: Address,
    #[serde(default = "one", deserialize_with = "weight")]
    weight: u32,
    #[serde(default)]
    zone: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    meta: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "id")]
    id: Option<String>,
    /// `"warning"`: takes traffic but is degraded, as Consul's warning instances.
    #[serde(default)]
    health: EntryHealth,
}

/// An entry's discovery health as the file writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum EntryHealth {
    #[default]
    Passing,
    Warning,
}

fn one() -> u32 {
    1
}

fn address<'de, D: Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(serde::de::Error::custom)
}

fn id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match String::deserialize(d)? {
        id if id.is_empty() => {
            Err(serde::de::Error::custom("id must not be empty (leave it out to use the address)"))
        }
        id => Ok(Some(id)),
    }
}

fn weight<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    match u32::deserialize(d)? {
        0 => {
            Err(serde::de::Error::custom("weight must be at least 1 (remove the entry to drop the endpoint)"))
        }
        w => Ok(w),
    }
}

impl Entry {
    pub(crate) fn into_endpoint(self) -> Endpoint {
        let mut endpoint = Endpoint::new(self.address).with_weight(self.weight);
        if let Some(id) = self.id {
            endpoint = endpoint.with_id(id.as_str());
        }
        if let Some(zone) = self.zone {
            endpoint = endpoint.with_zone(zone);
        }
        for tag in self.tags {
            endpoint = endpoint.with_tag(tag);
        }
        for (key, value) in self.meta {
            endpoint = endpoint.with_meta(key, value);
        }
        if self.health == EntryHealth::Warning {
            endpoint = endpoint.with_discovery_health(lb_core::DiscoveryHealth::Warning);
        }
        endpoint
    }
}

/// Reads the endpoints in an endpoint file's text.
///
/// An empty (or blank) text is an error, not zero endpoints: a file caught
/// half-written must not empty the set. Write `endpoints = []` (TOML) or
/// `{"endpoints": []}` (JSON) to say "zero endpoints".
///
/// # Errors
/// A [`ParseError`] with the line and column of the first problem: bad
/// syntax, an unknown field, a bad address, a zero weight, an empty id, or
/// two entries with the same id (an entry's id defaults to its address).
pub fn parse_endpoints(text: &str, format: FileFormat) -> Result<Vec<Endpoint>, ParseError> {
    if text.trim().is_empty() {
        return Err(ParseError {
            line: 1,
            column: 1,
            message: "the file is empty; write an empty `endpoints` list to mean zero endpoints".to_string(),
        });
    }
    let file: EndpointFile = match format {
        FileFormat::Toml => toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map_or((1, 1), |span| line_and_column(text, span.start));
            ParseError { line, column, message: e.message().trim().to_string() }
        })?,
        FileFormat::Json => serde_json::from_str(text).map_err(|e| ParseError {
            line: e.line(),
            column: e.column().max(1),
            message: json_message(&e),
        })?,
    };
    let endpoints: Vec<Endpoint> = file.endpoints.into_iter().map(Entry::into_endpoint).collect();
    let mut seen = std::collections::HashMap::with_capacity(endpoints.len());
    for (index, endpoint) in endpoints.iter().enumerate() {
        if let Some(first) = seen.insert(endpoint.id().as_str(), index) {
            let (line, column) = entry_position(text, format, index);
            let message = format!(
                "entry {} has the id `{}` of entry {} (an id defaults to the address): ids must differ",
                index + 1,
                endpoint.id().as_str(),
                first + 1
            );
            return Err(ParseError { line, column, message });
        }
    }
    Ok(endpoints)
}

/// Where the `index`th entry of a text that parsed starts, as 1-based line and column.
fn entry_position(text: &str, format: FileFormat, index: usize) -> (usize, usize) {
    let offset = match format {
        FileFormat::Toml => {
            #[derive(Deserialize)]
            struct Spans {
                endpoints: Vec<toml::Spanned<toml::Value>>,
            }
            toml::from_str::<Spans>(text).ok().and_then(|s| s.endpoints.get(index).map(|e| e.span().start))
        }
        FileFormat::Json => {
            #[derive(Deserialize)]
            struct Raw<'a> {
                #[serde(borrow)]
                endpoints: Vec<&'a serde_json::value::RawValue>,
            }
            serde_json::from_str::<Raw<'_>>(text).ok().and_then(|raw| {
                // A borrowed raw value is a slice of `text`: its address gives its offset.
                let entry = raw.endpoints.get(index)?.get();
                Some(entry.as_ptr() as usize - text.as_ptr() as usize)
            })
        }
    };
    line_and_column(text, offset.unwrap_or(0))
}

/// serde_json appends " at line L column C" to its message; we report those separately.
fn json_message(error: &serde_json::Error) -> String {
    let full = error.to_string();
    match full.rfind(" at line ") {
        Some(cut) => full[..cut].to_string(),
        None => full,
    }
}

/// The 1-based line and character column of a byte offset.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..text.floor_char_boundary(offset.min(text.len()))];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = r#"
[[endpoints]]
address = "10.0.0.1:8080"
weight = 3
zone = "eu-1a"
tags = ["canary"]
meta = { version = "2" }
id = "web-1"
health = "warning"

[[endpoints]]
address = "web-2.internal:8080"
"#;

    #[test]
    fn toml_and_json_read_every_field() {
        let from_toml = parse_endpoints(TOML, FileFormat::Toml).unwrap();
        let json = r#"{"endpoints": [
            {"address": "10.0.0.1:8080", "weight": 3, "zone": "eu-1a", "tags": ["canary"],
             "meta": {"version": "2"}, "id": "web-1", "health": "warning"},
            {"address": "web-2.internal:8080"}
        ]}"#;
        let from_json = parse_endpoints(json, FileFormat::Json).unwrap();
        assert_eq!(from_toml, from_json);
        let first = &from_toml[0];
        assert_eq!(first.id().as_str(), "web-1");
        assert_eq!(first.weight(), 3);
        assert_eq!(first.zone(), Some("eu-1a"));
        assert_eq!(first.tags(), ["canary".to_string()]);
        assert_eq!(first.meta().get("version").map(String::as_str), Some("2"));
        assert_eq!(from_toml[1].id().as_str(), "web-2.internal:8080", "the id defaults to the address");
        assert_eq!(from_toml[1].weight(), 1);
        assert_eq!(first.discovery_health(), lb_core::DiscoveryHealth::Warning);
        assert_eq!(from_toml[1].discovery_health(), lb_core::DiscoveryHealth::Passing);
    }

    #[test]
    fn an_empty_id_and_two_entries_with_one_id_are_refused_where_they_are() {
        let empty = "[[endpoints]]\naddress = \"10.0.0.1:80\"\nid = \"\"\n";
        let err = parse_endpoints(empty, FileFormat::Toml).unwrap_err();
        assert_eq!(err.line, 3, "{err}");
        assert!(err.message.starts_with("id must not be empty"), "{err}");

        let twice = "endpoints = [\n  { address = \"10.0.0.1:80\" },\n  { address = \"10.0.0.2:80\", id = \"a\" },\n  { address = \"10.0.0.1:80\" },\n]\n";
        let err = parse_endpoints(twice, FileFormat::Toml).unwrap_err();
        assert_eq!((err.line, err.column), (4, 3), "{err}");
        assert_eq!(
            err.message,
            "entry 3 has the id `10.0.0.1:80` of entry 1 (an id defaults to the address): ids must differ"
        );

        let json = "{\"endpoints\": [\n  {\"address\": \"10.0.0.1:80\", \"id\": \"a\"},\n  {\"address\": \"10.0.0.2:80\", \"id\": \"a\"}\n]}";
        let err = parse_endpoints(json, FileFormat::Json).unwrap_err();
        assert_eq!((err.line, err.column), (3, 3), "{err}");
        assert!(err.message.starts_with("entry 2 has the id `a` of entry 1"), "{err}");
    }

    #[test]
    fn explicit_zero_endpoints_is_allowed_but_an_empty_file_is_not() {
        assert_eq!(parse_endpoints("endpoints = []", FileFormat::Toml).unwrap(), []);
        assert_eq!(parse_endpoints(r#"{"endpoints": []}"#, FileFormat::Json).unwrap(), []);
        let err = parse_endpoints("  \n", FileFormat::Toml).unwrap_err();
        assert!(err.message.contains("empty"), "{err}");
        assert!(parse_endpoints("# nothing yet\n", FileFormat::Toml).is_err(), "`endpoints` is required");
    }

    #[test]
    fn toml_errors_point_at_the_line_and_column() {
        let text = "endpoints = [\n  { address = \"10.0.0.1:80\" },\n  { address = \"nope\" },\n]\n";
        let err = parse_endpoints(text, FileFormat::Toml).unwrap_err();
        assert_eq!((err.line, err.column), (3, 15), "{err}");
        assert!(err.message.contains("`nope` has no port"), "{err}");

        let half_written = "[[endpoints]]\naddress = \"10.0.0.1:80\"\nweight = ";
        let err = parse_endpoints(half_written, FileFormat::Toml).unwrap_err();
        assert_eq!(err.line, 3, "{err}");
    }

    #[test]
    fn json_errors_point_at_the_line_and_column() {
        let text = "{\"endpoints\": [\n  {\"address\": \"10.0.0.1:80\", \"weight\": 0}\n]}";
        let err = parse_endpoints(text, FileFormat::Json).unwrap_err();
        assert_eq!(err.line, 2, "{err}");
        assert!(err.message.contains("weight must be at least 1"), "{err}");
        assert!(!err.message.contains(" at line "), "the position is not repeated: {err}");

        let err =
            parse_endpoints("{\"endpoints\": [\n  {\"adress\": \"x:1\"}", FileFormat::Json).unwrap_err();
        assert_eq!(err.line, 2, "{err}");
        assert!(err.message.contains("unknown field `adress`"), "{err}");
    }

    #[test]
    fn columns_count_characters() {
        assert_eq!(line_and_column("ab\ncdé f", 8), (2, 5));
        assert_eq!(line_and_column("x", 99), (1, 2));
    }

    #[test]
    fn formats_come_from_extensions() {
        assert_eq!(FileFormat::from_path(Path::new("/etc/lb/web.TOML")), Some(FileFormat::Toml));
        assert_eq!(FileFormat::from_path(Path::new("web.json")), Some(FileFormat::Json));
        assert_eq!(FileFormat::from_path(Path::new("web.yaml")), None);
    }
}
