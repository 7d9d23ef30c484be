//! The guide's §3.3 retry client, on lb-client: failed requests are retried
//! with exponential backoff, but on another backend, only when safe
//! (idempotent methods, or a connection that was refused), and under a
//! retry budget so retries cannot multiply an outage.
//!
//! Run: `cargo run -p lb-client --example retry_client`

#[path = "../tests/support/http.rs"]
mod http;

use std::time::Duration;

use lb_algorithms::Algorithm;
use lb_client::Pool;
use lb_core::Endpoint;
use lb_health::{Backoff, Jitter, RetryPolicy};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let healthy = http::Backend::start("healthy", Duration::ZERO).await;
    let failing = http::Backend::start("failing", Duration::ZERO).await;
    failing.answer_with(503);
    // A port nothing listens on: connections are refused.
    let gone = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;

    // maxRetries 3 with the Go example's 100 ms * 2^i backoff (jittered).
    let retry = RetryPolicy {
        max_attempts: 3,
        backoff: Backoff::Exponential {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
            jitter: Jitter::Equal,
        },
        ..RetryPolicy::default()
    };
    let pool = Pool::builder("inventory", Algorithm::RoundRobin)
        .endpoints([Endpoint::new(healthy.addr), Endpoint::new(failing.addr), Endpoint::new(gone)])
        .retry(retry)
        .build()?;

    let mut ok = 0;
    for i in 0..20 {
        let response = pool.get(&format!("/items/{i}")).send().await?;
        if response.status().is_success() {
            ok += 1;
        }
    }
    println!(
        "{ok} of 20 GETs succeeded; healthy served {}, failing answered {}",
        healthy.hits(),
        failing.hits()
    );

    // A POST that reached a backend is never sent twice; one refused is.
    let response = pool.post("/orders").body("{}").send().await?;
    println!("POST answered {}", response.status());
    Ok(())
}
