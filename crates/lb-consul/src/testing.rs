//! A CONTRACT FAKE of the few Consul HTTP API endpoints lb uses, for tests
//! (feature `testing`). It is NOT Consul.
//!
//! [`FakeConsul`] implements the documented contract the client relies on,
//! on hyper 1.x over 127.0.0.1: a raft-like index bumped on every change,
//! blocking queries (`index` + `wait`) held until the state changes or the
//! wait expires, `X-Consul-Index` on answers, ACL tokens (403 without the
//! right one), `dc` (only `dc1` exists), tag filters of the form
//! `"tag" in Service.Tags and ...`, and agent registration
//! (`PUT /v1/agent/service/register` and `.../deregister/:id`). Tests script
//! it: add and remove instances, set check statuses, force the index (even
//! backwards or to 0) and inject 500 errors. Every request is recorded.
//!
//! What it checks is only that lb keeps Consul's *documented* contract; it
//! says nothing about how a real agent behaves beyond it (that is what
//! `tests/real_agent.rs` is for, against a real agent, when one is available).
//! Anything it does not implement is answered 404 with a body saying so.
//!
//! Its waits (`until*`) are bounded (5 s) and panic when the state never
//! comes, so a test using it fails instead of hanging.
//!
//! ```
//! use std::time::Duration;
//! use lb_consul::testing::{FakeConsul, Instance};
//! use lb_consul::{ConsulClient, ConsulConfig, HealthWatch};
//! use lb_discovery::Source;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let fake = FakeConsul::start().await;
//! fake.put(Instance::passing("node-1", "web-1", "web", 8080));
//! let client = ConsulClient::new(ConsulConfig::new(&fake.url()).unwrap()).unwrap();
//! let mut watch = HealthWatch::new(client, "web").wait(Duration::from_millis(100));
//! let endpoints = watch.next_list().await.unwrap().unwrap();
//! assert_eq!(endpoints[0].id().as_str(), "node-1/web-1");
//! assert_eq!(endpoints[0].address().to_string(), "127.0.0.1:8080");
//!
//! // Its check goes critical: the next list leaves it out.
//! fake.set_check("node-1", "web-1", "service:web-1", "critical");
//! assert!(watch.next_list().await.unwrap().unwrap().is_empty());
//! # });
//! ```

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// One service instance as the fake stores it (one entry of
/// `/v1/health/service/:service`). The fields are public so tests can build
/// and inspect instances freely; [`FakeConsul::put`] stores one.
#[derive(Debug, Clone)]
pub struct Instance {
    /// The node's name (`Node.Node`); with `id`, the instance's key.
    pub node: String,
    /// The node's address (`Node.Address`), used when `address` is empty.
    pub node_address: String,
    /// The service instance id (`Service.ID`), unique per node.
    pub id: String,
    /// The service name (`Service.Service`).
    pub service: String,
    /// The service address (`Service.Address`); empty means the node's.
    pub address: String,
    /// The service port (`Service.Port`).
    pub port: u16,
    /// `Service.Tags`.
    pub tags: Vec<String>,
    /// `Service.Meta`.
    pub meta: BTreeMap<String, String>,
    /// `Service.Weights` as (passing, warning).
    pub weights: (u32, u32),
    /// The checks as (check id, service id or "" for a node check, status:
    /// `passing`, `warning` or `critical`).
    pub checks: Vec<(String, String, String)>,
    /// The registered check definition, when registered through the agent API.
    pub check_definition: Option<Value>,
}

impl Instance {
    /// A passing instance `id` of `service` on node `node` at 127.0.0.1:`port`,
    /// with weights (10, 1) and two passing checks: the node's `serfHealth`
    /// and the service's `service:{id}`.
    pub fn passing(node: &str, id: &str, service: &str, port: u16) -> Self {
        Instance {
            node: node.into(),
            node_address: "127.0.0.1".into(),
            id: id.into(),
            service: service.into(),
            address: String::new(),
            port,
            tags: Vec::new(),
            meta: BTreeMap::new(),
            weights: (10, 1),
            checks: vec![
                ("serfHealth".into(), String::new(), "passing".into()),
                (format!("service:{id}"), id.into(), "passing".into()),
            ],
            check_definition: None,
        }
    }

