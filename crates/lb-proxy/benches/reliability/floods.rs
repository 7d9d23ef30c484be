//! Many connections at once: slowloris (scenario 5) and a flood of idle
//! keep-alive connections (scenario 6). The connections live on a tokio
//! runtime of the bench's own.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::backend::Behaviour;
use crate::harness::{Backend, Bench, Outcome, Proxy, Sections, Wrk, ms, percentile};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime")
}

/// Scenario 5: slow clients sending one header byte a second, while normal
/// clients are measured against their own baseline.
pub(crate) fn slowloris(bench: &Bench) -> Outcome {
    let backends: Vec<Backend> = (0..3).map(|_| Backend::start(&Behaviour::status(200))).collect();
    let addresses: Vec<_> = backends.iter().map(|b| b.address).collect();
    let header_timeout = bench.scale.pick(Duration::from_secs(8), Duration::from_secs(4));
    let sections = Sections {
        global: format!("client_header_timeout = \"{}s\"\n", header_timeout.as_secs()),
        ..Sections::default()
    };
    let proxy = Proxy::start(&bench.work, "slowloris", &addresses, &sections);
    let measured = bench.scale.pick(Duration::from_secs(5), Duration::from_secs(2));
    let baseline = Wrk::start(&bench.wrk, proxy.address, 10, measured).finish();
    let slow_count = bench.scale.pick(2_000, 500);
    let rt = runtime();
    let slow: Vec<_> = rt.block_on(async {
        let mut slow = Vec::with_capacity(slow_count);
        for _ in 0..slow_count {
            let stream = TcpStream::connect(proxy.address).await.expect("a slow connection");
            slow.push(tokio::spawn(slow_client(stream, header_timeout + Duration::from_secs(5))));
        }
        slow
    });
    // The normal clients run while every slow connection is open and trickling.
    let during = Wrk::start(&bench.wrk, proxy.address, 10, measured);
    let mut lifetimes: Vec<Duration> = rt.block_on(async {
        let mut lifetimes = Vec::with_capacity(slow.len());
        for task in slow {
            lifetimes.push(task.await.expect("a slow client"));
        }
        lifetimes
    });
    let during = during.finish();
    let (first, last) = (percentile(&mut lifetimes, 0.0), percentile(&mut lifetimes, 100.0));
    let p99_bound = baseline.p99 * 2 + Duration::from_millis(1);
    let closed_on_time = first + Duration::from_millis(100) >= header_timeout
        && last <= header_timeout + Duration::from_secs(1);
    Outcome {
        scenario: "5. slowloris: slow clients send a header byte a second",
        figure: format!(
            "{slow_count} slow connections closed {} to {} after their first byte (client_header_timeout {} s); \
             normal clients' p99 {} (alone {}), {} failed of {}",
            ms(first),
            ms(last),
            header_timeout.as_secs(),
            ms(during.p99),
            ms(baseline.p99),
            during.failed(),
            during.requests
        ),
        promise: bench.scale.pick(
            "each slow connection closed at the header timeout (+1 s); normal p99 ≤ 2 × alone + 1 ms; 0 failed",
            // The quick run is part of `cargo xtask test`, where a timed bound on
            // this shared box is a benchmark, not a test: p99 is reported only.
            "each slow connection closed at the header timeout (+1 s); 0 failed (p99 reported)",
        )
        .to_string(),
        kept: closed_on_time
            && during.failed() == 0
            && during.requests > 0
            && bench.scale.pick(during.p99 <= p99_bound, true),
    }
}

