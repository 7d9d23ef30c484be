//! Bodies through the proxy: big ones with bounded memory (scenario 7),
//! and many uploads while clients abort and a backend dies (scenario 10).
//! Every body is a pattern named by its upload id, so both ends can hash it.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::backend::{Behaviour, UPLOAD_ID};
use crate::harness::{
    Answer, Backend, Bench, Outcome, Proxy, Sections, pattern, pattern_digest, read_answer,
};

const BLOCK: usize = 64 * 1024;
const MIB: u64 = 1024 * 1024;

/// How one upload is sent.
struct Upload {
    id: u64,
    length: u64,
    chunked: bool,
    /// Stop sending after this many body bytes (FIN), if set.
    abort_at: Option<u64>,
    method: &'static str,
}

/// What the client saw of an upload.
struct Sent {
    /// The whole body (and its last chunk) was written.
    finished: bool,
    answer: Option<Answer>,
}

fn upload(target: SocketAddr, up: &Upload) -> Sent {
    let Ok(mut stream) = TcpStream::connect(target) else { return Sent { finished: false, answer: None } };
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("a read timeout");
    let framing = if up.chunked {
        "transfer-encoding: chunked".to_string()
    } else {
        format!("content-length: {}", up.length)
    };
    let head =
        format!("{} /upload HTTP/1.1\r\nhost: up\r\n{UPLOAD_ID}: {}\r\n{framing}\r\n\r\n", up.method, up.id);
    let mut finished = stream.write_all(head.as_bytes()).is_ok();
    let mut block = vec![0u8; BLOCK];
    let mut at = 0;
    let stop = up.abort_at.unwrap_or(up.length);
    while finished && at < stop {
        let n = BLOCK.min((stop - at) as usize);
        pattern(up.id, at, &mut block[..n]);
        let written = if up.chunked {
            stream
                .write_all(format!("{n:x}\r\n").as_bytes())
                .and_then(|()| stream.write_all(&block[..n]))
                .and_then(|()| stream.write_all(b"\r\n"))
        } else {
            stream.write_all(&block[..n])
        };
        finished = written.is_ok();
        at += n as u64;
    }
    if up.abort_at.is_some() {
        return Sent { finished: false, answer: None };
    }
    if finished && up.chunked {
        finished = stream.write_all(b"0\r\n\r\n").is_ok();
    }
    Sent { finished, answer: read_answer(&mut stream) }
}

/// `(length, crc32)` the backend reported in its answer body.
fn reported(answer: &Answer) -> Option<(u64, u32)> {
    let text = std::str::from_utf8(&answer.body).ok()?;
    let (length, crc) = text.trim().split_once(' ')?;
    Some((length.parse().ok()?, crc.parse().ok()?))
}

/// GETs `/download/{length}` and hashes the body as it streams; `(bytes, crc32)` when it came whole.
fn download(target: SocketAddr, length: u64) -> Option<(u64, u32)> {
    let mut stream = TcpStream::connect(target).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(stream, "GET /download/{length} HTTP/1.1\r\nhost: down\r\nconnection: close\r\n\r\n").ok()?;
    let mut buffer = Vec::new();
    let mut block = vec![0u8; BLOCK];
    let (head_len, declared) = loop {
        let n = stream.read(&mut block).ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&block[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(len)) = response.parse(&buffer) {
            let declared = response.headers.iter().find(|h| h.name.eq_ignore_ascii_case("content-length"));
            let declared: u64 = std::str::from_utf8(declared?.value).ok()?.trim().parse().ok()?;
            break (len, declared);
        }
    };
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&buffer[head_len..]);
    let mut got = (buffer.len() - head_len) as u64;
    while got < declared {
        let n = stream.read(&mut block).ok()?;
        if n == 0 {
            break;
        }
        hasher.update(&block[..n]);
        got += n as u64;
    }
    (got == declared).then(|| (got, hasher.finalize()))
}

/// Scenario 7: an upload and a download of `big` bytes after ones of
/// `small`: the proxy's peak RSS must not grow with the body, and every byte
/// arrives intact.
pub(crate) fn big_bodies(bench: &Bench) -> Outcome {
    let backend = Backend::start(&Behaviour::status(200));
    let sections = Sections { global: "max_body_bytes = 0\n".to_string(), ..Sections::default() };
    let proxy = Proxy::start(&bench.work, "bodies", &[backend.address], &sections);
    let (small, big) = bench.scale.pick((64 * MIB, 1024 * MIB), (8 * MIB, 128 * MIB));
    let mut intact = true;
    let mut transfer = |id: u64, length: u64| {
        let started = Instant::now();
        let up = upload(
            proxy.address,
            &Upload { id, length, chunked: id % 2 == 1, abort_at: None, method: "PUT" },
        );
        intact &= up.finished && up.answer.as_ref().and_then(reported) == Some(pattern_digest(id, length));
        let up_rate = length as f64 / MIB as f64 / started.elapsed().as_secs_f64();
        let started = Instant::now();
        intact &= download(proxy.address, length) == Some(pattern_digest(0, length));
        (up_rate, length as f64 / MIB as f64 / started.elapsed().as_secs_f64())
    };
    transfer(1, small);
    let (_, peak_small) = proxy.memory_kib();
    let (up_rate, down_rate) = transfer(2, big);
    let (_, peak_big) = proxy.memory_kib();
    let growth_kib = peak_big.saturating_sub(peak_small);
    let bound_kib = 4 * 1024;
    Outcome {
        scenario: "7. big bodies: an upload and a download through the proxy",
        figure: format!(
            "{} MiB each way ({up_rate:.0} MiB/s up, {down_rate:.0} MiB/s down), bytes {}; peak RSS {} MiB after {} MiB \
             bodies, {} MiB after {} MiB ones",
            big / MIB,
            if intact { "intact (crc32 compared)" } else { "NOT intact" },
            peak_small / 1024,
            small / MIB,
            peak_big / 1024,
            big / MIB
        ),
        promise: format!(
            "bytes intact; peak RSS grows ≤ {} MiB from {} MiB to {} MiB bodies",
            bound_kib / 1024,
            small / MIB,
            big / MIB
        ),
        kept: intact && growth_kib <= bound_kib,
    }
}

