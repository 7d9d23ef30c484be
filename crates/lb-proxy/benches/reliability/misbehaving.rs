//! Scenario 8: backends that answer with broken framing. The client must
//! see a 502 or a cut connection, never a response that looks whole and is
//! not, and the proxy must never send another request down that connection.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use crate::backend::{BAD_ANSWERS, Behaviour};
use crate::harness::{Backend, Bench, Outcome, Proxy, Sections, read_answer};

/// Requests sent per bad answer, one after another, so a reused connection would show.
const TRIES: usize = 4;

pub(crate) fn misbehaving_backend(bench: &Bench) -> Outcome {
    let mut broken = Vec::new();
    let (mut answered_502, mut cut) = (0, 0);
    for (n, (name, ..)) in BAD_ANSWERS.iter().enumerate() {
        let record = bench.work.join(format!("bad-{n}.log"));
        let backend = Backend::start(&Behaviour::Misbehave { answer: name, record: record.clone() });
        let proxy = Proxy::start(&bench.work, &format!("bad-{n}"), &[backend.address], &Sections::default());
        for _ in 0..TRIES {
            let mut stream = TcpStream::connect(proxy.address).expect("connect");
            stream.set_read_timeout(Some(Duration::from_secs(5))).expect("a read timeout");
            stream.write_all(b"GET / HTTP/1.1\r\nhost: bad\r\n\r\n").expect("write");
            match read_answer(&mut stream) {
                None => cut += 1,
                Some(answer) if !answer.complete => cut += 1,
                Some(answer) if answer.status == 502 => answered_502 += 1,
                Some(answer) => broken.push(format!("{name}: a whole-looking {} answer", answer.status)),
            }
        }
        drop(proxy);
        let reused = std::fs::read_to_string(&record).unwrap_or_default().lines().count();
        if reused > 0 {
            broken.push(format!("{name}: the connection was reused {reused} time(s)"));
        }
    }
    Outcome {
        scenario: "8. misbehaving backends (CL+TE, short and reset bodies, bad status lines, a 1xx flood, ...)",
        figure: format!(
            "{} malformed answers × {TRIES} requests: {answered_502} got 502, {cut} a cut connection{}",
            BAD_ANSWERS.len(),
            if broken.is_empty() { String::new() } else { format!("; BROKEN: {}", broken.join("; ")) }
        ),
        promise: "always 502 or a cut connection; a bad connection is never reused".to_string(),
        kept: broken.is_empty(),
    }
}