/// Trickles a request head one byte a second; how long until the proxy
/// closed the connection (capped at `limit`).
async fn slow_client(mut stream: TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    let head = b"GET / HTTP/1.1\r\nhost: slow\r\nx-slow: ";
    let mut sink = [0u8; 1024];
    let mut sent = 0usize;
    while started.elapsed() < limit {
        let byte = head.get(sent).copied().unwrap_or(b'a');
        if stream.write_all(&[byte]).await.is_err() {
            break;
        }
        sent += 1;
        tokio::select! {
            read = stream.read(&mut sink) => if !matches!(read, Ok(1..)) { break },
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    started.elapsed()
}

/// Scenario 6: idle keep-alive connections by the thousand, then a listener at its `max_connections`.
pub(crate) fn connection_flood(bench: &Bench) -> Outcome {
    let backends: Vec<Backend> = (0..2).map(|_| Backend::start(&Behaviour::status(200))).collect();
    let addresses: Vec<_> = backends.iter().map(|b| b.address).collect();
    let idle_count = bench.scale.pick(10_000, 2_000);
    let roomy = Sections { listener: "max_connections = 20000\n".to_string(), ..Sections::default() };
    let proxy = Proxy::start(&bench.work, "flood", &addresses, &roomy);
    let rt = runtime();
    // Warm up first, so the baseline has the pools and buffers one request makes.
    rt.block_on(async { one_request(TcpStream::connect(proxy.address).await.expect("connect")).await });
    let (before, _) = proxy.memory_kib();
    let idle = rt.block_on(open_served(proxy.address, idle_count));
    // Idle keep-alive connections are parked after a second (lb-proxy's front/h1.rs): their
    // engine state goes back to the allocator, which returns such pages to the OS only later, in
    // the course of other work. So this counts what 10,000 busy connections needed a moment ago.
    std::thread::sleep(Duration::from_secs(2));
    let (after, _) = proxy.memory_kib();
    let per_connection = (after.saturating_sub(before)) as f64 / idle_count as f64;
    let still_serving =
        rt.block_on(async { one_request(TcpStream::connect(proxy.address).await.expect("connect")).await });
    drop(idle);
    drop(proxy);

    let cap = bench.scale.pick(1_000, 300);
    let excess = 200;
    let capped = Sections { listener: format!("max_connections = {cap}\n"), ..Sections::default() };
    let proxy = Proxy::start(&bench.work, "capped", &addresses, &capped);
    let (kept, refused, slowest_refusal) = rt.block_on(over_the_cap(proxy.address, cap + excess));
    // A connection's engine state (about 5 KiB), task (2 KiB), read buffer (2 KiB) and request buffers.
    let bound_kib = 12.0;
    Outcome {
        scenario: "6. connection flood: idle keep-alive connections, then max_connections",
        figure: format!(
            "{idle_count} idle connections: RSS {} → {} MiB, {per_connection:.1} KiB each; a new client {}; \
             cap {cap} with {} connecting: {kept} kept and served, {refused} closed at once (slowest {})",
            before / 1024,
            after / 1024,
            if still_serving { "still served" } else { "NOT served" },
            cap + excess,
            ms(slowest_refusal)
        ),
        promise: format!(
            "≤ {bound_kib} KiB per idle connection; past the cap the excess is closed within 1 s, the rest served"
        ),
        kept: per_connection <= bound_kib
            && still_serving
            && kept == cap
            && refused == excess
            && slowest_refusal <= Duration::from_secs(1),
    }
}

/// Opens `count` connections, each carrying one served request, and keeps
/// them open. A few at a time, so the proxy's upstream pool stays small and
/// the memory measured is the client connections'.
async fn open_served(target: SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut open = Vec::with_capacity(count);
    while open.len() < count {
        let batch: Vec<_> = (0..8.min(count - open.len()))
            .map(|_| {
                tokio::spawn(async move {
                    let mut stream = TcpStream::connect(target).await.expect("connect");
                    let served = request_on(&mut stream).await;
                    (stream, served)
                })
            })
            .collect();
        for task in batch {
            let (stream, served) = task.await.expect("a connection task");
            assert!(served, "a flood connection was not served");
            open.push(stream);
        }
    }
    open
}

/// Connects `count` clients at once to a listener capped below that;
/// `(kept and served, closed by the proxy, the slowest close)`.
async fn over_the_cap(target: SocketAddr, count: usize) -> (usize, usize, Duration) {
    let mut watched = Vec::with_capacity(count);
    for _ in 0..count {
        let stream = TcpStream::connect(target).await.expect("connect");
        watched.push(tokio::spawn(async move {
            let (connected, mut stream, mut byte) = (Instant::now(), stream, [0u8; 1]);
            // A connection past the cap is closed as soon as it is accepted; a kept one stays silent.
            match tokio::time::timeout(Duration::from_secs(2), stream.read(&mut byte)).await {
                Ok(_) => Err(connected.elapsed()),
                Err(_) => Ok(stream),
            }
        }));
    }
    let (mut kept, mut refused, mut slowest) = (Vec::new(), 0, Duration::ZERO);
    for task in watched {
        match task.await.expect("a watching task") {
            Ok(stream) => kept.push(stream),
            Err(closed_after) => {
                refused += 1;
                slowest = slowest.max(closed_after);
            }
        }
    }
    let mut served = 0;
    for mut stream in kept {
        served += usize::from(request_on(&mut stream).await);
    }
    (served, refused, slowest)
}

async fn one_request(mut stream: TcpStream) -> bool {
    request_on(&mut stream).await
}

/// One keep-alive GET; whether a 200 came back (bounded by 5 s).
async fn request_on(stream: &mut TcpStream) -> bool {
    let exchange = async {
        stream.write_all(b"GET / HTTP/1.1\r\nhost: flood\r\n\r\n").await.ok()?;
        let mut answer = Vec::new();
        let mut chunk = [0u8; 1024];
        // The backend's answer is small: a head ending in a body of `0 0\n`.
        while !answer.ends_with(b"\n") || !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            answer.extend_from_slice(&chunk[..n]);
        }
        Some(answer.starts_with(b"HTTP/1.1 200"))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange).await.ok().flatten().unwrap_or(false)
}
