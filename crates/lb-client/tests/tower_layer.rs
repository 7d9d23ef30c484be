//! The tower balancer over per-endpoint hyper clients.

mod support;

use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::TokioExecutor;
use lb_algorithms::Algorithm;
use lb_client::{Balance, HeaderKey};
use lb_core::{Endpoint, EndpointSet, Timestamp};
use support::endpoint;
use support::http::Backend;
use tower::{Service, ServiceBuilder, ServiceExt};

type Request = http::Request<Full<Bytes>>;

type HyperClient = Client<HttpConnector, Full<Bytes>>;

/// A hyper client pointed at one endpoint: the per-endpoint service.
#[derive(Clone)]
struct HyperAt {
    client: HyperClient,
    authority: Arc<str>,
}

impl Service<Request> for HyperAt {
    type Response = http::Response<Incoming>;
    type Error = hyper_util::client::legacy::Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::<Request>::poll_ready(&mut self.client, cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
        *request.uri_mut() = format!("http://{}{path}", self.authority).parse().expect("a valid URI");
        self.client.request(request)
    }
}

/// One shared hyper client (one connection pool); a `HyperAt` per endpoint.
fn hyper_per_endpoint() -> impl Fn(&Endpoint) -> HyperAt + Send + Sync + 'static {
    let client: HyperClient = Client::builder(TokioExecutor::new()).build_http();
    move |endpoint: &Endpoint| HyperAt {
        client: client.clone(),
        authority: Arc::from(endpoint.address().to_string()),
    }
}

fn get(path: &str) -> Request {
    http::Request::get(path).body(Full::new(Bytes::new())).unwrap()
}

