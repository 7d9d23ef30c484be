//! The HTTP client for the few Consul endpoints lb needs.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};

use crate::api::{Registration, ServiceEntry};
use crate::blocking::{MAX_WAIT, MIN_WAIT, go_duration, request_timeout};
use crate::config::ConsulConfig;
use crate::error::ConsulError;
use crate::registration::RegistrationGuard;

/// The header Consul reads the ACL token from.
const TOKEN_HEADER: &str = "X-Consul-Token";
/// The header carrying a blocking endpoint's index.
const INDEX_HEADER: &str = "X-Consul-Index";
/// Timeout of a request that does not block.
const PLAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of an error body is kept in an error.
const MAX_ERROR_BODY: usize = 512;

/// What to ask `/v1/health/service/:service`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthQuery {
    /// Block until the service's index passes this one (or `wait` expires);
    /// `None` answers at once.
    pub index: Option<u64>,
    /// How long Consul may hold a blocking query (kept within 10 ms..=10 min).
    pub wait: Duration,
    /// The datacenter to ask; `None` is the agent's own.
    pub datacenter: Option<String>,
    /// Only instances carrying every one of these tags.
    pub tags: Vec<String>,
}

impl HealthQuery {
    /// The Consul filter expression for the tags, if any.
    fn filter(&self) -> Option<String> {
        let clauses: Vec<String> = self
            .tags
            .iter()
            .map(|tag| format!("\"{}\" in Service.Tags", tag.replace('\\', "\\\\").replace('"', "\\\"")))
            .collect();
        (!clauses.is_empty()).then(|| clauses.join(" and "))
    }
}

/// An answer from a blocking endpoint, with the index to block on next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Indexed<T> {
    /// The `X-Consul-Index` of the answer.
    pub index: u64,
    /// The decoded body.
    pub value: T,
}

/// reqwest's rustls backend panics without a process-wide crypto provider;
/// install ring unless the application already chose one.
fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another installer is fine: a provider is then set.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// A Consul HTTP API client. Cloning shares the connection pool.
#[derive(Debug, Clone)]
pub struct ConsulClient {
    http: reqwest::Client,
    config: ConsulConfig,
    timeout_slack: Duration,
}

impl ConsulClient {
    /// A client for the agent `config` describes.
    ///
    /// # Errors
    /// [`ConsulError::Transport`] if the HTTP client cannot be built.
    pub fn new(config: ConsulConfig) -> Result<Self, ConsulError> {
        ensure_crypto_provider();
        let mut builder = reqwest::Client::builder();
        if config.address().scheme() == "https" {
            let tls = config
                .tls()
                .client_config(&[b"http/1.1"])
                .map_err(|source| ConsulError::Tls { address: config.address().to_string(), source })?;
            builder = builder.tls_backend_preconfigured(rustls::ClientConfig::clone(&tls));
        }
        let http = builder
            .build()
            .map_err(|source| ConsulError::Transport { url: config.address().to_string(), source })?;
        Ok(ConsulClient { http, config, timeout_slack: Duration::from_secs(5) })
    }

    /// A client configured from `CONSUL_HTTP_ADDR` and `CONSUL_HTTP_TOKEN`.
    ///
    /// # Errors
    /// As [`ConsulConfig::from_env`] and [`new`](Self::new).
    pub fn from_env() -> Result<Self, ConsulError> {
        Self::new(ConsulConfig::from_env()?)
    }

    /// Sets the time a blocking query may take beyond `wait * 17 / 16`
    /// before the client gives up (default 5 s).
    pub fn with_timeout_slack(mut self, slack: Duration) -> Self {
        self.timeout_slack = slack;
        self
    }

    /// The agent configuration.
    pub fn config(&self) -> &ConsulConfig {
        &self.config
    }

