//! `ClientTls` against a real rustls server on loopback (tokio-rustls) with
//! certificates generated at test time: what verifies, what is refused,
//! and which errors name which file.

use std::sync::Arc;

use lb_tls::ClientTls;
use lb_tls::testing::TestPki;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One connection from `client` to a server with `server`, made to `name`:
/// the ALPN protocol agreed when the server's first byte arrives, or why not.
async fn exchange(
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    name: &str,
) -> Result<Option<Vec<u8>>, String> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let serving = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        if let Ok(mut tls) = tokio_rustls::TlsAcceptor::from(server).accept(stream).await {
            let _ = tls.write_all(b"k").await;
            let _ = tls.shutdown().await;
        }
    });
    let stream = TcpStream::connect(address).await.unwrap();
    let name = ServerName::try_from(name.to_string()).unwrap();
    let result = async {
        let mut tls = tokio_rustls::TlsConnector::from(client)
            .connect(name, stream)
            .await
            .map_err(|e| e.to_string())?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
        Ok(tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec))
    }
    .await;
    let _ = serving.await;
    result
}

fn trusting(pki: &TestPki) -> ClientTls {
    ClientTls { ca_file: Some(pki.ca.clone()), ..ClientTls::default() }
}

#[tokio::test]
async fn a_server_from_the_ca_file_is_verified_under_its_name_and_alpn_is_agreed() {
    let pki = TestPki::new(&["consul.test", "127.0.0.1"]);
    let server = pki.server_config(false, &[b"h2", b"http/1.1"]);
    let client = trusting(&pki).client_config(&[b"h2", b"http/1.1"]).unwrap();
    assert_eq!(
        exchange(Arc::clone(&server), Arc::clone(&client), "consul.test").await,
        Ok(Some(b"h2".to_vec()))
    );
    assert_eq!(exchange(Arc::clone(&server), client, "127.0.0.1").await, Ok(Some(b"h2".to_vec())));

    let wrong_name =
        exchange(Arc::clone(&server), trusting(&pki).client_config(&[]).unwrap(), "other.test").await;
    let err = wrong_name.unwrap_err();
    assert!(err.contains("not valid for name"), "{err}");
}

#[tokio::test]
async fn server_name_verifies_another_name_than_the_host_connected_to() {
    let pki = TestPki::new(&["server.dc1.consul"]);
    let server = pki.server_config(false, &[]);
    let by_ip = exchange(Arc::clone(&server), trusting(&pki).client_config(&[]).unwrap(), "127.0.0.1").await;
    assert!(by_ip.is_err(), "the certificate has no IP SAN");
    let named = ClientTls { server_name: Some("server.dc1.consul".into()), ..trusting(&pki) };
    assert_eq!(exchange(server, named.client_config(&[]).unwrap(), "127.0.0.1").await, Ok(None));
}

#[tokio::test]
async fn another_ca_and_an_expired_certificate_are_refused_unless_verification_is_off() {
    let pki = TestPki::new(&["127.0.0.1"]);
    let stranger = TestPki::new(&["127.0.0.1"]);
    let other_ca =
        exchange(pki.server_config(false, &[]), trusting(&stranger).client_config(&[]).unwrap(), "127.0.0.1")
            .await;
    let err = other_ca.unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");

    let expired = TestPki::expired(&["127.0.0.1"]);
    let refused = exchange(
        expired.server_config(false, &[]),
        trusting(&expired).client_config(&[]).unwrap(),
        "127.0.0.1",
    )
    .await;
    let err = refused.unwrap_err();
    assert!(err.contains("certificate expired"), "{err}");

    let blind = ClientTls { insecure_skip_verify: true, ..ClientTls::default() }.client_config(&[]).unwrap();
    assert_eq!(exchange(stranger.server_config(false, &[]), blind, "127.0.0.1").await, Ok(None));
}

#[tokio::test]
async fn a_server_that_requires_a_client_certificate_gets_one_from_its_ca_only() {
    let pki = TestPki::new(&["127.0.0.1"]);
    let strict = pki.server_config(true, &[]);
    let anonymous =
        exchange(Arc::clone(&strict), trusting(&pki).client_config(&[]).unwrap(), "127.0.0.1").await;
    assert!(anonymous.is_err(), "no client certificate: {anonymous:?}");

    let mutual = ClientTls {
        client_cert: Some(pki.client_cert.clone()),
        client_key: Some(pki.client_key.clone()),
        ..trusting(&pki)
    };
    assert_eq!(
        exchange(Arc::clone(&strict), mutual.client_config(&[]).unwrap(), "127.0.0.1").await,
        Ok(None)
    );

    let stranger = TestPki::new(&["127.0.0.1"]);
    let foreign = ClientTls {
        client_cert: Some(stranger.client_cert.clone()),
        client_key: Some(stranger.client_key.clone()),
        ..trusting(&pki)
    };
    let refused = exchange(strict, foreign.client_config(&[]).unwrap(), "127.0.0.1").await;
    assert!(refused.is_err(), "a client certificate from another CA: {refused:?}");
}