async fn body_of(response: http::Response<Incoming>) -> String {
    String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

#[tokio::test]
async fn the_layer_balances_a_hyper_client() {
    let servers = [Backend::start("a", Duration::ZERO).await, Backend::start("b", Duration::ZERO).await];
    let layer = Balance::builder("web", Algorithm::RoundRobin)
        .endpoints(servers.iter().map(|b| endpoint(b.addr)))
        .into_layer()
        .unwrap();
    let mut service = ServiceBuilder::new().layer(layer).service(hyper_per_endpoint());
    for _ in 0..20 {
        let response = service.ready().await.unwrap().call(get("/page")).await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(body_of(response).await.ends_with(" /page"));
    }
    assert_eq!((servers[0].hits(), servers[1].hits()), (10, 10));
}

#[tokio::test]
async fn a_header_key_pins_a_user_to_one_endpoint() {
    let mut servers = Vec::new();
    for name in ["a", "b", "c", "d"] {
        servers.push(Backend::start(name, Duration::ZERO).await);
    }
    let mut service = Balance::builder("web", "maglev".parse::<Algorithm>().unwrap())
        .endpoints(servers.iter().map(|b| endpoint(b.addr)))
        .key(HeaderKey(http::HeaderName::from_static("x-user")))
        .build(hyper_per_endpoint())
        .unwrap();
    for user in ["u1", "u2", "u3", "u4"] {
        let mut homes = std::collections::BTreeSet::new();
        for _ in 0..5 {
            let mut request = get("/");
            request.headers_mut().insert("x-user", user.parse().unwrap());
            let response = service.ready().await.unwrap().call(request).await.unwrap();
            homes.insert(body_of(response).await.split(' ').next().unwrap().to_string());
        }
        assert_eq!(homes.len(), 1, "{user} went to {homes:?}");
    }
}

#[tokio::test]
async fn not_ready_without_endpoints_and_ready_once_discovery_brings_one() {
    let (tx, rx) = tokio::sync::watch::channel(EndpointSet::empty());
    let mut service = Balance::builder("web", Algorithm::RoundRobin)
        .discovery(rx)
        .recheck_every(Duration::from_millis(5))
        .build(hyper_per_endpoint())
        .unwrap();
    let first = poll_fn(|cx| Poll::Ready(Service::<Request>::poll_ready(&mut service, cx))).await;
    assert!(first.is_pending(), "no endpoint: not ready");
    let server = Backend::start("late", Duration::ZERO).await;
    tx.send_replace(EndpointSet::new([endpoint(server.addr)], Timestamp::ZERO));
    let ready =
        tokio::time::timeout(Duration::from_secs(5), ServiceExt::<Request>::ready(&mut service)).await;
    assert!(ready.is_ok(), "ready once an endpoint exists");
    let response = service.call(get("/")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn a_dead_endpoint_is_ejected_after_a_few_failures() {
    let live = [Backend::start("a", Duration::ZERO).await, Backend::start("b", Duration::ZERO).await];
    let dead = support::refused_address();
    let mut service = Balance::builder("web", Algorithm::RoundRobin)
        .endpoints(live.iter().map(|b| endpoint(b.addr)).chain([endpoint(dead)]))
        .build(hyper_per_endpoint())
        .unwrap();
    let mut failures = 0;
    for _ in 0..300 {
        if service.ready().await.unwrap().call(get("/")).await.is_err() {
            failures += 1;
        }
    }
    assert!((1..=6).contains(&failures), "{failures} calls failed before the dead endpoint was taken out");
    let served = live[0].hits() + live[1].hits();
    assert_eq!(served, 300 - failures, "{failures} failed calls, {served} served by the live endpoints");
    let status = service.endpoints().into_iter().find(|(e, _)| e.address().port() == dead.port()).unwrap().1;
    assert!(!status.is_eligible(), "{status:?}");
}

#[test]
fn bad_settings_are_refused_before_any_layer_is_built() {
    let zero = Balance::builder("web", Algorithm::RoundRobin).recheck_every(Duration::ZERO).into_layer();
    assert!(zero.unwrap_err().to_string().contains("recheck_every"));
    let budget = lb_client::BudgetConfig { ttl: Duration::ZERO, ..lb_client::BudgetConfig::default() };
    let resilience = lb_client::ResilienceConfig { budget, ..lb_client::ResilienceConfig::default() };
    let err = Balance::builder("web", Algorithm::RoundRobin).resilience(resilience).into_layer().unwrap_err();
    assert!(matches!(err, lb_client::Error::Config(_)), "{err}");
}

/// With retries, the balancer sends a failed request again to an endpoint
/// it has not tried, under the one retry engine: a refused connection and
/// a 503 are both retried (the GET is idempotent), a POST after a 503 is
/// not, and no call fails while a healthy endpoint is left.
#[tokio::test]
async fn with_retries_a_failed_call_goes_to_another_endpoint() {
    let good = Backend::start("good", Duration::ZERO).await;
    let busy = Backend::start("busy", Duration::ZERO).await;
    busy.answer_with(503);
    let dead = support::refused_address();
    let policy = lb_health::RetryPolicy {
        max_attempts: 3,
        backoff: lb_health::Backoff::Immediate,
        ..lb_health::RetryPolicy::default()
    };
    let mut service = Balance::builder("web", Algorithm::RoundRobin)
        .endpoints([endpoint(good.addr), endpoint(busy.addr), endpoint(dead)])
        .resilience(lb_client::ResilienceConfig { outlier: None, ..Default::default() })
        .build(hyper_per_endpoint())
        .unwrap()
        .with_retries(policy);
    for _ in 0..30 {
        let response = service.ready().await.unwrap().call(get("/")).await.unwrap();
        assert_eq!(
            (response.status(), body_of(response).await),
            (http::StatusCode::OK, "good /".to_string())
        );
    }
    assert_eq!(good.hits(), 30, "every call ended at the healthy endpoint");
    assert!(busy.hits() >= 1, "some call started at the busy one");

    // One endpoint that answers 503: a GET is tried three times in all (the
    // tried endpoint again, since no other is left), a POST once.
    let only_busy = Backend::start("only-busy", Duration::ZERO).await;
    only_busy.answer_with(503);
    let mut service = Balance::builder("busy", Algorithm::RoundRobin)
        .endpoints([endpoint(only_busy.addr)])
        .resilience(lb_client::ResilienceConfig { outlier: None, breaker: None, ..Default::default() })
        .build(hyper_per_endpoint())
        .unwrap()
        .with_retries(lb_health::RetryPolicy {
            backoff: lb_health::Backoff::Immediate,
            ..Default::default()
        });
    let response = service.ready().await.unwrap().call(get("/")).await.unwrap();
    assert_eq!((response.status(), only_busy.hits()), (http::StatusCode::SERVICE_UNAVAILABLE, 3));
    let post = http::Request::post("/").body(Full::new(Bytes::from_static(b"x"))).unwrap();
    let response = service.ready().await.unwrap().call(post).await.unwrap();
    assert_eq!(
        (response.status(), only_busy.hits()),
        (http::StatusCode::SERVICE_UNAVAILABLE, 4),
        "a POST a server saw goes once"
    );
}
