//! DNS discovery: A/AAAA for a name and port, or SRV, re-resolved at the TTL.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use lb_core::Endpoint;

use crate::source::Source;

/// What to ask DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsQuery {
    /// The A and AAAA records of `name`; every address gets `port`.
    Host {
        /// The name to resolve, such as `web.internal.` (a final dot skips search domains).
        name: String,
        /// The port every endpoint gets.
        port: u16,
    },
    /// The SRV records of `name` (such as `_http._tcp.web.internal.`), each
    /// target resolved to its addresses with the record's port and weight.
    /// Only the lowest-numbered priority present is used (RFC 2782).
    Srv {
        /// The SRV name.
        name: String,
    },
}

impl DnsQuery {
    fn name(&self) -> &str {
        match self {
            DnsQuery::Host { name, .. } | DnsQuery::Srv { name } => name,
        }
    }
}

/// How often to re-resolve and how patiently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// Re-resolve no sooner than this after a success, whatever the TTL (default 1 s).
    pub min_ttl: Duration,
    /// Re-resolve no later than this after a success, whatever the TTL (default 300 s).
    pub max_ttl: Duration,
    /// Wait this long after a failed round before trying again (default 5 s).
    pub retry_after: Duration,
    /// How long one query may take (default 5 s).
    pub query_timeout: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            min_ttl: Duration::from_secs(1),
            max_ttl: Duration::from_secs(300),
            retry_after: Duration::from_secs(5),
            query_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a DNS round failed.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The resolver could not be built (for the system resolver: `/etc/resolv.conf`).
    #[error("cannot set up the DNS resolver: {0}")]
    Setup(#[source] NetError),
    /// [`DnsSource::with_name_servers`] was given no server to ask.
    #[error("no DNS name server given")]
    NoNameServers,
    /// A lookup failed (timeout, refused, no such name, no records).
    #[error("DNS lookup of {name} failed: {source}")]
    Lookup {
        /// The name looked up.
        name: String,
        /// What the resolver said.
        source: NetError,
    },
    /// The answer held records, but none gave an address.
    #[error("DNS lookup of {name} gave no usable address")]
    NoAddress {
        /// The name looked up.
        name: String,
    },
}

/// A DNS name watched by re-resolving it when its records expire.
///
/// After a success the next round comes at the answer's TTL clamped to
/// [`DnsConfig::min_ttl`]..=[`DnsConfig::max_ttl`]; after a failure (a
/// timeout, a refused query, NXDOMAIN, an empty answer) the last good list
/// stays and the next round comes after [`DnsConfig::retry_after`]. The one
/// explicit "zero endpoints" in DNS is an SRV answer whose only target is
/// `.` ("service decidedly not available", RFC 2782).
///
/// The source owns its resolver and clears the resolver's cache before each
/// round, so every round asks the server.
pub struct DnsSource {
    resolver: TokioResolver,
    query: DnsQuery,
    config: DnsConfig,
    next_round_in: Option<Duration>,
}

impl std::fmt::Debug for DnsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsSource")
            .field("query", &self.query)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl DnsSource {
    /// Resolves through the system's name servers (`/etc/resolv.conf`).
    ///
    /// # Errors
    /// [`DnsError::Setup`] when the system configuration cannot be read.
    pub fn system(query: DnsQuery, config: DnsConfig) -> Result<Self, DnsError> {
        let mut builder = TokioResolver::builder_tokio().map_err(DnsError::Setup)?;
        builder.options_mut().timeout = config.query_timeout;
        let resolver = builder.build().map_err(DnsError::Setup)?;
        Ok(DnsSource { resolver, query, config, next_round_in: None })
    }

    /// Resolves through these name servers only (UDP, falling back to TCP),
    /// ignoring `/etc/hosts`.
    ///
    /// # Errors
    /// [`DnsError::NoNameServers`] for an empty list; [`DnsError::Setup`]
    /// when the resolver cannot be built.
    pub fn with_name_servers(
        query: DnsQuery,
        servers: &[SocketAddr],
        config: DnsConfig,
    ) -> Result<Self, DnsError> {
        if servers.is_empty() {
            return Err(DnsError::NoNameServers);
        }
        let name_servers = servers
            .iter()
            .map(|server| {
                let mut ns = NameServerConfig::udp_and_tcp(server.ip());
                for connection in &mut ns.connections {
                    connection.port = server.port();
                }
                ns
            })
            .collect();
        let mut builder = TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(name_servers),
            TokioRuntimeProvider::default(),
        );
        builder.options_mut().timeout = config.query_timeout;
        builder.options_mut().use_hosts_file = ResolveHosts::Never;
        let resolver = builder.build().map_err(DnsError::Setup)?;
        Ok(DnsSource { resolver, query, config, next_round_in: None })
    }

    /// One round: the endpoints and how long the answer is valid.
    async fn resolve(&self) -> Result<(Vec<Endpoint>, Duration), DnsError> {
        match &self.query {
            DnsQuery::Host { name, port } => {
                let (ips, valid_for) = self.addresses(name).await?;
                Ok((host_endpoints(name, *port, ips), valid_for))
            }
            DnsQuery::Srv { name } => self.resolve_srv(name).await,
        }
    }

    async fn resolve_srv(&self, name: &str) -> Result<(Vec<Endpoint>, Duration), DnsError> {
        let lookup_error = |source| DnsError::Lookup { name: name.to_string(), source };
        let answer = self.resolver.srv_lookup(name).await.map_err(lookup_error)?;
        let records: Vec<SrvRecord> = answer
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(srv) => Some(SrvRecord {
                    priority: srv.priority,
                    weight: srv.weight,
                    port: srv.port,
                    target: if srv.target.is_root() { ".".to_string() } else { srv.target.to_ascii() },
                }),
                _ => None,
            })
            .collect();
        let mut targets = BTreeMap::new();
        for target in srv_targets(&records) {
            let resolved = match self.addresses(target).await {
                Ok((ips, valid_for)) => TargetAddresses::Found(ips, valid_for),
                // A target that does not exist is definitive: skip it. Any other failure fails the round.
                Err(DnsError::Lookup { source, .. })
                    if source.is_nx_domain() || source.is_no_records_found() =>
                {
                    tracing::warn!(srv = name, %target, "SRV target has no address; skipping it");
                    TargetAddresses::Missing
                }
                Err(other) => return Err(other),
            };
            targets.insert(target.to_string(), resolved);
        }
        srv_endpoints(name, &records, remaining(answer.valid_until()), &targets)
    }

    async fn addresses(&self, name: &str) -> Result<(Vec<IpAddr>, Duration), DnsError> {
        let lookup = self
            .resolver
            .lookup_ip(name)
            .await
            .map_err(|source| DnsError::Lookup { name: name.to_string(), source })?;
        let ips: Vec<IpAddr> = lookup.iter().collect();
        if ips.is_empty() {
            return Err(DnsError::NoAddress { name: name.to_string() });
        }
        Ok((ips, remaining(lookup.valid_until())))
    }
}

