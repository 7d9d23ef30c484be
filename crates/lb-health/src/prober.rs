//! The active health checker (feature `tokio`): one task per endpoint sends
//! a request every interval (with jitter) on the hyper 1.x client, an HTTP
//! request or a gRPC health check, classifies the answer and drives that
//! endpoint's [`RiseFall`].

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use core::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Collected, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::{Method, Request, header};
use hyper_util::rt::{TokioExecutor, TokioIo};
use lb_core::{Address, EndpointId, EndpointSet, Member};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::active::{ActiveCheckConfig, ActiveCheckError, CheckResult, RiseFall};
use crate::rng::SplitMix64;

/// The most body a check reads when it looks for the expected text.
const MAX_BODY: usize = 64 * 1024;

/// Sends health checks; cheap to clone (the config is shared).
#[derive(Debug, Clone)]
pub struct Prober {
    config: Arc<ActiveCheckConfig>,
    method: Method,
    /// TLS to the endpoints, as the traffic to them uses.
    tls: Option<lb_tls::TlsConnector>,
}

impl Prober {
    /// A prober for `config`. Every check opens a fresh connection, so a dead
    /// listener is noticed at once (as HAProxy does).
    pub fn new(config: ActiveCheckConfig) -> Result<Self, ActiveCheckError> {
        config.validate()?;
        let method = Method::from_bytes(config.method.as_bytes())
            .map_err(|_| ActiveCheckError::BadMethod(config.method.clone()))?;
        Ok(Prober { config: Arc::new(config), method, tls: None })
    }

    /// Checks over TLS made by `tls` (the settings the endpoints' traffic
    /// uses, so a check passes only where a request could go).
    #[must_use]
    pub fn with_tls(mut self, tls: lb_tls::TlsConnector) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The settings.
    pub fn config(&self) -> &ActiveCheckConfig {
        &self.config
    }

    /// Checks `address` once, bounded by the timeout; a connection failure
    /// or timeout is [`CheckResult::Critical`].
    pub async fn check(&self, address: &Address) -> CheckResult {
        if let Some(service) = &self.config.grpc_service {
            let asked = tokio::time::timeout(self.config.timeout, self.grpc_check(address, service)).await;
            return asked.ok().flatten().unwrap_or(CheckResult::Critical);
        }
        match tokio::time::timeout(self.config.timeout, self.http_check(address)).await {
            Ok(Some((status, body))) => self.config.classify(status, &body),
            Ok(None) | Err(_) => CheckResult::Critical,
        }
    }

    /// One `grpc.health.v1.Health/Check` call: passing when the call ends
    /// with `grpc-status: 0` and the answer says `SERVING`.
    async fn grpc_check(&self, address: &Address, service: &str) -> Option<CheckResult> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("{}://{}/grpc.health.v1.Health/Check", self.scheme(), address_text(address)))
            .header(header::CONTENT_TYPE, "application/grpc")
            .header(header::TE, "trailers")
            .header(header::USER_AGENT, "lb-health")
            .body(Full::new(grpc_health::request(service)))
            .ok()?;
        let (head, body) = self.exchange(address, request, true).await?;
        let body = body?;
        // A trailers-only answer (an error at once) carries grpc-status in its headers.
        let trailers = body.trailers().cloned().unwrap_or_default();
        let grpc_status = trailers.get("grpc-status").or_else(|| head.headers.get("grpc-status"));
        let ok = head.status == hyper::StatusCode::OK && grpc_status.is_some_and(|s| s.as_bytes() == b"0");
        let serving = ok && grpc_health::is_serving(&body.to_bytes());
        Some(if serving { CheckResult::Passing } else { CheckResult::Critical })
    }

    async fn http_check(&self, address: &Address) -> Option<(u16, Bytes)> {
        let host = self.config.host.clone().unwrap_or_else(|| address_text(address));
        // HTTP/1.1 sends the path alone; HTTP/2 needs the scheme and authority too.
        let uri = if self.config.http2 {
            format!("{}://{}{}", self.scheme(), address_text(address), self.config.path)
        } else {
            self.config.path.clone()
        };
        let request = Request::builder()
            .method(self.method.clone())
            .uri(uri)
            .header(header::HOST, host)
            .header(header::USER_AGENT, "lb-health")
            .body(Full::new(Bytes::new()))
            .ok()?;
        let (head, body) = self.exchange(address, request, self.config.expected_body.is_some()).await?;
        let body = body.map(Collected::to_bytes).unwrap_or_default();
        Some((head.status.as_u16(), body))
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Sends `request` on a new connection (over TLS when set) and reads the
    /// head, and the body (at most [`MAX_BODY`]) with `read_body`; the
    /// connection is driven here, so it ends with the check.
    async fn exchange(
        &self,
        address: &Address,
        request: Request<Full<Bytes>>,
        read_body: bool,
    ) -> Option<(hyper::http::response::Parts, Option<Collected<Bytes>>)> {
        let host = address.host();
        let stream = TcpStream::connect((&*host, address.port())).await.ok()?;
        stream.set_nodelay(true).ok()?;
        let http2 = self.config.http2 || self.config.grpc_service.is_some();
        match &self.tls {
            None => exchange_on(TokioIo::new(stream), http2, request, read_body).await,
            Some(tls) => {
                let stream = tls.connect(&host, stream).await.ok()?;
                exchange_on(TokioIo::new(stream), http2, request, read_body).await
            }
        }
    }

    /// Starts checking one endpoint until the returned task is dropped.
    /// `seed` makes its jitter reproducible.
    pub fn spawn(&self, member: &Member, seed: u64) -> ProbeTask {
        let prober = self.clone();
        let address = member.endpoint().address().clone();
        let state = Arc::clone(member.state());
        let mut rise_fall = RiseFall::new(&prober.config);
        // Before the first check: an initially unhealthy endpoint is out at once.
        rise_fall.apply_to(&state);
        let handle = tokio::spawn(async move {
            let mut rng = SplitMix64::new(seed);
            loop {
                let result = prober.check(&address).await;
                rise_fall.record(result, &state);
                tokio::time::sleep(prober.config.next_delay(&mut rng)).await;
            }
        });
        ProbeTask { handle }
    }

    /// Starts one task per member of `set`.
    pub fn watch(&self, set: &EndpointSet) -> ProbeSet {
        let mut probes = ProbeSet { prober: self.clone(), tasks: BTreeMap::new() };
        probes.update(set);
        probes
    }
}

