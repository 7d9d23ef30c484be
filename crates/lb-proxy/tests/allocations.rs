//! Heap allocations per proxied request in steady state, counted by a
//! global allocator: the HTTP/1.1 path allocates nothing per request once a
//! connection's buffers exist.
//!
//! The proxy runs alone on its own thread (a one-thread runtime, as with
//! `worker_threads = 1`); only allocations made on that thread count. The
//! backend and the client run on other threads.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: every call is passed on to the system allocator unchanged.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTED.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTED.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const BODY: &[u8] = b"hello from the backend\n";

/// A backend on its own thread: answers every request on a connection with `BODY`.
fn backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(64) {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 8192];
                let mut seen = Vec::new();
                let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", BODY.len());
                let mut answer = answer.into_bytes();
                answer.extend_from_slice(BODY);
                loop {
                    let Ok(n @ 1..) = stream.read(&mut buf) else { return };
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        if stream.write_all(&answer).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    address
}

/// Starts the proxy on a thread of its own, whose allocations are counted,
/// with its defaults: metrics on (the admin listener), tracing and the access log off.
fn proxy(backend: SocketAddr) -> SocketAddr {
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[[listeners]]\nlisten = \"127.0.0.1:0\"\n[[routes]]\nupstream = \"web\"\n\
         [upstreams.web]\ndiscovery.static.endpoints = [\"{backend}\"]\n"
    );
    let config = lb_proxy::Config::parse(&text, "allocations.toml").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        COUNTED.with(|c| c.set(true));
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let proxy = lb_proxy::Proxy::new(config).start().await.unwrap();
            tx.send(proxy.listen_addresses()[0]).unwrap();
            std::future::pending::<()>().await;
        });
    });
    rx.recv_timeout(Duration::from_secs(10)).expect("the proxy starts")
}

/// Sends `n` GETs on one kept-alive connection, each waiting for its whole answer.
fn requests(stream: &mut TcpStream, n: usize) {
    let mut buf = vec![0u8; 4096];
    for _ in 0..n {
        stream.write_all(b"GET /x HTTP/1.1\r\nHost: test\r\nUser-Agent: alloc-test\r\n\r\n").unwrap();
        let mut got = Vec::new();
        while !(got.ends_with(BODY) && got.windows(4).any(|w| w == b"\r\n\r\n")) {
            let read = stream.read(&mut buf).expect("an answer in time");
            assert!(read > 0, "closed early: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..read]);
        }
        assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"), "{}", String::from_utf8_lossy(&got));
    }
}

#[test]
fn a_proxied_request_allocates_nothing_in_steady_state() {
    let proxy = proxy(backend());
    let mut stream = TcpStream::connect(proxy).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // Warm up: connection buffers, the pool's connection, lazily registered metrics.
    requests(&mut stream, 500);
    const N: usize = 2000;
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    requests(&mut stream, N);
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    println!("{allocations} allocations on the proxy's thread over {N} requests");
    assert_eq!(allocations, 0, "{:.3} allocations per request", allocations as f64 / N as f64);
}
