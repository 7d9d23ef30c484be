//! Consul's JSON, as documented for `/v1/health/service/:service` and
//! `/v1/agent/service/register`. Only the fields lb uses are read; others are ignored.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::blocking::go_duration;

/// One instance of a service with its node and checks: an entry of
/// `GET /v1/health/service/:service`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceEntry {
    /// The node (machine, agent) the instance runs on.
    pub node: Node,
    /// The service instance.
    pub service: AgentService,
    /// The instance's checks and its node's checks (such as `serfHealth`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub checks: Vec<HealthCheck>,
}

/// A Consul node.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Node {
    /// The node's name.
    #[serde(rename = "Node")]
    pub name: String,
    /// The node's address, used when the service has none of its own.
    pub address: String,
    /// The node's datacenter.
    #[serde(default)]
    pub datacenter: String,
}

/// A registered service instance.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentService {
    /// The instance id, unique on its node.
    #[serde(rename = "ID")]
    pub id: String,
    /// The service name.
    pub service: String,
    /// The instance's tags.
    #[serde(default, deserialize_with = "null_as_default")]
    pub tags: Vec<String>,
    /// The instance's address; empty means "use the node's address".
    #[serde(default)]
    pub address: String,
    /// The instance's port.
    pub port: u16,
    /// The instance's metadata.
    #[serde(default, deserialize_with = "null_as_default")]
    pub meta: BTreeMap<String, String>,
    /// The weights to use while passing and while warning.
    #[serde(default)]
    pub weights: Weights,
}

/// Traffic weights by health, as Consul's DNS interface applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Weights {
    /// The weight while every check passes.
    pub passing: u32,
    /// The weight while some check warns (and none is critical).
    pub warning: u32,
}

impl Default for Weights {
    /// Consul's default: `{Passing: 1, Warning: 1}`.
    fn default() -> Self {
        Weights { passing: 1, warning: 1 }
    }
}

/// One health check's state.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthCheck {
    /// The check's id, such as `serfHealth` or `service:web-1`.
    #[serde(rename = "CheckID")]
    pub check_id: String,
    /// The check's status.
    pub status: CheckStatus,
    /// The service the check belongs to; empty for node checks.
    #[serde(rename = "ServiceID", default)]
    pub service_id: String,
}

/// A check status. Anything Consul may add later counts as critical, the
/// safe reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    /// Healthy.
    Passing,
    /// Degraded: still takes traffic, at the warning weight.
    Warning,
    /// Down (also maintenance mode, which Consul reports as a critical check).
    #[serde(other)]
    Critical,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A service registration: the body of `PUT /v1/agent/service/register`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Registration {
    #[serde(rename = "ID")]
    id: String,
    name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    address: Option<String>,
    port: u16,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    meta: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    weights: Option<Weights>,
    #[serde(skip_serializing_if = "Option::is_none")]
    check: Option<HttpCheck>,
}

/// An HTTP health check the agent runs against the service: 2xx passes, 429
/// warns, anything else is critical.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HttpCheck {
    #[serde(rename = "HTTP")]
    url: String,
    #[serde(rename = "Interval")]
    interval: String,
    #[serde(rename = "Timeout")]
    timeout: String,
    #[serde(rename = "DeregisterCriticalServiceAfter", skip_serializing_if = "Option::is_none")]
    deregister_critical_after: Option<String>,
}

impl HttpCheck {
    /// The agent GETs `url` every `interval`, giving up after `timeout`.
    pub fn new(url: impl Into<String>, interval: Duration, timeout: Duration) -> Self {
        HttpCheck {
            url: url.into(),
            interval: go_duration(interval),
            timeout: go_duration(timeout),
            deregister_critical_after: None,
        }
    }

    /// Has the agent deregister the service once the check stays critical
    /// this long: the safety net if the process dies without deregistering.
    pub fn deregister_critical_after(mut self, after: Duration) -> Self {
        self.deregister_critical_after = Some(go_duration(after));
        self
    }
}

impl Registration {
    /// Registers instance `id` of service `name` on `port`, at the agent's address.
    pub fn new(id: impl Into<String>, name: impl Into<String>, port: u16) -> Self {
        Registration {
            id: id.into(),
            name: name.into(),
            tags: Vec::new(),
            address: None,
            port,
            meta: BTreeMap::new(),
            weights: None,
            check: None,
        }
    }

    /// The address to announce instead of the agent's.
    pub fn address(mut self, address: impl Into<String>) -> Self {
        self.address = Some(address.into());
        self
    }

    /// Adds a tag.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Adds a metadata entry.
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.meta.insert(key.into(), value.into());
        self
    }

    /// Sets the passing and warning weights.
    pub fn weights(mut self, passing: u32, warning: u32) -> Self {
        self.weights = Some(Weights { passing, warning });
        self
    }

    /// Sets the HTTP health check.
    pub fn check(mut self, check: HttpCheck) -> Self {
        self.check = Some(check);
        self
    }

    /// The instance id.
    pub fn id(&self) -> &str {
        &self.id
    }
}