/// Scenario 10: clients upload (Content-Length and chunked, PUT and POST)
/// while some abort mid-body and one backend of three is SIGKILLed.
pub(crate) fn uploads_under_faults(bench: &Bench) -> Outcome {
    let records: Vec<_> = (0..3).map(|n| bench.work.join(format!("uploads-{n}.log"))).collect();
    let mut backends: Vec<Backend> = records
        .iter()
        .map(|r| Backend::start(&Behaviour::Serve { status: 200, delay_ms: 0, record: Some(r.clone()) }))
        .collect();
    let addresses: Vec<_> = backends.iter().map(|b| b.address).collect();
    let proxy = Proxy::start(&bench.work, "uploads", &addresses, &Sections::default());
    let length = bench.scale.pick(Duration::from_secs(8), Duration::from_secs(4));
    let finished = Arc::new(Mutex::new(HashMap::new()));
    let successes = Arc::new(Mutex::new(Vec::new()));
    let stop_at = Instant::now() + length;
    let clients: Vec<_> = (0..16u64)
        .map(|client| {
            let (finished, successes, target) =
                (Arc::clone(&finished), Arc::clone(&successes), proxy.address);
            std::thread::spawn(move || upload_client(client, target, stop_at, &finished, &successes))
        })
        .collect();
    std::thread::sleep(length / 3); // Paces the scenario: the kill lands mid-traffic.
    backends[0].kill();
    let counts: Vec<(u64, u64)> = clients.into_iter().map(|c| c.join().expect("an upload client")).collect();
    let (started, aborted) = counts.iter().fold((0, 0), |(s, a), (cs, ca)| (s + cs, a + ca));
    drop(proxy);
    drop(backends);
    let finished = finished.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let successes = successes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let recorded: Vec<(u64, u64, u32)> = records.iter().flat_map(|r| read_record(r)).collect();
    // Whole at the backend means a client sent exactly that body, whole.
    let forged = recorded.iter().filter(|(id, l, c)| finished.get(id) != Some(&(*l, *c))).count();
    // A success means the backend recorded that body whole.
    let unbacked = successes
        .iter()
        .filter(|(id, got)| {
            Some(got) != finished.get(id) || !recorded.iter().any(|(r, l, c)| r == id && (*l, *c) == *got)
        })
        .count();
    Outcome {
        scenario: "10. uploads while clients abort and a backend is SIGKILLed",
        figure: format!(
            "{started} uploads ({aborted} aborted mid-body), {} answered 200, {} bodies recorded whole by backends; \
             {forged} recorded bodies no client finished, {unbacked} successes without a whole body behind them",
            successes.len(),
            recorded.len()
        ),
        promise:
            "every body a backend took whole is one a client finished; every 200 has its whole body behind it"
                .to_string(),
        kept: forged == 0 && unbacked == 0 && !successes.is_empty() && aborted > 0,
    }
}

/// Uploads until `stop_at`; `(started, aborted)`. Successes are `(id, (length, crc))`.
fn upload_client(
    client: u64,
    target: SocketAddr,
    stop_at: Instant,
    finished: &Mutex<HashMap<u64, (u64, u32)>>,
    successes: &Mutex<Vec<(u64, (u64, u32))>>,
) -> (u64, u64) {
    let mut random = fastrand::Rng::with_seed(client);
    let (mut started, mut aborted) = (0, 0);
    while Instant::now() < stop_at {
        let id = client * 1_000_000 + started;
        let length = random.u64(1024..512 * 1024);
        let abort_at = if random.u8(0..8) == 0 { Some(random.u64(0..length)) } else { None };
        let up = Upload {
            id,
            length,
            chunked: random.bool(),
            abort_at,
            method: if random.bool() { "PUT" } else { "POST" },
        };
        started += 1;
        aborted += u64::from(abort_at.is_some());
        let sent = upload(target, &up);
        if sent.finished {
            finished
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(id, pattern_digest(id, length));
        }
        if let Some(answer) = sent.answer.filter(|a| a.status == 200 && a.complete)
            && let Some(got) = reported(&answer)
        {
            successes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((id, got));
        }
    }
    (started, aborted)
}

/// A backend's record: `id length crc32` per line.
fn read_record(path: &Path) -> Vec<(u64, u64, u32)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut words = line.split(' ');
            Some((words.next()?.parse().ok()?, words.next()?.parse().ok()?, words.next()?.parse().ok()?))
        })
        .collect()
}
