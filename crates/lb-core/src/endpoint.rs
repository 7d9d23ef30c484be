//! Who an endpoint is and what we know about it.

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::net::SocketAddr;
use core::str::FromStr;

/// A stable name for an endpoint, used to match it across discovery updates.
///
/// Discovery sources choose it: Consul's service ID, or the address for DNS
/// and static lists. Cloning is a reference-count bump.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointId(Arc<str>);

impl EndpointId {
    /// Wraps a name as an id.
    pub fn new(id: &str) -> Self {
        EndpointId(Arc::from(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for EndpointId {
    fn from(id: &str) -> Self {
        EndpointId::new(id)
    }
}

/// Where to send traffic: a socket address, or a host name still to resolve.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Address {
    /// An IP address and port.
    Socket(SocketAddr),
    /// A host name and port, resolved by whoever connects.
    Host {
        /// The DNS name.
        host: String,
        /// The TCP port.
        port: u16,
    },
}

impl Address {
    /// The TCP port.
    pub fn port(&self) -> u16 {
        match self {
            Address::Socket(addr) => addr.port(),
            Address::Host { port, .. } => *port,
        }
    }

    /// The host without the port: the IP address as text, or the DNS name.
    /// It is what a connection dials with the port, and the TLS name to verify.
    pub fn host(&self) -> alloc::borrow::Cow<'_, str> {
        match self {
            Address::Socket(addr) => addr.ip().to_string().into(),
            Address::Host { host, .. } => host.as_str().into(),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Socket(addr) => addr.fmt(f),
            Address::Host { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(addr: SocketAddr) -> Self {
        Address::Socket(addr)
    }
}

/// Why text could not be read as an [`Address`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// There is no `:port` at the end.
    #[error("`{0}` has no port: write host:port")]
    MissingPort(String),
    /// The port is not a number from 1 to 65535.
    #[error("`{0}` has a bad port: it must be a number from 1 to 65535")]
    BadPort(String),
    /// The host part is empty or holds characters a host name cannot.
    #[error("`{0}` has a bad host name")]
    BadHost(String),
}

impl FromStr for Address {
    type Err = AddressError;

    /// Reads `1.2.3.4:80`, `[::1]:80` or `name.example:80`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            // Port 0 means "any port" to a listener; nothing can be reached there.
            if addr.port() == 0 {
                return Err(AddressError::BadPort(text.to_string()));
            }
            return Ok(Address::Socket(addr));
        }
        let (host, port) =
            text.rsplit_once(':').ok_or_else(|| AddressError::MissingPort(text.to_string()))?;
        let port = match port.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(AddressError::BadPort(text.to_string())),
        };
        let host_ok = !host.is_empty()
            && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        if !host_ok {
            return Err(AddressError::BadHost(text.to_string()));
        }
        Ok(Address::Host { host: host.to_string(), port })
    }
}

/// What discovery reports about an endpoint's health, carried with the
/// endpoint (Consul's check status; other sources leave it passing).
///
/// The snapshot consumer mirrors it into the endpoint's
/// [`HealthFlag::DiscoveryWarning`](crate::HealthFlag::DiscoveryWarning), so
/// the flag always follows discovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DiscoveryHealth {
    /// Healthy, or the source says nothing about health.
    #[default]
    Passing,
    /// Takes traffic, but discovery reports a warning (Consul's `warning`):
    /// the endpoint is `Degraded`.
    Warning,
}

/// One backend instance: its identity, address, weight and labels.
///
/// Immutable once built; changes arrive as new values through discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    id: EndpointId,
    address: Address,
    weight: u32,
    zone: Option<String>,
    tags: Vec<String>,
    meta: BTreeMap<String, String>,
    health: DiscoveryHealth,
}

impl Endpoint {
    /// An endpoint of weight 1 whose id is its address.
    pub fn new(address: impl Into<Address>) -> Self {
        let address = address.into();
        Endpoint {
            id: EndpointId::new(&address.to_string()),
            address,
            weight: 1,
            zone: None,
            tags: Vec::new(),
            meta: BTreeMap::new(),
            health: DiscoveryHealth::Passing,
        }
    }