#[test]
fn bad_files_and_settings_are_named() {
    let pki = TestPki::new(&["127.0.0.1"]);
    let garbage = pki.dir().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let err =
        ClientTls { ca_file: Some(garbage.clone()), ..ClientTls::default() }.client_config(&[]).unwrap_err();
    assert_eq!(err.to_string(), format!("{}: no CERTIFICATE in the file", garbage.display()));

    let err = ClientTls { client_cert: Some(pki.client_cert.clone()), ..trusting(&pki) }
        .client_config(&[])
        .unwrap_err();
    assert_eq!(err.to_string(), "client_cert and client_key go together: client_cert is set alone");

    let mismatched = ClientTls {
        client_cert: Some(pki.client_cert.clone()),
        client_key: Some(pki.server_key.clone()),
        ..trusting(&pki)
    };
    let err = mismatched.client_config(&[]).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "client_cert {} with client_key {}: ",
            pki.client_cert.display(),
            pki.server_key.display()
        )),
        "{err}"
    );

    let err = ClientTls {
        client_key: Some(pki.ca.clone()),
        client_cert: Some(pki.client_cert.clone()),
        ..trusting(&pki)
    }
    .client_config(&[])
    .unwrap_err();
    assert_eq!(err.to_string(), format!("{}: no PRIVATE KEY in the file", pki.ca.display()));

    let err = ClientTls { server_name: Some("not a name".into()), ..trusting(&pki) }
        .client_config(&[])
        .unwrap_err();
    assert_eq!(err.to_string(), "server_name `not a name` is not a DNS name or an IP address");
}

#[tokio::test]
async fn the_connector_sends_the_host_or_the_server_name_and_verifies_it() {
    let pki = TestPki::new(&["backend.test"]);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config(false, &[b"http/1.1"]));
    let serving = tokio::spawn(async move {
        let mut names = Vec::new();
        for _ in 0..2 {
            let (stream, _) = listener.accept().await.unwrap();
            match acceptor.accept(stream).await {
                Ok(tls) => names.push(tls.get_ref().1.server_name().map(str::to_string)),
                Err(_) => names.push(None),
            }
        }
        names
    });
    let by_ip = trusting(&pki).connector(&[b"http/1.1"]).unwrap();
    let refused = by_ip.connect("127.0.0.1", TcpStream::connect(address).await.unwrap()).await;
    assert!(refused.is_err(), "the certificate holds no IP address");
    let named = ClientTls { server_name: Some("backend.test".into()), ..trusting(&pki) };
    let tls = named.connector(&[b"http/1.1"]).unwrap();
    let stream = tls.connect("127.0.0.1", TcpStream::connect(address).await.unwrap()).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(serving.await.unwrap(), [None, Some("backend.test".to_string())], "SNI: none for an IP");

    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stream = TcpStream::connect(silent.local_addr().unwrap()).await.unwrap();
    let err = by_ip.connect("not a host", stream).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

#[test]
fn a_listener_refuses_an_expired_certificate_naming_its_file() {
    let expired = TestPki::expired(&["127.0.0.1"]);
    let files = lb_tls::CertificateFiles {
        cert_file: expired.server_cert.clone(),
        key_file: expired.server_key.clone(),
    };
    let err = lb_tls::ServerTls { certificates: vec![files] }.server_config(&[]).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("{}: the certificate expired on ", expired.server_cert.display())),
        "{err}"
    );
    assert!(err.contains("2001"), "{err}");
    let fresh = TestPki::new(&["127.0.0.1"]);
    let files =
        lb_tls::CertificateFiles { cert_file: fresh.server_cert.clone(), key_file: fresh.server_key.clone() };
    assert!(lb_tls::ServerTls { certificates: vec![files] }.server_config(&[]).is_ok());
}

#[tokio::test]
async fn renewing_a_connector_reaches_every_clone() {
    let (old, new) = (TestPki::new(&["127.0.0.1"]), TestPki::new(&["127.0.0.1"]));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(new.server_config(false, &[]));
    let serving = tokio::spawn(async move {
        for _ in 0..2 {
            let (stream, _) = listener.accept().await.unwrap();
            let _ = acceptor.accept(stream).await;
        }
    });
    let connector = trusting(&old).connector(&[]).unwrap();
    let clone = connector.clone();
    let before = clone.connect("127.0.0.1", TcpStream::connect(address).await.unwrap()).await;
    assert!(before.is_err(), "the server's CA is not trusted yet");
    connector.renew(&trusting(&new).connector(&[]).unwrap());
    let after = clone.connect("127.0.0.1", TcpStream::connect(address).await.unwrap()).await;
    assert!(after.is_ok(), "the clone trusts the renewed CA: {after:?}");
    serving.await.unwrap();
}
