//! Where the Consul agent is and how to authenticate, as Consul's CLI reads it.

use lb_tls::ClientTls;
use reqwest::Url;

use crate::error::ConsulError;

/// The environment variable with the agent's address, as Consul's CLI reads it.
pub const ADDR_ENV: &str = "CONSUL_HTTP_ADDR";
/// The environment variable with the ACL token, as Consul's CLI reads it.
pub const TOKEN_ENV: &str = "CONSUL_HTTP_TOKEN";
/// The CA certificate file (PEM) that verifies an `https://` agent.
pub const CACERT_ENV: &str = "CONSUL_CACERT";
/// The client certificate (PEM) shown to an agent that verifies clients.
pub const CLIENT_CERT_ENV: &str = "CONSUL_CLIENT_CERT";
/// The key of [`CLIENT_CERT_ENV`]'s certificate (PEM).
pub const CLIENT_KEY_ENV: &str = "CONSUL_CLIENT_KEY";
/// The name the agent's certificate is verified for, when not the address's host.
pub const TLS_SERVER_NAME_ENV: &str = "CONSUL_TLS_SERVER_NAME";
/// `true`: an address without a scheme is `https://`.
pub const HTTP_SSL_ENV: &str = "CONSUL_HTTP_SSL";
/// `false`: the agent's certificate is not verified (tests only).
pub const HTTP_SSL_VERIFY_ENV: &str = "CONSUL_HTTP_SSL_VERIFY";
/// The agent address used when none is configured.
pub const DEFAULT_ADDR: &str = "http://127.0.0.1:8500";

/// How to reach a Consul agent.
#[derive(Clone, PartialEq, Eq)]
pub struct ConsulConfig {
    address: Url,
    token: Option<String>,
    tls: ClientTls,
}

impl std::fmt::Debug for ConsulConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret: say only whether there is one.
        f.debug_struct("ConsulConfig")
            .field("address", &self.address.as_str())
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("tls", &self.tls)
            .finish()
    }
}

impl ConsulConfig {
    /// An agent at `address`: `http://host:port`, `https://host:port`, or
    /// `host:port` (http is assumed, as Consul's CLI does). An `https://`
    /// agent is verified against the system's roots unless
    /// [`with_tls`](Self::with_tls) says otherwise.
    ///
    /// # Errors
    /// [`ConsulError::BadAddress`] for text that is not such an address.
    pub fn new(address: &str) -> Result<Self, ConsulError> {
        Self::with_default_scheme(address, "http")
    }

    fn with_default_scheme(address: &str, scheme: &str) -> Result<Self, ConsulError> {
        let bad = |why: &str| ConsulError::BadAddress { address: address.to_string(), why: why.to_string() };
        let with_scheme =
            if address.contains("://") { address.to_string() } else { format!("{scheme}://{address}") };
        let mut url = Url::parse(&with_scheme).map_err(|e| bad(&e.to_string()))?;
        match url.scheme() {
            "http" | "https" => {}
            other => return Err(bad(&format!("unsupported scheme `{other}`"))),
        }
        if url.host_str().is_none() {
            return Err(bad("no host"));
        }
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        Ok(ConsulConfig { address: url, token: None, tls: ClientTls::default() })
    }

    /// Reads [`ADDR_ENV`] (default [`DEFAULT_ADDR`]), [`TOKEN_ENV`] and the
    /// TLS variables ([`CACERT_ENV`], [`CLIENT_CERT_ENV`], [`CLIENT_KEY_ENV`],
    /// [`TLS_SERVER_NAME_ENV`], [`HTTP_SSL_ENV`], [`HTTP_SSL_VERIFY_ENV`]), as
    /// Consul's CLI does.
    ///
    /// # Errors
    /// As [`new`](Self::new), for a bad `CONSUL_HTTP_ADDR`.
    pub fn from_env() -> Result<Self, ConsulError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConsulError> {
        let var = |name| var(name).filter(|v| !v.trim().is_empty());
        let scheme = if var(HTTP_SSL_ENV).is_some_and(|v| is_true(&v)) { "https" } else { "http" };
        let address = var(ADDR_ENV).unwrap_or_else(|| DEFAULT_ADDR.to_string());
        let mut config = Self::with_default_scheme(&address, scheme)?.with_tls(Self::tls_from(&var));
        if let Some(token) = var(TOKEN_ENV) {
            config = config.with_token(token);
        }
        Ok(config)
    }

