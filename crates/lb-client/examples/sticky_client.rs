//! The guide's §4.2 consistent hashing, on lb-client: requests carrying the
//! same user id go to the same backend (a ketama ring, as nginx's
//! `hash ... consistent`), and when a backend leaves only its users move.
//!
//! Run: `cargo run -p lb-client --example sticky_client`

#[path = "../tests/support/http.rs"]
mod http;

use std::collections::BTreeMap;
use std::time::Duration;

use lb_algorithms::Algorithm;
use lb_client::Pool;
use lb_core::Endpoint;

async fn homes(
    pool: &Pool<Algorithm>,
    users: &[String],
) -> Result<BTreeMap<String, String>, lb_client::Error> {
    let mut homes = BTreeMap::new();
    for user in users {
        let response = pool.get("/session").hash_key(user).send().await?;
        let body = response.text().await.map_err(|e| lb_client::Error::Config(e.to_string()))?;
        homes.insert(user.clone(), body.split(' ').next().unwrap_or_default().to_string());
    }
    Ok(homes)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut backends = Vec::new();
    for name in ["cache-1", "cache-2", "cache-3", "cache-4"] {
        backends.push(http::Backend::start(name, Duration::ZERO).await);
    }
    let pool = Pool::builder("sessions", "ring_hash".parse::<Algorithm>()?)
        .endpoints(backends.iter().map(|b| Endpoint::new(b.addr)))
        .build()?;
    let users: Vec<String> = (0..100).map(|i| format!("user-{i}")).collect();
    let before = homes(&pool, &users).await?;
    assert_eq!(before, homes(&pool, &users).await?, "the same user, the same backend");

    // cache-4 leaves: only the users it held move.
    pool.set_endpoints(backends[..3].iter().map(|b| Endpoint::new(b.addr)));
    let after = homes(&pool, &users).await?;
    let moved = users.iter().filter(|u| before[*u] != after[*u]).count();
    let held = users.iter().filter(|u| before[*u] == "cache-4").count();
    println!("{moved} of {} users moved; cache-4 held {held}", users.len());
    assert_eq!(moved, held);
    Ok(())
}