    /// Adds a tag.
    pub fn tagged(mut self, tag: &str) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Sets the service address (instead of the node's 127.0.0.1).
    pub fn at(mut self, address: &str) -> Self {
        self.address = address.into();
        self
    }

    fn key(&self) -> String {
        format!("{}/{}", self.node, self.id)
    }

    fn to_json(&self) -> Value {
        json!({
            "Node": {"ID": "", "Node": self.node, "Address": self.node_address, "Datacenter": "dc1",
                     "TaggedAddresses": {"lan": self.node_address}, "Meta": {}},
            "Service": {"ID": self.id, "Service": self.service, "Tags": self.tags, "Address": self.address,
                        "Meta": self.meta, "Port": self.port,
                        "Weights": {"Passing": self.weights.0, "Warning": self.weights.1}},
            "Checks": self.checks.iter().map(|(check_id, service_id, status)| json!({
                "Node": self.node, "CheckID": check_id, "Name": check_id, "Status": status, "Notes": "",
                "Output": "", "ServiceID": service_id, "ServiceName": if service_id.is_empty() { "" } else { &self.service },
            })).collect::<Vec<_>>(),
        })
    }
}

/// One request the fake received, as [`FakeConsul::requests`] lists it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The HTTP method.
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The `index` query parameter (a blocking query), if any.
    pub index: Option<u64>,
    /// The `wait` query parameter, as sent (`"2s"`, `"100ms"`).
    pub wait: Option<String>,
    /// The `dc` query parameter.
    pub dc: Option<String>,
    /// The `filter` query parameter.
    pub filter: Option<String>,
    /// Whether the `passing` query parameter was sent.
    pub passing: bool,
    /// The `X-Consul-Token` header.
    pub token: Option<String>,
    /// The answer's status; 0 while the request is still held (blocked).
    pub status: u16,
}

struct State {
    index: u64,
    instances: BTreeMap<String, Instance>,
    token: Option<String>,
    fail_next: u32,
    requests: Vec<Seen>,
}

struct Shared {
    state: Mutex<State>,
    /// Bumped on every change, so blocked queries wake.
    version: watch::Sender<u64>,
    /// How many queries are blocked right now.
    blocked: watch::Sender<usize>,
    /// How many requests were answered.
    answered: watch::Sender<usize>,
}

