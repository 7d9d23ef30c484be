//! TLS termination on a listener, against real clients: curl over HTTP/1.1
//! and HTTP/2, `openssl s_client` for ALPN, a rustls client for SNI; and bad
//! input (plain HTTP on the TLS port, a key that is not the certificate's).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use common::{Backend, full};
use http::Response;
use lb_tls::testing::TestPki;

/// A backend answering the `X-Forwarded-Proto` it was sent.
async fn proto_echo() -> Backend {
    Backend::start(|req: http::Request<hyper::body::Incoming>| async move {
        let proto = req.headers().get("x-forwarded-proto").map(|v| v.to_str().unwrap().to_string());
        Response::new(full(proto.unwrap_or_else(|| "none".to_string())))
    })
    .await
}

/// A config whose one listener terminates TLS with `certificates` (cert, key pairs).
fn tls_config(backend: SocketAddr, certificates: &[(&Path, &Path)]) -> String {
    let list: Vec<String> = certificates
        .iter()
        .map(|(c, k)| format!("{{ cert_file = \"{}\", key_file = \"{}\" }}", c.display(), k.display()))
        .collect();
    format!(
        "[admin]\nenabled = false\n[[listeners]]\nlisten = \"127.0.0.1:0\"\ntls.certificates = [{}]\n\
         [[routes]]\nupstream = \"web\"\n[upstreams.web]\ndiscovery.static.endpoints = [\"{backend}\"]\n",
        list.join(", ")
    )
}

async fn start(dir: &Path, text: &str) -> lb_proxy::RunningProxy {
    let path = dir.join("lb.toml");
    std::fs::write(&path, text).unwrap();
    let config = lb_proxy::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    lb_proxy::Proxy::new(config).start().await.unwrap()
}

/// `curl` with `args` against `https://web.test:PORT/`, resolved to the proxy; its stdout.
async fn curl(pki: &TestPki, proxy: SocketAddr, args: &[&str]) -> String {
    let port = proxy.port();
    let mut command = tokio::process::Command::new("curl");
    command
        .args(["--silent", "--show-error", "--max-time", "10", "--cacert"])
        .arg(&pki.ca)
        .arg("--resolve")
        .arg(format!("web.test:{port}:127.0.0.1"))
        .args(args)
        .arg(format!("https://web.test:{port}/"));
    let out = command.output().await.expect("curl runs (cargo xtask test installs it)");
    assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_gets_through_over_http1_and_http2_and_the_backend_hears_https() {
    let backend = proto_echo().await;
    let pki = TestPki::new(&["web.test"]);
    let proxy = start(pki.dir(), &tls_config(backend.addr, &[(&pki.server_cert, &pki.server_key)])).await;
    let address = proxy.listen_addresses()[0];

    let http1 = curl(&pki, address, &["--http1.1", "--write-out", " %{http_version}"]).await;
    assert_eq!(http1, "https 1.1");
    let http2 = curl(&pki, address, &["--http2", "--write-out", " %{http_version}"]).await;
    assert_eq!(http2, "https 2");
    // Keep-alive over TLS: several requests on one connection.
    let twice = curl(&pki, address, &["--http1.1", "--next"]).await;
    assert!(!twice.is_empty());
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificate_follows_sni_and_alpn_offers_h2() {
    let backend = Backend::named("a").await;
    let (first, second) = (TestPki::new(&["a.test"]), TestPki::new(&["b.test", "*.b.test"]));
    let certificates =
        [(&*first.server_cert, &*first.server_key), (&*second.server_cert, &*second.server_key)];
    let proxy = start(first.dir(), &tls_config(backend.addr, &certificates)).await;
    let address = proxy.listen_addresses()[0];

    // A client that trusts only `second`'s CA gets through only if `second`'s certificate was chosen.
    let handshake = |pki: &TestPki, name: &'static str| {
        let config = lb_tls::ClientTls { ca_file: Some(pki.ca.clone()), ..Default::default() };
        let config = config.client_config(&[b"h2"]).unwrap();
        async move {
            let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from(name).unwrap();
            let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await;
            tls.map(|s| s.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)).map_err(|e| e.to_string())
        }
    };
    assert_eq!(handshake(&second, "b.test").await, Ok(Some(b"h2".to_vec())));
    assert_eq!(handshake(&second, "api.b.test").await, Ok(Some(b"h2".to_vec())), "the wildcard");
    assert_eq!(handshake(&first, "a.test").await, Ok(Some(b"h2".to_vec())));
    // An unknown name gets the default (first) certificate, which a.test's CA verifies for a.test only.
    assert!(handshake(&first, "other.test").await.is_err());

    let out = Command::new("openssl")
        .args(["s_client", "-connect", &address.to_string(), "-servername", "b.test", "-alpn", "h2,http/1.1"])
        .arg("-CAfile")
        .arg(&second.ca)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl runs (cargo xtask test installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ALPN protocol: h2"), "{text}");
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_on_the_tls_port_is_refused_and_nothing_else_breaks() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = proto_echo().await;
    let pki = TestPki::new(&["web.test"]);
    let proxy = start(pki.dir(), &tls_config(backend.addr, &[(&pki.server_cert, &pki.server_key)])).await;
    let address = proxy.listen_addresses()[0];

    let mut plain = tokio::net::TcpStream::connect(address).await.unwrap();
    plain.write_all(b"GET / HTTP/1.1\r\nHost: web.test\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), plain.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection is closed, not left hanging");
    assert!(!answer.starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&answer));
    assert_eq!(backend.requests.load(std::sync::atomic::Ordering::SeqCst), 0);

    assert_eq!(curl(&pki, address, &["--http1.1"]).await, "https");
    proxy.shutdown().await;
}

