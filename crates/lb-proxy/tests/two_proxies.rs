//! Beyond one machine (docs/operations.md): two lb-proxy processes with the
//! same configuration over one discovery file map every key to the same
//! endpoint with no coordination (Maglev on a header), and `lb-client`'s
//! `Pool` balancing over the two loses no idempotent request when one of
//! them is SIGKILLed mid-traffic.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Backend, get};
use lb_algorithms::Algorithm;
use lb_client::Pool;
use lb_core::Endpoint;

/// An lb-proxy process; SIGKILLed when dropped.
struct ProxyProcess {
    address: SocketAddr,
    child: Child,
}

impl ProxyProcess {
    /// Starts `lb-proxy run` with the shared upstream section, on its own ports.
    fn start(dir: &std::path::Path, name: &str, upstream: &str) -> ProxyProcess {
        let (address, admin) = (free_port(), free_port());
        let config = dir.join(format!("{name}.toml"));
        let text = format!(
            "[admin]\nlisten = \"{admin}\"\n[[listeners]]\nlisten = \"{address}\"\n\
             [[routes]]\nupstream = \"web\"\n{upstream}"
        );
        std::fs::write(&config, text).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_lb-proxy"))
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        ProxyProcess { address, child }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).unwrap()
}

/// Waits (at most 10 s) until `proxy` answers through to a backend.
async fn serving(proxy: SocketAddr) {
    for _ in 0..500 {
        if tokio::net::TcpStream::connect(proxy).await.is_ok() && get(proxy, "/", &[]).await.0 == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{proxy} never served");
}

const NAMES: [&str; 4] = ["b0", "b1", "b2", "b3"];

#[tokio::test]
async fn two_proxies_agree_on_every_key_and_a_pool_over_them_survives_losing_one() {
    let mut backends = Vec::new();
    for name in NAMES {
        backends.push(Backend::named(name).await);
    }
    let dir = tempfile::tempdir().unwrap();
    let endpoints: Vec<String> = backends.iter().map(|b| format!("{{ address = \"{}\" }}", b.addr)).collect();
    std::fs::write(dir.path().join("endpoints.toml"), format!("endpoints = [{}]\n", endpoints.join(", ")))
        .unwrap();
    let upstream = "[upstreams.web]\nalgorithm = \"maglev\"\nhash_key = { header = \"x-user\" }\n\
                    discovery.file.path = \"endpoints.toml\"\n";
    let mut proxies =
        [ProxyProcess::start(dir.path(), "a", upstream), ProxyProcess::start(dir.path(), "b", upstream)];
    for proxy in &proxies {
        serving(proxy.address).await;
    }

    // Every key reaches the same endpoint through either proxy, and the keys spread over all four.
    let mut reached = std::collections::BTreeSet::new();
    for key in 0..200 {
        let user = format!("user-{key}");
        let (a, b) = (
            get(proxies[0].address, "/", &[("x-user", &user)]).await,
            get(proxies[1].address, "/", &[("x-user", &user)]).await,
        );
        assert_eq!((a.0.as_u16(), b.0.as_u16()), (200, 200));
        assert_eq!(a.1, b.1, "{user} went to {} through one proxy and {} through the other", a.1, b.1);
        reached.insert(a.1);
    }
    assert_eq!(reached.len(), NAMES.len(), "keys reach every endpoint: {reached:?}");

    // A client-side pool over the two proxies; one is killed a third of the way in.
    let pool = Pool::builder("proxies", Algorithm::RoundRobin)
        .endpoints(proxies.iter().map(|p| Endpoint::new(p.address)))
        .build()
        .unwrap();
    let run = |calls: usize| {
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..6 {
            let pool = pool.clone();
            tasks.spawn(async move {
                let mut failed = 0;
                for i in 0..calls / 6 {
                    let answer = pool
                        .get(&format!("/call/{worker}/{i}"))
                        .header("x-user", format!("u{i}"))
                        .send()
                        .await;
                    failed += usize::from(!answer.is_ok_and(|r| r.status() == 200));
                }
                failed
            });
        }
        tasks
    };
    let mut failed = 0;
    let mut first = run(300);
    while let Some(done) = first.join_next().await {
        failed += done.unwrap();
    }
    proxies[0].kill();
    let mut rest = run(600);
    while let Some(done) = rest.join_next().await {
        failed += done.unwrap();
    }
    assert_eq!(failed, 0, "{failed} of 900 idempotent requests failed");
    for backend in backends {
        backend.kill().await;
    }
}