/// The running CONTRACT FAKE of Consul's HTTP API (not Consul); stops
/// accepting when dropped. See the [module documentation](self).
pub struct FakeConsul {
    addr: SocketAddr,
    tls: bool,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for FakeConsul {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeConsul").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Drop for FakeConsul {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

const WAIT_LIMIT: Duration = Duration::from_secs(5);

impl FakeConsul {
    /// Starts the fake on 127.0.0.1 at an ephemeral port, at index 10, with
    /// no instances. Needs a tokio runtime.
    ///
    /// # Panics
    /// If no port can be bound on 127.0.0.1.
    pub async fn start() -> FakeConsul {
        FakeConsul::serve(None).await
    }

    /// As [`start`](Self::start), speaking HTTPS with `tls` (a Consul agent
    /// with `tls.defaults` set; `verify_incoming` when `tls` requires client
    /// certificates).
    pub async fn start_tls(tls: Arc<rustls::ServerConfig>) -> FakeConsul {
        FakeConsul::serve(Some(tokio_rustls::TlsAcceptor::from(tls))).await
    }

    async fn serve(tls: Option<tokio_rustls::TlsAcceptor>) -> FakeConsul {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                index: 10,
                instances: BTreeMap::new(),
                token: None,
                fail_next: 0,
                requests: Vec::new(),
            }),
            version: watch::channel(0).0,
            blocked: watch::channel(0).0,
            answered: watch::channel(0).0,
        });
        let accept_shared = Arc::clone(&shared);
        let is_tls = tls.is_some();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let shared = Arc::clone(&accept_shared);
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(Arc::clone(&shared), req));
                    let http = hyper::server::conn::http1::Builder::new();
                    let _ = match tls {
                        None => http.serve_connection(TokioIo::new(stream), service).await,
                        Some(tls) => match tls.accept(stream).await {
                            Ok(stream) => http.serve_connection(TokioIo::new(stream), service).await,
                            Err(_) => return,
                        },
                    };
                });
            }
        });
        FakeConsul { addr, tls: is_tls, shared, accept }
    }

    /// The address to give the client, `127.0.0.1:port`.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// The address as a URL, `http://127.0.0.1:port` (`https://` when
    /// started with TLS), for config files.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap()
    }

    /// Applies a change: bumps the index and wakes blocked queries.
    fn change(&self, f: impl FnOnce(&mut State)) {
        {
            let mut state = self.state();
            f(&mut state);
            state.index += 1;
        }
        self.shared.version.send_modify(|v| *v += 1);
    }

    /// Refuses requests without this token (403).
    pub fn require_token(&self, token: &str) {
        self.state().token = Some(token.into());
    }

    /// Adds or replaces (by node and id) an instance; bumps the index.
    pub fn put(&self, instance: Instance) {
        self.change(|s| {
            s.instances.insert(instance.key(), instance);
        });
    }

    /// Removes the instance `id` of node `node` (if any); bumps the index.
    pub fn remove(&self, node: &str, id: &str) {
        self.change(|s| {
            s.instances.remove(&format!("{node}/{id}"));
        });
    }

    /// Sets the status (`passing`, `warning`, `critical`) of one check of one
    /// instance (node checks such as `serfHealth` too); bumps the index.
    ///
    /// # Panics
    /// If the instance or the check is unknown.
    pub fn set_check(&self, node: &str, id: &str, check_id: &str, status: &str) {
        self.change(|s| {
            let instance = s.instances.get_mut(&format!("{node}/{id}")).expect("a known instance");
            let check = instance.checks.iter_mut().find(|c| c.0 == check_id).expect("a known check");
            check.2 = status.into();
        });
    }

    /// Forces the index (backwards, or to 0) and wakes blocked queries,
    /// as a snapshot restore would.
    pub fn set_index(&self, index: u64) {
        self.state().index = index;
        self.shared.version.send_modify(|v| *v += 1);
    }

    /// Answers the next `n` health queries with 500.
    pub fn fail_next(&self, n: u32) {
        self.state().fail_next = n;
    }

    /// The current index (what `X-Consul-Index` answers).
    pub fn index(&self) -> u64 {
        self.state().index
    }

    /// The stored instance `id` of node `node` (agent registrations are on
    /// node `fake-node`).
    pub fn instance(&self, node: &str, id: &str) -> Option<Instance> {
        self.state().instances.get(&format!("{node}/{id}")).cloned()
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Seen> {
        self.state().requests.clone()
    }

    /// Waits (at most 5 s) until at least `n` queries are blocked.
    ///
    /// # Panics
    /// If that does not happen in time.
    pub async fn until_blocked(&self, n: usize) {
        at_least(&self.shared.blocked, n, "queries blocked").await;
    }

    /// Waits (at most 5 s) until at least `n` requests were answered in total.
    ///
    /// # Panics
    /// If that does not happen in time.
    pub async fn until_answered(&self, n: usize) {
        at_least(&self.shared.answered, n, "requests answered").await;
    }

    /// Waits (at most 5 s) until the fake's state satisfies `done`, checked
    /// after every change.
    ///
    /// # Panics
    /// If that does not happen in time.
    pub async fn until(&self, mut done: impl FnMut(&FakeConsul) -> bool) {
        let mut version = self.shared.version.subscribe();
        let wait = async {
            while !done(self) {
                version.changed().await.unwrap();
            }
        };
        tokio::time::timeout(WAIT_LIMIT, wait).await.expect("the fake reached the state in time");
    }
}