#[test]
fn a_key_that_is_not_the_certificates_is_refused_where_the_config_says_tls() {
    let pki = TestPki::new(&["web.test"]);
    let text = tls_config("127.0.0.1:9".parse().unwrap(), &[(&pki.server_cert, &pki.client_key)]);
    let path = pki.dir().join("lb.toml");
    std::fs::write(&path, &text).unwrap();
    let error = lb_proxy::Config::load(&path).unwrap_err().to_string();
    let expected = format!(
        "{}:5:1: {}: not the key of the certificate in {}",
        path.display(),
        pki.client_key.display(),
        pki.server_cert.display()
    );
    assert!(error.starts_with(&expected), "{error}\nexpected: {expected}");

    let missing =
        tls_config("127.0.0.1:9".parse().unwrap(), &[(&pki.dir().join("gone.pem"), &pki.server_key)]);
    std::fs::write(&path, &missing).unwrap();
    let error = lb_proxy::Config::load(&path).unwrap_err().to_string();
    assert!(error.contains(&format!("{}: No such file", pki.dir().join("gone.pem").display())), "{error}");

    // `lb-proxy check` refuses what every client would refuse.
    let expired = TestPki::expired(&["web.test"]);
    let stale = tls_config("127.0.0.1:9".parse().unwrap(), &[(&expired.server_cert, &expired.server_key)]);
    std::fs::write(&path, &stale).unwrap();
    let error = lb_proxy::Config::load(&path).unwrap_err().to_string();
    let expected =
        format!("{}:5:1: {}: the certificate expired on ", path.display(), expired.server_cert.display());
    assert!(error.starts_with(&expected), "{error}\nexpected: {expected}");
}

