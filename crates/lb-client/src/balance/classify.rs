//! How a response and a request key look to the balancer.

use lb_core::Outcome;

/// Reads the [`Outcome`] of a response, so breakers, outlier detection and
/// load-aware algorithms learn from it. Implement it for your own response
/// types to balance a non-HTTP service.
pub trait ResponseOutcome {
    /// How the request ended, as far as the response's head tells.
    fn outcome(&self) -> Outcome;

    /// The HTTP status code, for the `status` metric label; `None` for non-HTTP responses.
    fn status_code(&self) -> Option<u16> {
        None
    }
}

/// gRPC's `UNAVAILABLE`: the server is shutting down or overloaded.
const GRPC_UNAVAILABLE: &[u8] = b"14";
/// gRPC's `DEADLINE_EXCEEDED`.
const GRPC_DEADLINE_EXCEEDED: &[u8] = b"4";

impl<B> ResponseOutcome for http::Response<B> {
    /// A 5xx status is a failure. A gRPC "trailers-only" answer carries its
    /// status in the head: `UNAVAILABLE` counts as a 503 and
    /// `DEADLINE_EXCEEDED` as a timeout; other gRPC statuses are the
    /// application's business and count as served.
    fn outcome(&self) -> Outcome {
        let from_status = Outcome::from_status(self.status().as_u16());
        if from_status != Outcome::Success {
            return from_status;
        }
        match self.headers().get("grpc-status").map(http::HeaderValue::as_bytes) {
            Some(GRPC_UNAVAILABLE) => Outcome::Http5xx(503),
            Some(GRPC_DEADLINE_EXCEEDED) => Outcome::Timeout,
            _ => Outcome::Success,
        }
    }

    fn status_code(&self) -> Option<u16> {
        Some(self.status().as_u16())
    }
}

/// Takes a request's affinity key, for consistent-hash algorithms.
pub trait RequestKey<Req>: Send + Sync + 'static {
    /// The key bytes, borrowed from the request; `None` for no affinity.
    fn key<'r>(&self, request: &'r Req) -> Option<&'r [u8]>;
}

/// No affinity: every request is balanced on its own.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoKey;

impl<Req> RequestKey<Req> for NoKey {
    fn key<'r>(&self, _: &'r Req) -> Option<&'r [u8]> {
        None
    }
}

/// The value of one header is the key (a user id header, a session cookie).
#[derive(Debug, Clone)]
pub struct HeaderKey(pub http::HeaderName);

impl<B> RequestKey<http::Request<B>> for HeaderKey {
    fn key<'r>(&self, request: &'r http::Request<B>) -> Option<&'r [u8]> {
        request.headers().get(&self.0).map(http::HeaderValue::as_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_grpc_heads_classify() {
        let ok = http::Response::builder().status(200).body(()).unwrap();
        assert_eq!(ok.outcome(), Outcome::Success);
        let bad = http::Response::builder().status(502).body(()).unwrap();
        assert_eq!(bad.outcome(), Outcome::Http5xx(502));
        let unavailable = http::Response::builder().header("grpc-status", "14").body(()).unwrap();
        assert_eq!(unavailable.outcome(), Outcome::Http5xx(503));
        let deadline = http::Response::builder().header("grpc-status", "4").body(()).unwrap();
        assert_eq!(deadline.outcome(), Outcome::Timeout);
        let not_found = http::Response::builder().header("grpc-status", "5").body(()).unwrap();
        assert_eq!(not_found.outcome(), Outcome::Success);
    }

    #[test]
    fn header_keys_are_borrowed_from_the_request() {
        let key = HeaderKey(http::HeaderName::from_static("x-user"));
        let req = http::Request::builder().header("x-user", "42").body(()).unwrap();
        assert_eq!(key.key(&req), Some(&b"42"[..]));
        assert_eq!(key.key(&http::Request::new(())), None);
        assert_eq!(RequestKey::<http::Request<()>>::key(&NoKey, &req), None);
    }
}