/// The two messages of `grpc.health.v1` a check needs, in their gRPC frames.
/// Each has one field, so they are written and read here rather than
/// generated: `HealthCheckRequest { string service = 1; }` and
/// `HealthCheckResponse { ServingStatus status = 1; }` with `SERVING = 1`.
mod grpc_health {
    use alloc::vec::Vec;

    use bytes::Bytes;

    /// A gRPC frame (uncompressed flag, big-endian length) holding a `HealthCheckRequest`.
    pub(super) fn request(service: &str) -> Bytes {
        let mut message = Vec::with_capacity(service.len() + 6);
        if !service.is_empty() {
            message.push(0x0a); // field 1, length-delimited
            put_varint(&mut message, service.len() as u64);
            message.extend_from_slice(service.as_bytes());
        }
        let mut frame = Vec::with_capacity(5 + message.len());
        frame.push(0);
        frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
        frame.extend_from_slice(&message);
        Bytes::from(frame)
    }

    /// Whether a response body (one gRPC frame) says `SERVING`.
    pub(super) fn is_serving(body: &[u8]) -> bool {
        let Some((&[0, a, b, c, d], message)) = body.split_first_chunk::<5>() else {
            return false;
        };
        let length = u32::from_be_bytes([a, b, c, d]) as usize;
        let Some(mut message) = message.get(..length) else { return false };
        let mut status = 0; // UNKNOWN, the default of an absent field
        while let Some((&tag, rest)) = message.split_first() {
            let Some((value, rest)) = varint(rest) else { return false };
            match tag {
                0x08 => status = value, // field 1, varint
                _ if tag & 0x07 == 0 => {}
                _ => return false, // no other field of this message has another wire type
            }
            message = rest;
        }
        status == 1
    }

    fn put_varint(out: &mut Vec<u8>, mut value: u64) {
        while value >= 0x80 {
            out.push((value as u8) | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }

    fn varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
        let mut value = 0u64;
        for (i, &byte) in bytes.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Some((value, &bytes[i + 1..]));
            }
        }
        None
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn requests_and_answers_are_framed_as_grpc_health_v1() {
            assert_eq!(&request("")[..], [0, 0, 0, 0, 0]);
            assert_eq!(&request("echo")[..], [0, 0, 0, 0, 6, 0x0a, 4, b'e', b'c', b'h', b'o']);
            // A name of 200 bytes: its length is a two-byte varint whose low byte has bit 7 set.
            let long = request(&"s".repeat(200));
            assert_eq!(long[..8], [0, 0, 0, 0, 203, 0x0a, 0xC8, 0x01]);
            assert_eq!(long.len(), 5 + 203);
            assert!(is_serving(&[0, 0, 0, 0, 2, 0x08, 1]), "SERVING");
            assert!(!is_serving(&[0, 0, 0, 0, 2, 0x08, 2]), "NOT_SERVING");
            assert!(!is_serving(&[0, 0, 0, 0, 0]), "UNKNOWN, the field absent");
            assert!(!is_serving(&[0, 0, 0, 0, 2, 0x08]), "cut short");
            assert!(!is_serving(&[1, 0, 0, 0, 2, 0x08, 1]), "compressed frames are not asked for");
            // 129 as a two-byte varint is no status at all, though its low byte reads 1.
            assert!(!is_serving(&[0, 0, 0, 0, 3, 0x08, 0x81, 0x01]), "status 129");
            // A field of another wire type (here field 2, length-delimited) is no health answer.
            assert!(!is_serving(&[0, 0, 0, 0, 4, 0x12, 0x00, 0x08, 1]), "a length-delimited field");
            // Another varint field before the status is skipped whole.
            assert!(is_serving(&[0, 0, 0, 0, 5, 0x10, 0xac, 0x02, 0x08, 1]), "field 2 = 300, then SERVING");
        }