    /// Replaces the id.
    pub fn with_id(mut self, id: impl Into<EndpointId>) -> Self {
        self.id = id.into();
        self
    }

    /// Sets the weight; 0 is raised to 1, because a zero-weight endpoint
    /// would be a removal in disguise (remove it instead).
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight.max(1);
        self
    }

    /// Sets the zone (a locality label such as an availability zone).
    pub fn with_zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self
    }

    /// Adds a tag.
    pub fn with_tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Adds a metadata entry, replacing any with the same key.
    pub fn with_meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.meta.insert(key.into(), value.into());
        self
    }

    /// Sets what discovery reports about the endpoint's health.
    pub fn with_discovery_health(mut self, health: DiscoveryHealth) -> Self {
        self.health = health;
        self
    }

    /// The stable identity.
    pub fn id(&self) -> &EndpointId {
        &self.id
    }

    /// Where to connect.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The relative share of traffic, at least 1.
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// The locality label, if any.
    pub fn zone(&self) -> Option<&str> {
        self.zone.as_deref()
    }

    /// The tags, in the order given.
    pub fn tags(&self) -> &[String] {
        &self.tags
    }

    /// The metadata entries, sorted by key.
    pub fn meta(&self) -> &BTreeMap<String, String> {
        &self.meta
    }

    /// What discovery reports about the endpoint's health; passing unless
    /// a source set it.
    pub fn discovery_health(&self) -> DiscoveryHealth {
        self.health
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse() {
        assert_eq!("127.0.0.1:80".parse::<Address>().unwrap().to_string(), "127.0.0.1:80");
        assert_eq!("[::1]:8080".parse::<Address>().unwrap().port(), 8080);
        assert_eq!(
            "users.service.consul:9000".parse::<Address>().unwrap(),
            Address::Host { host: "users.service.consul".to_string(), port: 9000 }
        );
    }

    #[test]
    fn the_host_is_the_ip_or_the_name_without_the_port() {
        assert_eq!("10.0.0.1:80".parse::<Address>().unwrap().host(), "10.0.0.1");
        assert_eq!("[::1]:443".parse::<Address>().unwrap().host(), "::1");
        assert_eq!("users.service.consul:9000".parse::<Address>().unwrap().host(), "users.service.consul");
    }

    #[test]
    fn bad_addresses_say_why() {
        assert!(matches!("localhost".parse::<Address>(), Err(AddressError::MissingPort(_))));
        assert!(matches!("host:0".parse::<Address>(), Err(AddressError::BadPort(_))));
        assert!(
            matches!("10.0.0.1:0".parse::<Address>(), Err(AddressError::BadPort(_))),
            "nothing listens on port 0"
        );
        assert!(matches!("[::1]:0".parse::<Address>(), Err(AddressError::BadPort(_))));
        assert!(matches!("host:99999".parse::<Address>(), Err(AddressError::BadPort(_))));
        assert!(matches!(":80".parse::<Address>(), Err(AddressError::BadHost(_))));
        assert!(matches!("a b:80".parse::<Address>(), Err(AddressError::BadHost(_))));
    }

    #[test]
    fn builder_sets_fields_and_guards_weight() {
        let addr: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let e = Endpoint::new(addr)
            .with_weight(0)
            .with_zone("eu-1a")
            .with_tag("canary")
            .with_meta("version", "2");
        assert_eq!(e.id().as_str(), "10.0.0.1:80");
        assert_eq!(e.weight(), 1);
        assert_eq!(e.zone(), Some("eu-1a"));
        assert_eq!(e.tags(), ["canary".to_string()]);
        assert_eq!(e.meta().get("version").map(String::as_str), Some("2"));
        assert_eq!(e.clone().with_id("web-1").id().as_str(), "web-1");
        assert_eq!(e.discovery_health(), DiscoveryHealth::Passing);
        let warned = e.clone().with_discovery_health(DiscoveryHealth::Warning);
        assert_eq!(warned.discovery_health(), DiscoveryHealth::Warning);
        assert_ne!(warned, e, "a change of reported health is a change of the endpoint");
    }
}
