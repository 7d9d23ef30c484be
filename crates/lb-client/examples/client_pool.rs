//! The guide's §3.1 client pool, on lb-client: a client that knows the
//! service's backends and picks one per request (at random, as the Go
//! `rand.Intn` did), with a request timeout and pooled connections.
//!
//! Run: `cargo run -p lb-client --example client_pool`

#[path = "../tests/support/http.rs"]
mod http;

use std::time::Duration;

use lb_algorithms::Algorithm;
use lb_client::Pool;
use lb_core::Endpoint;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Three local backends stand in for the service's instances.
    let mut backends = Vec::new();
    for name in ["users-1", "users-2", "users-3"] {
        backends.push(http::Backend::start(name, Duration::ZERO).await);
    }

    // NewClientPool: MaxIdleConnsPerHost 100, Timeout 5 s.
    let pool = Pool::builder("users", Algorithm::Random)
        .endpoints(backends.iter().map(|b| Endpoint::new(b.addr)))
        .pool_max_idle_per_host(100)
        .timeout(Duration::from_secs(5))
        .build()?;

    // Do: the URL names the service; the pool picks the host.
    for i in 0..30 {
        let response = pool.get(&format!("http://users/v1/users/{i}")).send().await?;
        assert!(response.status().is_success());
    }
    for b in &backends {
        println!("{} served {} requests", b.name, b.hits());
    }
    Ok(())
}
