//! Discovery sources as written in a configuration file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::dns::{DnsConfig, DnsError, DnsQuery, DnsSource};
use crate::file::{FileError, FileSource};
use crate::file_format::Entry;
use crate::source::{ChangeStream, changes};
use crate::static_list::StaticSource;

/// A discovery source as a config file describes it, tagged by `kind`.
///
/// ```toml
/// kind = "static"
/// endpoints = [{ address = "10.0.0.1:80", weight = 2 }, { address = "10.0.0.2:80" }]
/// ```
/// ```toml
/// kind = "file"
/// path = "/etc/lb/web.toml"   # .toml or .json
/// debounce_ms = 50             # optional
/// ```
/// ```toml
/// kind = "dns"
/// name = "web.internal."       # A/AAAA; needs `port`
/// port = 8080
/// # srv = true                 # SRV instead: `name = "_http._tcp.web.internal."`, no `port`
/// # servers = ["10.0.0.53:53"] # optional; default: /etc/resolv.conf
/// # min_ttl_ms, max_ttl_ms, retry_ms, timeout_ms: optional, see `DnsConfig`
/// ```
///
/// Static entries use the endpoint file's entry format (`address`, `weight`,
/// `zone`, `tags`, `meta`, `id`). Unknown keys are errors.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceConfig {
    /// A fixed list.
    Static {
        /// The endpoints.
        #[serde(rename = "endpoints")]
        entries: Vec<ConfigEntry>,
    },
    /// A watched endpoint file.
    File {
        /// The file; its extension gives the format.
        path: PathBuf,
        /// Pause between a change event and the read, in milliseconds.
        #[serde(default)]
        debounce_ms: Option<u64>,
    },
    /// A DNS name, re-resolved at its TTL.
    Dns {
        /// The name (for SRV, the full `_service._proto.name`).
        name: String,
        /// The port of every A/AAAA address; absent for SRV.
        #[serde(default)]
        port: Option<u16>,
        /// Query SRV records instead of A/AAAA.
        #[serde(default)]
        srv: bool,
        /// Name servers to ask instead of the system's.
        #[serde(default)]
        servers: Vec<SocketAddr>,
        /// See [`DnsConfig::min_ttl`].
        #[serde(default)]
        min_ttl_ms: Option<u64>,
        /// See [`DnsConfig::max_ttl`].
        #[serde(default)]
        max_ttl_ms: Option<u64>,
        /// See [`DnsConfig::retry_after`].
        #[serde(default)]
        retry_ms: Option<u64>,
        /// See [`DnsConfig::query_timeout`].
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
}

/// One endpoint of a `static` source: the endpoint file's entry format.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct ConfigEntry(Entry);

/// Why a configured source could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SourceConfigError {
    /// A `dns` source without `srv` needs a `port`.
    #[error("dns source `{0}`: set `port` (or `srv = true` for SRV records)")]
    MissingPort(String),
    /// An SRV record carries its own ports.
    #[error("dns source `{0}`: SRV records carry their own ports; remove `port`")]
    PortWithSrv(String),
    /// The file source could not be set up.
    #[error(transparent)]
    File(#[from] FileError),
    /// The DNS source could not be set up.
    #[error(transparent)]
    Dns(#[from] DnsError),
}

impl SourceConfig {
    /// Starts the source and returns its change stream. Needs a tokio runtime
    /// only once the stream is polled.
    ///
    /// # Errors
    /// A [`SourceConfigError`] saying which setting is wrong.
    pub fn build(&self) -> Result<ChangeStream, SourceConfigError> {
        Ok(match self {
            SourceConfig::Static { entries } => {
                changes(StaticSource::new(entries.iter().map(|e| e.0.clone().into_endpoint())))
            }
            SourceConfig::File { path, debounce_ms } => {
                let mut source = FileSource::new(path)?;
                if let Some(ms) = debounce_ms {
                    source = source.with_debounce(Duration::from_millis(*ms));
                }
                changes(source)
            }
            SourceConfig::Dns { name, port, srv, servers, min_ttl_ms, max_ttl_ms, retry_ms, timeout_ms } => {
                let query = match (srv, port) {
                    (true, None) => DnsQuery::Srv { name: name.clone() },
                    (true, Some(_)) => return Err(SourceConfigError::PortWithSrv(name.clone())),
                    (false, Some(port)) => DnsQuery::Host { name: name.clone(), port: *port },
                    (false, None) => return Err(SourceConfigError::MissingPort(name.clone())),
                };
                let defaults = DnsConfig::default();
                let ms =
                    |value: &Option<u64>, default: Duration| value.map_or(default, Duration::from_millis);
                let config = DnsConfig {
                    min_ttl: ms(min_ttl_ms, defaults.min_ttl),
                    max_ttl: ms(max_ttl_ms, defaults.max_ttl),
                    retry_after: ms(retry_ms, defaults.retry_after),
                    query_timeout: ms(timeout_ms, defaults.query_timeout),
                };
                let source = if servers.is_empty() {
                    DnsSource::system(query, config)?
                } else {
                    DnsSource::with_name_servers(query, servers, config)?
                };
                changes(source)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use lb_core::{Change, Endpoint};

    fn parse(text: &str) -> Result<SourceConfig, toml::de::Error> {
        toml::from_str(text)
    }

    #[tokio::test]
    async fn a_static_config_emits_its_endpoints() {
        let config = parse(
            r#"kind = "static"
               endpoints = [{ address = "10.0.0.2:80", weight = 2, zone = "eu-1a" }, { address = "10.0.0.1:80" }]"#,
        )
        .unwrap();
        let all: Vec<Change> = config.build().unwrap().collect().await;
        let one = Endpoint::new("10.0.0.1:80".parse::<lb_core::Address>().unwrap());
        let two = Endpoint::new("10.0.0.2:80".parse::<lb_core::Address>().unwrap())
            .with_weight(2)
            .with_zone("eu-1a");
        assert_eq!(all, [Change::Snapshot(vec![one, two])]);
    }

    #[test]
    fn dns_configs_are_checked() {
        let host =
            parse("kind = \"dns\"\nname = \"web.internal.\"\nport = 80\nservers = [\"127.0.0.1:5353\"]");
        assert!(host.unwrap().build().is_ok());
        let err = parse("kind = \"dns\"\nname = \"web.internal.\"").unwrap().build().err().unwrap();
        assert!(matches!(err, SourceConfigError::MissingPort(_)), "{err}");
        let err = parse("kind = \"dns\"\nname = \"_http._tcp.web.\"\nsrv = true\nport = 80").unwrap().build();
        assert!(matches!(err.err().unwrap(), SourceConfigError::PortWithSrv(_)));
    }

    #[test]
    fn file_configs_and_typos_are_checked() {
        let err = parse("kind = \"file\"\npath = \"/tmp/endpoints.yaml\"").unwrap().build().err().unwrap();
        assert!(matches!(err, SourceConfigError::File(FileError::UnknownFormat { .. })), "{err}");
        let typo = parse("kind = \"file\"\npath = \"/tmp/web.toml\"\ndebounce = 5").unwrap_err();
        assert!(typo.message().contains("unknown field `debounce`"), "{typo}");
        let unknown = parse("kind = \"consul\"").unwrap_err();
        assert!(unknown.message().contains("unknown variant `consul`"), "{unknown}");
        let bad_address = parse("kind = \"static\"\nendpoints = [{ address = \"web\" }]").unwrap_err();
        assert!(bad_address.message().contains("`web` has no port"), "{bad_address}");
    }
}