    /// The TLS settings the environment gives, as Consul's CLI reads them.
    pub fn tls_from_env() -> ClientTls {
        Self::tls_from(&|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
    }

    fn tls_from(var: &impl Fn(&'static str) -> Option<String>) -> ClientTls {
        ClientTls {
            ca_file: var(CACERT_ENV).map(Into::into),
            server_name: var(TLS_SERVER_NAME_ENV),
            client_cert: var(CLIENT_CERT_ENV).map(Into::into),
            client_key: var(CLIENT_KEY_ENV).map(Into::into),
            insecure_skip_verify: var(HTTP_SSL_VERIFY_ENV).is_some_and(|v| !is_true(&v)),
        }
    }

    /// Verifies an `https://` agent and authenticates to it with `tls`
    /// (ignored for `http://`).
    pub fn with_tls(mut self, tls: ClientTls) -> Self {
        self.tls = tls;
        self
    }

    /// The TLS settings for an `https://` agent.
    pub fn tls(&self) -> &ClientTls {
        &self.tls
    }

    /// Sends `token` in the `X-Consul-Token` header of every request.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The agent's base URL, ending in `/`.
    pub fn address(&self) -> &Url {
        &self.address
    }

    /// The ACL token, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }
}

/// A boolean as Go's `strconv.ParseBool` reads it, which Consul's CLI uses.
fn is_true(text: &str) -> bool {
    matches!(text.trim(), "1" | "t" | "T" | "true" | "TRUE" | "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_read_like_the_consul_cli() {
        assert_eq!(ConsulConfig::new("127.0.0.1:8500").unwrap().address().as_str(), "http://127.0.0.1:8500/");
        assert_eq!(
            ConsulConfig::new("http://consul.internal:8500/prefix").unwrap().address().as_str(),
            "http://consul.internal:8500/prefix/"
        );
        assert_eq!(
            ConsulConfig::new("https://consul:8501").unwrap().address().as_str(),
            "https://consul:8501/"
        );
        assert!(ConsulConfig::new("ftp://x").is_err());
    }

    #[test]
    fn the_environment_supplies_address_and_token() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        let config =
            ConsulConfig::from_vars(env(&[(ADDR_ENV, "10.1.1.1:8500"), (TOKEN_ENV, "s3cr3t")])).unwrap();
        assert_eq!(config.address().as_str(), "http://10.1.1.1:8500/");
        assert_eq!(config.token(), Some("s3cr3t"));
        assert!(!format!("{config:?}").contains("s3cr3t"), "the token never reaches logs");
        assert_eq!(config.tls(), &ClientTls::default());
        let defaults = ConsulConfig::from_vars(env(&[(TOKEN_ENV, "")])).unwrap();
        assert_eq!(defaults.address().as_str(), "http://127.0.0.1:8500/");
        assert_eq!(defaults.token(), None);
    }

    #[test]
    fn the_environment_supplies_tls_as_the_consul_cli_reads_it() {
        let vars = [
            (ADDR_ENV, "10.1.1.1:8501"),
            (HTTP_SSL_ENV, "true"),
            (CACERT_ENV, "/etc/consul/ca.pem"),
            (CLIENT_CERT_ENV, "/etc/consul/cli.pem"),
            (CLIENT_KEY_ENV, "/etc/consul/cli.key"),
            (TLS_SERVER_NAME_ENV, "server.dc1.consul"),
            (HTTP_SSL_VERIFY_ENV, "false"),
        ];
        let config =
            ConsulConfig::from_vars(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string()))
                .unwrap();
        assert_eq!(config.address().as_str(), "https://10.1.1.1:8501/");
        let tls = config.tls();
        assert_eq!(tls.ca_file.as_deref(), Some(std::path::Path::new("/etc/consul/ca.pem")));
        assert_eq!(tls.client_cert.as_deref(), Some(std::path::Path::new("/etc/consul/cli.pem")));
        assert_eq!(tls.client_key.as_deref(), Some(std::path::Path::new("/etc/consul/cli.key")));
        assert_eq!(tls.server_name.as_deref(), Some("server.dc1.consul"));
        assert!(tls.insecure_skip_verify);
        let verified =
            ConsulConfig::from_vars(|name| (name == HTTP_SSL_VERIFY_ENV).then(|| "1".into())).unwrap();
        assert!(!verified.tls().insecure_skip_verify);
    }
}
