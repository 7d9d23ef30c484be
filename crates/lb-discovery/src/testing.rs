//! A real `dnsmasq` for tests of DNS discovery (feature `testing`).
//!
//! It serves only the records it is given, on 127.0.0.1 at a port free for
//! both UDP and TCP, with one-second TTLs, and is killed when dropped, even
//! when the test fails.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::{Child, Command, Stdio};

/// Where Debian installs dnsmasq (`cargo xtask test` installs the package).
pub const DNSMASQ: &str = "/usr/sbin/dnsmasq";

/// A running dnsmasq, killed and reaped when dropped.
#[derive(Debug)]
pub struct Dnsmasq {
    child: Child,
    port: u16,
}

impl Dnsmasq {
    /// Serves `records` (dnsmasq options such as `--host-record=web.test,127.0.0.11`)
    /// on a fresh port.
    ///
    /// # Panics
    /// If dnsmasq is not installed, cannot start, or no port is free.
    pub fn start<S: AsRef<std::ffi::OsStr>>(records: &[S]) -> Dnsmasq {
        Dnsmasq::start_on(free_port(), records)
    }

    /// Serves `records` on `port`, e.g. to restart with changed records at the same address.
    ///
    /// # Panics
    /// If dnsmasq is not installed or cannot start.
    pub fn start_on<S: AsRef<std::ffi::OsStr>>(port: u16, records: &[S]) -> Dnsmasq {
        assert!(
            std::path::Path::new(DNSMASQ).exists(),
            "{DNSMASQ} is missing: install the `dnsmasq` Debian package (`cargo xtask test` does)"
        );
        let child = Command::new(DNSMASQ)
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--pid-file=",
                "--user=root",
                "--local-ttl=1",
                "--auth-ttl=1",
                &format!("--port={port}"),
            ])
            .args(records)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("dnsmasq starts");
        Dnsmasq { child, port }
    }

    /// The port it serves on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address to point a resolver at.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free for both UDP and TCP on 127.0.0.1 (dnsmasq serves both).
fn free_port() -> u16 {
    for _ in 0..50 {
        let Ok(udp) = UdpSocket::bind("127.0.0.1:0") else { continue };
        let Ok(addr) = udp.local_addr() else { continue };
        if TcpListener::bind(("127.0.0.1", addr.port())).is_ok() {
            return addr.port();
        }
    }
    panic!("no port free for both UDP and TCP after 50 tries");
}
