//! The proxy's own life under load: reloads (scenario 3) and a SIGTERM
//! drain (scenario 4).

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::backend::Behaviour;
use crate::harness::{Backend, Bench, Outcome, Proxy, Sections, Wrk, read_answer};

/// Scenario 3: ten reloads under load, alternating two endpoint sets that
/// move traffic (a, b) → (b, c) → (a, b) ...
pub(crate) fn reloads(bench: &Bench) -> Outcome {
    let backends: Vec<Backend> = (0..3).map(|_| Backend::start(&Behaviour::status(200))).collect();
    let [a, b, c] = [backends[0].address, backends[1].address, backends[2].address];
    let sets = [vec![a, b], vec![b, c]];
    let sections = Sections::default();
    let proxy = Proxy::start(&bench.work, "reload", &sets[0], &sections);
    let length = bench.scale.pick(Duration::from_secs(8), Duration::from_secs(4));
    let load = Wrk::start(&bench.wrk, proxy.address, 20, length);
    let reloads = 10;
    let gap = length / (reloads + 2);
    let mut applied = 0;
    for n in 1..=reloads {
        std::thread::sleep(gap); // Paces the reloads across the load.
        if proxy.reload(&sets[n as usize % 2], &sections) {
            applied += 1;
        }
    }
    let result = load.finish();
    let served = |address: SocketAddr| proxy.metric_sum("requests_total", &format!("backend=\"{address}\""));
    let (to_a, to_c) = (served(a), served(c));
    Outcome {
        scenario: "3. 10 reloads under load, moving traffic between endpoint sets",
        figure: format!(
            "{applied} of {reloads} reloads applied; {} requests, {} non-2xx, {} socket errors; \
             {to_a:.0} served by the endpoint only in set 1, {to_c:.0} by the one only in set 2",
            result.requests, result.non_2xx, result.socket_errors
        ),
        promise: "every reload applied; 0 errors and 0 connections reset; traffic follows".to_string(),
        kept: applied == reloads && result.failed() == 0 && result.requests > 0 && to_a > 0.0 && to_c > 0.0,
    }
}

/// One request a drain client sent: when, and how it ended.
struct Sent {
    at: Instant,
    /// The answer's status when it came whole; `None` when cut or never answered.
    whole: Option<u16>,
}

/// How long before the signal a request must have been sent to count as in
/// flight: sooner, its bytes may still sit unread in the kernel when the
/// proxy closes the idle connection, the race every HTTP/1.1 keep-alive
/// server has (clients retry such a request).
const IN_FLIGHT_MARGIN: Duration = Duration::from_millis(20);

/// Scenario 4: SIGTERM while every client has a slow request in flight.
pub(crate) fn drain(bench: &Bench) -> Outcome {
    let slow = Behaviour::Serve { status: 200, delay_ms: 300, record: None };
    let backends: Vec<Backend> = (0..3).map(|_| Backend::start(&slow)).collect();
    let addresses: Vec<_> = backends.iter().map(|b| b.address).collect();
    let drain_timeout = Duration::from_secs(5);
    let sections = Sections { global: "drain_timeout = \"5s\"\n".to_string(), ..Sections::default() };
    let mut proxy = Proxy::start(&bench.work, "drain", &addresses, &sections);
    let sent = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..20)
        .map(|_| {
            let (sent, refused, target) = (Arc::clone(&sent), Arc::clone(&refused), proxy.address);
            std::thread::spawn(move || drain_client(target, &sent, &refused))
        })
        .collect();
    std::thread::sleep(bench.scale.pick(Duration::from_secs(2), Duration::from_secs(1)));
    let signalled = Instant::now();
    proxy.signal("TERM");
    let exited = proxy.wait_exit(drain_timeout + Duration::from_secs(2));
    refused.store(true, Ordering::Relaxed);
    for client in clients {
        let _ = client.join();
    }
    let sent = std::mem::take(&mut *sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    let in_flight: Vec<&Sent> = sent.iter().filter(|s| s.at + IN_FLIGHT_MARGIN <= signalled).collect();
    let answered_before = in_flight.iter().filter(|s| s.whole.is_some()).count();
    let cut = in_flight.iter().filter(|s| s.whole != Some(200)).count();
    let exit =
        exited.map_or("did not exit".to_string(), |d| format!("exited {} ms after SIGTERM", d.as_millis()));
    Outcome {
        scenario: "4. SIGTERM drain under load (answers take 300 ms)",
        figure: format!(
            "{} requests sent before the signal, {cut} of them cut or not 200; {exit}; {} sent later",
            in_flight.len(),
            sent.len() - in_flight.len()
        ),
        promise: format!(
            "0 in-flight requests cut; exit within drain_timeout ({} s)",
            drain_timeout.as_secs()
        ),
        kept: answered_before > 0 && cut == 0 && exited.is_some_and(|d| d <= drain_timeout),
    }
}

/// Sends GETs on keep-alive connections until connecting is refused (the
/// listener closed) or `stop` is set.
fn drain_client(target: SocketAddr, sent: &Mutex<Vec<Sent>>, stop: &AtomicBool) {
    let mut connection: Option<TcpStream> = None;
    while !stop.load(Ordering::Relaxed) {
        let stream = match connection.take() {
            Some(stream) => stream,
            None => match TcpStream::connect(target) {
                Ok(stream) => stream,
                Err(_) => return,
            },
        };
        let mut stream = stream;
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("a read timeout");
        let at = Instant::now();
        if stream.write_all(b"GET / HTTP/1.1\r\nhost: drain\r\n\r\n").is_err() {
            continue;
        }
        let answer = read_answer(&mut stream);
        let whole = answer.as_ref().filter(|a| a.complete).map(|a| a.status);
        sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(Sent { at, whole });
        if answer.is_some_and(|a| a.complete && !a.close) {
            connection = Some(stream);
        }
    }
}
