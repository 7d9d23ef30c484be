//! Building one balanced request.

use std::time::Duration;

use lb_core::Build;

use super::{Pool, send, url::logical_url};
use crate::Error;

/// A request to a pool's service, built like a reqwest request and sent to
/// an endpoint picked for it. Created by [`Pool::request`] and friends.
#[must_use = "a request does nothing until it is sent"]
pub struct RequestBuilder<A: Build> {
    pool: Pool<A>,
    inner: Result<reqwest::RequestBuilder, Error>,
    key: Option<Vec<u8>>,
    idempotent: Option<bool>,
}

impl<A: Build + 'static> RequestBuilder<A> {
    pub(crate) fn new(pool: Pool<A>, method: reqwest::Method, target: &str) -> Self {
        let shared = &pool.shared;
        let inner = logical_url(shared.scheme, &shared.service, target)
            .map(|url| shared.client.load().request(method, url).timeout(shared.settings.timeout));
        RequestBuilder { pool, inner, key: None, idempotent: None }
    }

    fn map(mut self, f: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder) -> Self {
        self.inner = self.inner.map(f);
        self
    }

    /// Adds a header.
    pub fn header<K, V>(self, key: K, value: V) -> Self
    where
        reqwest::header::HeaderName: TryFrom<K>,
        <reqwest::header::HeaderName as TryFrom<K>>::Error: Into<http::Error>,
        reqwest::header::HeaderValue: TryFrom<V>,
        <reqwest::header::HeaderValue as TryFrom<V>>::Error: Into<http::Error>,
    {
        self.map(|r| r.header(key, value))
    }

    /// Sets the body. A byte or string body can be resent on a retry; a stream cannot.
    pub fn body(self, body: impl Into<reqwest::Body>) -> Self {
        self.map(|r| r.body(body))
    }

    /// Sets a JSON body and the `Content-Type` header.
    pub fn json<T: serde::Serialize + ?Sized>(self, json: &T) -> Self {
        self.map(|r| r.json(json))
    }

    /// Replaces the pool's timeout for this request. It covers every
    /// attempt and backoff: retries never extend it.
    pub fn timeout(self, timeout: Duration) -> Self {
        self.map(|r| r.timeout(timeout))
    }

    /// Anything else reqwest's builder can do (auth, query, version...).
    pub fn with(self, f: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder) -> Self {
        self.map(f)
    }

    /// The affinity key (a user id, a session): consistent-hash algorithms
    /// send equal keys to the same endpoint while it is healthy.
    pub fn hash_key(mut self, key: impl AsRef<[u8]>) -> Self {
        self.key = Some(key.as_ref().to_vec());
        self
    }

    /// Says whether the request may be sent twice. By default only `GET`,
    /// `HEAD`, `OPTIONS`, `TRACE`, `PUT` and `DELETE` are, as RFC 9110 defines
    /// idempotent methods; a request that never reached an endpoint (the
    /// connection was refused) is retried either way.
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = Some(idempotent);
        self
    }

    /// Sends the request, retrying on another endpoint as the pool's policy allows.
    pub async fn send(self) -> Result<reqwest::Response, Error> {
        let request = self.inner?.build().map_err(Error::Build)?;
        send::send(&self.pool, request, self.key.as_deref(), self.idempotent).await
    }
}