        #[test]
        fn varints_are_little_endian_groups_of_seven_bits() {
            assert_eq!(varint(&[0x01, 0xff]), Some((1, &[0xff][..])));
            assert_eq!(varint(&[0xac, 0x02]), Some((300, &[][..])));
            assert_eq!(
                varint(&[0xff; 9].iter().copied().chain([0x01]).collect::<Vec<u8>>()),
                Some((u64::MAX, &[][..]))
            );
            assert_eq!(varint(&[0x80, 0x80]), None, "cut short");
            let mut written = Vec::new();
            put_varint(&mut written, 300);
            assert_eq!(written, [0xac, 0x02]);
        }
    }
}

/// The exchange of [`Prober::exchange`] on a connected stream.
async fn exchange_on<I>(
    io: I,
    http2: bool,
    request: Request<Full<Bytes>>,
    read_body: bool,
) -> Option<(hyper::http::response::Parts, Option<Collected<Bytes>>)>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let talk = |response: hyper::Result<hyper::Response<Incoming>>| async move {
        let (head, body) = response.ok()?.into_parts();
        let body = if read_body { Some(Limited::new(body, MAX_BODY).collect().await.ok()?) } else { None };
        Some((head, body))
    };
    if http2 {
        let (mut sender, connection) = http2::handshake(TokioExecutor::new(), io).await.ok()?;
        tokio::select! {
            answer = async { talk(sender.send_request(request).await).await } => answer,
            _ = connection => None,
        }
    } else {
        let (mut sender, connection) = http1::handshake(io).await.ok()?;
        tokio::select! {
            answer = async { talk(sender.send_request(request).await).await } => answer,
            _ = connection => None,
        }
    }
}

fn address_text(address: &Address) -> String {
    format!("{address}")
}

/// A running check task; dropping it stops the checks.
#[derive(Debug)]
pub struct ProbeTask {
    handle: JoinHandle<()>,
}

impl Drop for ProbeTask {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// The check tasks of a whole endpoint set.
#[derive(Debug)]
pub struct ProbeSet {
    prober: Prober,
    tasks: BTreeMap<EndpointId, ProbeTask>,
}

impl ProbeSet {
    /// Follows a new snapshot: keeps the tasks of endpoints that stay (so
    /// their rise/fall runs continue), starts tasks for new ones and stops
    /// the tasks of removed ones.
    pub fn update(&mut self, set: &EndpointSet) {
        self.tasks.retain(|id, _| set.index_of(id).is_some());
        for member in set {
            let id = member.endpoint().id();
            if !self.tasks.contains_key(id) {
                self.tasks.insert(id.clone(), self.prober.spawn(member, jitter_seed(id)));
            }
        }
    }

    /// Endpoints being checked.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether no endpoint is being checked.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// The per-check timeout in force.
    pub fn timeout(&self) -> Duration {
        self.prober.config.timeout
    }
}

/// An endpoint's own seed for its check jitter (FNV-1a of its id), so the
/// endpoints of a set are not all checked in step.
fn jitter_seed(id: &EndpointId) -> u64 {
    id.as_str()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dropping_a_probe_task_stops_its_checks() {
        let (alive, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            let _alive = alive;
            std::future::pending::<()>().await;
        });
        drop(ProbeTask { handle });
        let waited = tokio::time::timeout(std::time::Duration::from_secs(10), stopped).await;
        assert!(matches!(waited, Ok(Err(_))), "the task ended, dropping what it held");
    }

    #[test]
    fn every_endpoint_gets_its_own_jitter_seed() {
        let seeds: std::collections::BTreeSet<u64> = (0..1000)
            .map(|i| jitter_seed(&EndpointId::from(format!("10.0.{}.{}:80", i / 250, i % 250).as_str())))
            .collect();
        assert_eq!(seeds.len(), 1000);
        // FNV-1a's published value for "a".
        assert_eq!(jitter_seed(&EndpointId::from("a")), 0xaf63_dc4c_8601_ec8c);
    }
}