/// h2load (nghttp2), many multiplexed streams over a few TLS connections:
/// every request is answered, over h2 negotiated by ALPN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2load_over_tls_gets_every_request_answered() {
    let backend = Backend::named("a").await;
    let pki = TestPki::new(&["web.test"]);
    let proxy = start(pki.dir(), &tls_config(backend.addr, &[(&pki.server_cert, &pki.server_key)])).await;
    let url = format!("https://127.0.0.1:{}/", proxy.listen_addresses()[0].port());
    let run =
        tokio::process::Command::new("h2load").args(["-n", "2000", "-c", "4", "-m", "16", &url]).output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), run)
        .await
        .expect("h2load finishes")
        .expect("h2load runs (cargo xtask test installs nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Application protocol: h2"), "{text}");
    assert!(
        text.contains("requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, 0 errored"),
        "{text}"
    );
    assert!(text.contains("status codes: 2000 2xx"), "{text}");
    assert_eq!(backend.requests.load(std::sync::atomic::Ordering::SeqCst), 2000);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_shows_renewed_certificates_and_a_bad_one_keeps_the_running_ones() {
    let backend = Backend::named("a").await;
    let (old, renewed) = (TestPki::new(&["web.test"]), TestPki::new(&["web.test"]));
    // The config points at files in its own directory, which a renewal overwrites.
    let (cert, key) = (old.dir().join("live.pem"), old.dir().join("live.key"));
    std::fs::copy(&old.server_cert, &cert).unwrap();
    std::fs::copy(&old.server_key, &key).unwrap();
    let text = tls_config(backend.addr, &[(&cert, &key)]);
    let mut proxy = start(old.dir(), &text).await;
    let address = proxy.listen_addresses()[0];
    let trusts = |pki: &TestPki| {
        let config = lb_tls::ClientTls { ca_file: Some(pki.ca.clone()), ..Default::default() };
        let config = config.client_config(&[]).unwrap();
        async move {
            let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("web.test").unwrap();
            tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.is_ok()
        }
    };
    assert!(trusts(&old).await && !trusts(&renewed).await);

    std::fs::copy(&renewed.server_cert, &cert).unwrap();
    std::fs::copy(&renewed.server_key, &key).unwrap();
    let reloaded = lb_proxy::Config::load(old.dir().join("lb.toml")).unwrap();
    proxy.reload(reloaded).await.unwrap();
    assert!(trusts(&renewed).await && !trusts(&old).await, "new handshakes show the renewed certificate");

    // A key that is not the certificate's: the reload fails, naming it, and the renewed one stays.
    std::fs::copy(&old.server_key, &key).unwrap();
    let reloaded = lb_proxy::Config::parse(&text, "lb.toml").unwrap();
    let error = proxy.reload(reloaded).await.unwrap_err().to_string();
    assert!(error.contains(&format!("{}: not the key of the certificate", key.display())), "{error}");
    assert!(trusts(&renewed).await);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_plain_listener_can_redirect_every_request_to_https() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = Backend::named("a").await;
    let text = common::config("round_robin", &[(backend.addr, 1)], "").replacen(
        "[[listeners]]\n",
        "[[listeners]]\nredirect_to_https = true\n",
        1,
    );
    let proxy = common::proxy(&text).await;
    let address = proxy.listen_addresses()[0];
    for (host, location) in
        [("shop.example:8080", "https://shop.example/cart?id=7"), ("[::1]:80", "https://[::1]/cart?id=7")]
    {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let request = format!(
            "POST /cart?id=7 HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 308 "), "{answer}");
        assert!(answer.to_ascii_lowercase().contains(&format!("\r\nlocation: {location}\r\n")), "{answer}");
    }
    assert_eq!(backend.requests.load(std::sync::atomic::Ordering::SeqCst), 0, "nothing goes upstream");
    proxy.shutdown().await;

    let pki = TestPki::new(&["web.test"]);
    let both = tls_config(backend.addr, &[(&pki.server_cert, &pki.server_key)]).replacen(
        "[[listeners]]\n",
        "[[listeners]]\nredirect_to_https = true\n",
        1,
    );
    let error = lb_proxy::Config::parse(&both, "lb.toml").unwrap_err().to_string();
    assert!(error.contains("redirect_to_https is for a plain listener"), "{error}");
}
