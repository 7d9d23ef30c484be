//! One line per request on the `lb_proxy::access` tracing target.

use std::net::SocketAddr;
use std::time::Duration;

use http::uri::Authority;
use http::{HeaderValue, Method, StatusCode, Uri};

use crate::config::AccessLog;

/// What the access log says about one request.
#[derive(Debug, Clone, Copy)]
pub struct AccessEntry<'a> {
    /// The client's address.
    pub client: SocketAddr,
    /// The request method.
    pub method: &'a Method,
    /// The request URI as the client sent it.
    pub uri: &'a Uri,
    /// The status the client got.
    pub status: StatusCode,
    /// The endpoint that answered, if any did.
    pub backend: Option<&'a Authority>,
    /// Time to the response headers.
    pub duration: Duration,
    /// The request id.
    pub request_id: &'a HeaderValue,
}

impl AccessLog {
    /// Whether lines are written at all.
    #[inline]
    pub fn enabled(self) -> bool {
        self != AccessLog::Off
    }

    /// Formats one request's line, or `None` when the log is off.
    pub fn line(self, e: &AccessEntry<'_>) -> Option<String> {
        let backend = e.backend.map_or("-", Authority::as_str);
        let request_id = e.request_id.to_str().unwrap_or("-");
        let micros = e.duration.as_micros();
        let status = e.status.as_u16();
        match self {
            AccessLog::Off => None,
            AccessLog::Text => Some(format!(
                "client={} method={} uri={} status={status} backend={backend} duration_us={micros} request_id={request_id}",
                e.client, e.method, e.uri
            )),
            AccessLog::Json => Some(
                serde_json::json!({
                    "client": e.client.to_string(),
                    "method": e.method.as_str(),
                    "uri": e.uri.to_string(),
                    "status": status,
                    "backend": backend,
                    "duration_us": micros,
                    "request_id": request_id,
                })
                .to_string(),
            ),
        }
    }

    /// Writes one request's line.
    pub(crate) fn write(self, entry: &AccessEntry<'_>) {
        if let Some(line) = self.line(entry) {
            tracing::info!(target: "lb_proxy::access", "{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_in_both_formats() {
        let (method, uri) = (Method::GET, Uri::from_static("/a?b=1"));
        let (backend, id) = (Authority::from_static("10.0.0.1:80"), HeaderValue::from_static("id-1"));
        let mut entry = AccessEntry {
            client: SocketAddr::from(([127, 0, 0, 1], 5000)),
            method: &method,
            uri: &uri,
            status: StatusCode::OK,
            backend: Some(&backend),
            duration: Duration::from_micros(1500),
            request_id: &id,
        };
        assert_eq!(
            AccessLog::Text.line(&entry).unwrap(),
            "client=127.0.0.1:5000 method=GET uri=/a?b=1 status=200 backend=10.0.0.1:80 duration_us=1500 request_id=id-1"
        );
        entry.backend = None;
        let v: serde_json::Value = serde_json::from_str(&AccessLog::Json.line(&entry).unwrap()).unwrap();
        assert_eq!(v["status"], 200);
        assert_eq!(v["backend"], "-");
        assert!(AccessLog::Off.line(&entry).is_none());
    }
}
