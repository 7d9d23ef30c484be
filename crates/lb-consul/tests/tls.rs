//! An `https://` agent (the contract fake served with rustls, certificates
//! generated at test time): verified with `CONSUL_CACERT` and
//! `CONSUL_TLS_SERVER_NAME`, a client certificate for `verify_incoming`, and
//! a certificate from another CA refused with a reason a person can act on.

use std::time::Duration;

use lb_consul::testing::{FakeConsul, Instance};
use lb_consul::{ClientTls, ConsulClient, ConsulConfig, ConsulError, HealthQuery};
use lb_tls::testing::TestPki;

async fn instances(config: ConsulConfig) -> Result<usize, ConsulError> {
    let client = ConsulClient::new(config)?;
    let query = HealthQuery::default();
    let answer = tokio::time::timeout(Duration::from_secs(5), client.health_service("web", &query))
        .await
        .expect("an answer within 5 s")?;
    Ok(answer.value.len())
}

fn config(fake: &FakeConsul, tls: ClientTls) -> ConsulConfig {
    ConsulConfig::new(&fake.url()).unwrap().with_tls(tls)
}

#[tokio::test]
async fn an_https_agent_is_verified_against_the_ca_file_under_the_server_name() {
    let pki = TestPki::new(&["server.dc1.consul"]);
    let fake = FakeConsul::start_tls(pki.server_config(false, &[b"http/1.1"])).await;
    fake.put(Instance::passing("n1", "web-1", "web", 8080));
    assert!(fake.url().starts_with("https://127.0.0.1:"));

    let verified = ClientTls {
        ca_file: Some(pki.ca.clone()),
        server_name: Some("server.dc1.consul".into()),
        ..ClientTls::default()
    };
    assert_eq!(instances(config(&fake, verified.clone())).await.unwrap(), 1);

    // Without the server name, the certificate does not name 127.0.0.1.
    let by_ip = ClientTls { server_name: None, ..verified };
    let err = instances(config(&fake, by_ip)).await.unwrap_err().to_string();
    assert!(err.contains("certificate") && err.contains("not valid for name"), "{err}");

    // The system's roots do not know a CA made a moment ago.
    let err = instances(config(&fake, ClientTls::default())).await.unwrap_err().to_string();
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn an_agent_with_verify_incoming_lets_in_only_a_client_certificate_from_its_ca() {
    let pki = TestPki::new(&["127.0.0.1"]);
    let fake = FakeConsul::start_tls(pki.server_config(true, &[b"http/1.1"])).await;
    fake.put(Instance::passing("n1", "web-1", "web", 8080));
    let trusting = ClientTls { ca_file: Some(pki.ca.clone()), ..ClientTls::default() };

    assert!(instances(config(&fake, trusting.clone())).await.is_err(), "no client certificate");
    let mutual = ClientTls {
        client_cert: Some(pki.client_cert.clone()),
        client_key: Some(pki.client_key.clone()),
        ..trusting.clone()
    };
    assert_eq!(instances(config(&fake, mutual)).await.unwrap(), 1);

    let stranger = TestPki::new(&["127.0.0.1"]);
    let foreign = ClientTls {
        client_cert: Some(stranger.client_cert.clone()),
        client_key: Some(stranger.client_key.clone()),
        ..trusting
    };
    assert!(instances(config(&fake, foreign)).await.is_err(), "a client certificate from another CA");
}

#[test]
fn an_unusable_tls_file_is_named_before_any_request() {
    let missing = ClientTls { ca_file: Some("/no/such/consul-ca.pem".into()), ..ClientTls::default() };
    let config = ConsulConfig::new("https://127.0.0.1:8501").unwrap().with_tls(missing);
    let err = ConsulClient::new(config).unwrap_err();
    assert!(matches!(err, ConsulError::Tls { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "Consul at https://127.0.0.1:8501/: /no/such/consul-ca.pem: No such file or directory (os error 2)"
    );
    // Plain http ignores TLS settings, as Consul's CLI does.
    let plain = ConsulConfig::new("127.0.0.1:8500")
        .unwrap()
        .with_tls(ClientTls { ca_file: Some("/no/such/consul-ca.pem".into()), ..ClientTls::default() });
    assert!(ConsulClient::new(plain).is_ok());
}