/// The endpoints of an A/AAAA answer: every address with `port`.
pub(crate) fn host_endpoints(name: &str, port: u16, ips: Vec<IpAddr>) -> Vec<Endpoint> {
    ips.into_iter().map(|ip| Endpoint::new(SocketAddr::new(ip, port)).with_meta("dns.name", name)).collect()
}

/// One SRV record, as the answer logic reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SrvRecord {
    pub(crate) priority: u16,
    pub(crate) weight: u16,
    pub(crate) port: u16,
    /// The target name in ASCII; `.` says "no service here" (RFC 2782).
    pub(crate) target: String,
}

impl SrvRecord {
    fn is_root(&self) -> bool {
        self.target == "."
    }
}

/// What looking up one SRV target's addresses gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TargetAddresses {
    /// The addresses, valid for this long.
    Found(Vec<IpAddr>, Duration),
    /// The name does not exist or has no address: the target is skipped.
    Missing,
}

/// The targets an SRV answer needs looked up: those of its lowest priority
/// (RFC 2782), each once, without `.`.
pub(crate) fn srv_targets(records: &[SrvRecord]) -> Vec<&str> {
    let Some(best) = records.iter().map(|srv| srv.priority).min() else { return Vec::new() };
    let mut targets: Vec<&str> = records
        .iter()
        .filter(|srv| srv.priority == best && !srv.is_root())
        .map(|srv| srv.target.as_str())
        .collect();
    targets.sort_unstable();
    targets.dedup();
    targets
}

/// The endpoints of an SRV answer valid for `valid_for`, given its targets'
/// addresses (`targets`, for every name [`srv_targets`] gave): each address
/// with its record's port and weight, valid until the first of them expires.
///
/// An answer whose best targets are all `.` is the explicit "zero
/// endpoints"; no record, or best targets none of which has an address, is
/// [`DnsError::NoAddress`].
pub(crate) fn srv_endpoints(
    name: &str,
    records: &[SrvRecord],
    mut valid_for: Duration,
    targets: &BTreeMap<String, TargetAddresses>,
) -> Result<(Vec<Endpoint>, Duration), DnsError> {
    let no_address = || DnsError::NoAddress { name: name.to_string() };
    let best = records.iter().map(|srv| srv.priority).min().ok_or_else(no_address)?;
    let best_records = || records.iter().filter(move |srv| srv.priority == best);
    let mut endpoints = Vec::new();
    for srv in best_records().filter(|srv| !srv.is_root()) {
        let Some(TargetAddresses::Found(ips, target_valid_for)) = targets.get(&srv.target) else { continue };
        valid_for = valid_for.min(*target_valid_for);
        endpoints.extend(ips.iter().map(|&ip| {
            Endpoint::new(SocketAddr::new(ip, srv.port))
                .with_weight(u32::from(srv.weight))
                .with_meta("dns.name", name)
                .with_meta("dns.target", srv.target.as_str())
                .with_meta("dns.priority", srv.priority.to_string())
        }));
    }
    if endpoints.is_empty() && !best_records().all(SrvRecord::is_root) {
        return Err(no_address());
    }
    Ok((endpoints, valid_for))
}

fn remaining(valid_until: std::time::Instant) -> Duration {
    valid_until.saturating_duration_since(std::time::Instant::now())
}

impl Source for DnsSource {
    type Error = DnsError;

    fn describe(&self) -> String {
        match &self.query {
            DnsQuery::Host { name, port } => format!("dns {name} port {port}"),
            DnsQuery::Srv { name } => format!("dns srv {name}"),
        }
    }

    async fn next_list(&mut self) -> Option<Result<Vec<Endpoint>, DnsError>> {
        if let Some(wait) = self.next_round_in.take() {
            tokio::time::sleep(wait).await;
        }
        self.resolver.clear_cache();
        let result = self.resolve().await;
        self.next_round_in = Some(match &result {
            Ok((_, valid_for)) => {
                (*valid_for).clamp(self.config.min_ttl, self.config.max_ttl.max(self.config.min_ttl))
            }
            Err(_) => self.config.retry_after,
        });
        tracing::trace!(query = self.query.name(), next_round_in = ?self.next_round_in, "dns round done");
        Some(result.map(|(endpoints, _)| endpoints))
    }
}