async fn at_least(counter: &watch::Sender<usize>, n: usize, what: &str) {
    let mut counter = counter.subscribe();
    let reached = tokio::time::timeout(WAIT_LIMIT, counter.wait_for(|c| *c >= n)).await;
    assert!(matches!(reached, Ok(Ok(_))), "{n} {what} within {WAIT_LIMIT:?}");
}

type Answer = Response<Full<Bytes>>;

fn answer(status: StatusCode, index: Option<u64>, body: impl Into<Bytes>) -> Answer {
    let mut response = Response::builder().status(status).header("Content-Type", "application/json");
    if let Some(index) = index {
        response = response.header("X-Consul-Index", index.to_string());
    }
    response.body(Full::new(body.into())).unwrap()
}

fn query_pairs(req: &Request<Incoming>) -> Vec<(String, String)> {
    // reqwest's Url does the form decoding.
    let url = reqwest::Url::parse(&format!("http://fake/?{}", req.uri().query().unwrap_or(""))).unwrap();
    url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

/// Consul's duration syntax, as far as the client uses it.
fn parse_wait(text: &str) -> Option<Duration> {
    if let Some(ms) = text.strip_suffix("ms") {
        return ms.parse().ok().map(Duration::from_millis);
    }
    if let Some(s) = text.strip_suffix('s') {
        return s.parse().ok().map(Duration::from_secs);
    }
    text.strip_suffix('m').and_then(|m| m.parse().ok()).map(|m: u64| Duration::from_secs(m * 60))
}

/// The tags a `"a" in Service.Tags and "b" in Service.Tags` filter requires.
fn parse_filter(filter: &str) -> Option<Vec<String>> {
    filter
        .split(" and ")
        .map(|clause| {
            let tag = clause.strip_suffix(" in Service.Tags")?.strip_prefix('"')?.strip_suffix('"')?;
            Some(tag.replace("\\\"", "\"").replace("\\\\", "\\"))
        })
        .collect()
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Answer, Infallible> {
    let pairs = query_pairs(&req);
    let get = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let seen = Seen {
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        index: get("index").and_then(|i| i.parse().ok()),
        wait: get("wait"),
        dc: get("dc"),
        filter: get("filter"),
        passing: pairs.iter().any(|(k, _)| k == "passing"),
        token: req.headers().get("X-Consul-Token").and_then(|v| v.to_str().ok()).map(String::from),
        status: 0,
    };
    // Recorded on arrival (status 0 while held), so a blocked query shows up.
    let position = {
        let mut state = shared.state.lock().unwrap();
        state.requests.push(seen.clone());
        state.requests.len() - 1
    };
    let response = route(&shared, req, &seen).await;
    shared.state.lock().unwrap().requests[position].status = response.status().as_u16();
    shared.answered.send_modify(|a| *a += 1);
    Ok(response)
}

async fn route(shared: &Shared, req: Request<Incoming>, seen: &Seen) -> Answer {
    {
        let state = shared.state.lock().unwrap();
        if state.token.is_some() && seen.token != state.token {
            return answer(StatusCode::FORBIDDEN, None, "ACL not found");
        }
    }
    let path = seen.path.clone();
    if req.method() == Method::GET
        && let Some(service) = path.strip_prefix("/v1/health/service/")
    {
        return health_service(shared, service, seen).await;
    }
    if req.method() == Method::PUT && path == "/v1/agent/service/register" {
        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        return register(shared, &body);
    }
    if req.method() == Method::PUT
        && let Some(id) = path.strip_prefix("/v1/agent/service/deregister/")
    {
        return deregister(shared, id);
    }
    answer(StatusCode::NOT_FOUND, None, "the contract fake does not implement this endpoint")
}

async fn health_service(shared: &Shared, service: &str, seen: &Seen) -> Answer {
    if seen.dc.as_deref().is_some_and(|dc| dc != "dc1") {
        return answer(StatusCode::INTERNAL_SERVER_ERROR, None, "No path to datacenter");
    }
    let required_tags = match seen.filter.as_deref().map(parse_filter) {
        None => Vec::new(),
        Some(Some(tags)) => tags,
        Some(None) => {
            return answer(StatusCode::BAD_REQUEST, None, "filter not understood by the contract fake");
        }
    };
    {
        let mut state = shared.state.lock().unwrap();
        if state.fail_next > 0 {
            state.fail_next -= 1;
            return answer(StatusCode::INTERNAL_SERVER_ERROR, None, "rpc error: No cluster leader");
        }
    }
    // A blocking query waits while the index has not passed the one sent.
    if let Some(index) = seen.index {
        let current = shared.state.lock().unwrap().index;
        if index >= current {
            let wait = seen.wait.as_deref().and_then(parse_wait).unwrap_or(Duration::from_secs(300));
            let mut version = shared.version.subscribe();
            version.borrow_and_update();
            shared.blocked.send_modify(|b| *b += 1);
            let _ = tokio::time::timeout(wait, version.changed()).await;
            shared.blocked.send_modify(|b| *b -= 1);
        }
    }
    let state = shared.state.lock().unwrap();
    let entries: Vec<Value> = state
        .instances
        .values()
        .filter(|i| i.service == service && required_tags.iter().all(|t| i.tags.contains(t)))
        .map(Instance::to_json)
        .collect();
    answer(StatusCode::OK, Some(state.index), serde_json::to_vec(&entries).unwrap())
}

fn register(shared: &Shared, body: &[u8]) -> Answer {
    let Ok(reg) = serde_json::from_slice::<Value>(body) else {
        return answer(StatusCode::BAD_REQUEST, None, "Request decode failed");
    };
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let name = text(&reg["Name"]);
    if name.is_empty() {
        return answer(StatusCode::BAD_REQUEST, None, "Missing service name");
    }
    let id = if reg["ID"].is_string() { text(&reg["ID"]) } else { name.clone() };
    let weights = reg.get("Weights").map_or((1, 1), |w| {
        (w["Passing"].as_u64().unwrap_or(1) as u32, w["Warning"].as_u64().unwrap_or(1) as u32)
    });
    let mut checks = vec![("serfHealth".to_string(), String::new(), "passing".to_string())];
    let check_definition = reg.get("Check").cloned();
    if check_definition.is_some() {
        // A new check starts critical in Consul until it first passes.
        checks.push((format!("service:{id}"), id.clone(), "critical".to_string()));
    }
    let instance = Instance {
        node: "fake-node".into(),
        node_address: "127.0.0.1".into(),
        id,
        service: name,
        address: text(&reg["Address"]),
        port: reg["Port"].as_u64().unwrap_or(0) as u16,
        tags: reg["Tags"].as_array().map(|t| t.iter().map(text).collect()).unwrap_or_default(),
        meta: reg["Meta"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), text(v))).collect())
            .unwrap_or_default(),
        weights,
        checks,
        check_definition,
    };
    {
        let mut state = shared.state.lock().unwrap();
        state.instances.insert(instance.key(), instance);
        state.index += 1;
    }
    shared.version.send_modify(|v| *v += 1);
    answer(StatusCode::OK, None, "")
}

fn deregister(shared: &Shared, id: &str) -> Answer {
    let removed = {
        let mut state = shared.state.lock().unwrap();
        let removed = state.instances.remove(&format!("fake-node/{id}")).is_some();
        if removed {
            state.index += 1;
        }
        removed
    };
    if !removed {
        return answer(StatusCode::NOT_FOUND, None, format!("Unknown service ID \"{id}\""));
    }
    shared.version.send_modify(|v| *v += 1);
    answer(StatusCode::OK, None, "")
}
