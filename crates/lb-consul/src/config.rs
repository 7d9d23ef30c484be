//! Where the Consul agent is and how to authenticate, as Consul's CLI reads it.

use reqwest::Url;

use crate::error::ConsulError;

/// The environment variable with the agent's address, as Consul's CLI reads it.
pub const ADDR_ENV: &str = "CONSUL_HTTP_ADDR";
/// The environment variable with the ACL token, as Consul's CLI reads it.
pub const TOKEN_ENV: &str = "CONSUL_HTTP_TOKEN";
/// The agent address used when none is configured.
pub const DEFAULT_ADDR: &str = "http://127.0.0.1:8500";

/// How to reach a Consul agent.
#[derive(Clone, PartialEq, Eq)]
pub struct ConsulConfig {
    address: Url,
    token: Option<String>,
}

impl std::fmt::Debug for ConsulConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret: say only whether there is one.
        f.debug_struct("ConsulConfig")
            .field("address", &self.address.as_str())
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl ConsulConfig {
    /// An agent at `address`: `http://host:port`, or `host:port` (http is assumed,
    /// as Consul's CLI does).
    ///
    /// # Errors
    /// [`ConsulError::BadAddress`] for text that is not such an address, and for
    /// `https://`, because this build has no TLS (see the crate docs).
    pub fn new(address: &str) -> Result<Self, ConsulError> {
        let bad = |why: &str| ConsulError::BadAddress { address: address.to_string(), why: why.to_string() };
        let with_scheme =
            if address.contains("://") { address.to_string() } else { format!("http://{address}") };
        let mut url = Url::parse(&with_scheme).map_err(|e| bad(&e.to_string()))?;
        match url.scheme() {
            "http" => {}
            "https" => {
                return Err(bad(
                    "https needs TLS, which this build leaves out; reach the local agent over http",
                ));
            }
            other => return Err(bad(&format!("unsupported scheme `{other}`"))),
        }
        if url.host_str().is_none() {
            return Err(bad("no host"));
        }
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        Ok(ConsulConfig { address: url, token: None })
    }

    /// Reads [`ADDR_ENV`] (default [`DEFAULT_ADDR`]) and [`TOKEN_ENV`], as Consul's CLI does.
    ///
    /// # Errors
    /// As [`new`](Self::new), for a bad `CONSUL_HTTP_ADDR`.
    pub fn from_env() -> Result<Self, ConsulError> {
        Self::from_vars(std::env::var(ADDR_ENV).ok(), std::env::var(TOKEN_ENV).ok())
    }

    fn from_vars(address: Option<String>, token: Option<String>) -> Result<Self, ConsulError> {
        let address = address.filter(|a| !a.trim().is_empty());
        let config = Self::new(address.as_deref().unwrap_or(DEFAULT_ADDR))?;
        Ok(match token.filter(|t| !t.is_empty()) {
            Some(token) => config.with_token(token),
            None => config,
        })
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
        let err = ConsulConfig::new("https://consul:8501").unwrap_err();
        assert!(err.to_string().contains("https needs TLS"), "{err}");
        assert!(ConsulConfig::new("ftp://x").is_err());
    }

    #[test]
    fn the_environment_supplies_address_and_token() {
        let config = ConsulConfig::from_vars(Some("10.1.1.1:8500".into()), Some("s3cr3t".into())).unwrap();
        assert_eq!(config.address().as_str(), "http://10.1.1.1:8500/");
        assert_eq!(config.token(), Some("s3cr3t"));
        assert!(!format!("{config:?}").contains("s3cr3t"), "the token never reaches logs");
        let defaults = ConsulConfig::from_vars(None, Some(String::new())).unwrap();
        assert_eq!(defaults.address().as_str(), "http://127.0.0.1:8500/");
        assert_eq!(defaults.token(), None);
    }
}