    /// The instances of `service` with their node and checks, all of them:
    /// `passing` is deliberately not sent, so warning instances are seen.
    ///
    /// # Errors
    /// Any [`ConsulError`]: transport, 403, another status, a missing index, bad JSON.
    pub async fn health_service(
        &self,
        service: &str,
        query: &HealthQuery,
    ) -> Result<Indexed<Vec<ServiceEntry>>, ConsulError> {
        let mut url = self.api_url(&["v1", "health", "service", service]);
        let wait = query.wait.clamp(MIN_WAIT, MAX_WAIT);
        {
            let mut pairs = url.query_pairs_mut();
            if let Some(index) = query.index {
                pairs.append_pair("index", &index.to_string());
                pairs.append_pair("wait", &go_duration(wait));
            }
            if let Some(dc) = &query.datacenter {
                pairs.append_pair("dc", dc);
            }
            if let Some(filter) = query.filter() {
                pairs.append_pair("filter", &filter);
            }
        }
        let timeout =
            if query.index.is_some() { request_timeout(wait, self.timeout_slack) } else { PLAIN_TIMEOUT };
        let response = self.send(self.request(Method::GET, url.clone()).timeout(timeout), &url).await?;
        let index = response
            .headers()
            .get(INDEX_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| ConsulError::MissingIndex { url: url.to_string() })?;
        let body = response
            .bytes()
            .await
            .map_err(|source| ConsulError::Transport { url: url.to_string(), source })?;
        let value = serde_json::from_slice(&body)
            .map_err(|source| ConsulError::Decode { url: url.to_string(), source })?;
        Ok(Indexed { index, value })
    }

    /// Registers a service instance with the local agent
    /// (`PUT /v1/agent/service/register`).
    ///
    /// # Errors
    /// Any [`ConsulError`].
    pub async fn register(&self, registration: &Registration) -> Result<(), ConsulError> {
        let url = self.api_url(&["v1", "agent", "service", "register"]);
        let request = self.request(Method::PUT, url.clone()).timeout(PLAIN_TIMEOUT).json(registration);
        self.send(request, &url).await.map(drop)
    }

    /// Registers, and returns a guard that deregisters the instance when
    /// told to (or, as a fallback, when dropped).
    ///
    /// # Errors
    /// Any [`ConsulError`] from the registration.
    pub async fn register_guarded(
        &self,
        registration: &Registration,
    ) -> Result<RegistrationGuard, ConsulError> {
        self.register(registration).await?;
        Ok(RegistrationGuard::new(self.clone(), registration.id().to_string()))
    }

    /// Removes a service instance from the local agent
    /// (`PUT /v1/agent/service/deregister/:service_id`).
    ///
    /// # Errors
    /// Any [`ConsulError`].
    pub async fn deregister(&self, service_id: &str) -> Result<(), ConsulError> {
        let url = self.api_url(&["v1", "agent", "service", "deregister", service_id]);
        let request = self.request(Method::PUT, url.clone()).timeout(PLAIN_TIMEOUT);
        self.send(request, &url).await.map(drop)
    }

    /// The URL of an API path, each segment escaped.
    fn api_url(&self, segments: &[&str]) -> Url {
        let mut url = self.config.address().clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let request = self.http.request(method, url);
        match self.config.token() {
            Some(token) => request.header(TOKEN_HEADER, token),
            None => request,
        }
    }

    async fn send(&self, request: RequestBuilder, url: &Url) -> Result<Response, ConsulError> {
        let transport = |source| ConsulError::Transport { url: url.to_string(), source };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let mut body = response.text().await.unwrap_or_default();
        body.truncate(body.floor_char_boundary(MAX_ERROR_BODY));
        let body = body.trim().to_string();
        Err(if status == StatusCode::FORBIDDEN {
            ConsulError::Forbidden { url: url.to_string(), body }
        } else {
            ConsulError::Status { status: status.as_u16(), url: url.to_string(), body }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_become_a_filter_expression() {
        let query = HealthQuery { tags: vec!["v2".into(), "say \"hi\"".into()], ..HealthQuery::default() };
        assert_eq!(query.filter().unwrap(), r#""v2" in Service.Tags and "say \"hi\"" in Service.Tags"#);
        assert_eq!(HealthQuery::default().filter(), None);
    }

    #[test]
    fn service_names_are_escaped_in_paths() {
        let client = ConsulClient::new(ConsulConfig::new("127.0.0.1:8500").unwrap()).unwrap();
        assert_eq!(
            client.api_url(&["v1", "health", "service", "a/b c"]).as_str(),
            "http://127.0.0.1:8500/v1/health/service/a%2Fb%20c"
        );
    }
}
