//! How one request ended, as every health and load mechanism sees it.

use core::time::Duration;

use crate::clock::Timestamp;

/// The result of one request to one endpoint.
///
/// The classes follow Envoy's outlier detection: gateway errors (502, 503,
/// 504) and local-origin failures (the proxy could not talk to the endpoint
/// at all) are told apart from other 5xx, because different detectors count them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The endpoint answered with a status below 500.
    Success,
    /// The connection could not be made (refused, unreachable, TLS failure).
    ConnectError,
    /// No answer in time: connect, per-try or overall timeout.
    Timeout,
    /// The connection broke after it was made.
    Reset,
    /// The endpoint answered with a 5xx status, carried here.
    Http5xx(u16),
    /// We refused the request ourselves (breaker open, limit reached); the
    /// endpoint never saw it and must not be blamed for it.
    LocallyRejected,
}

impl Outcome {
    /// Classifies an HTTP status: 5xx is a failure, anything else a success.
    pub const fn from_status(status: u16) -> Outcome {
        if status >= 500 && status <= 599 { Outcome::Http5xx(status) } else { Outcome::Success }
    }

    /// The endpoint served the request.
    pub const fn is_success(self) -> bool {
        matches!(self, Outcome::Success)
    }

    /// The endpoint failed the request (a locally rejected request is not the endpoint's fault).
    pub const fn is_failure(self) -> bool {
        !matches!(self, Outcome::Success | Outcome::LocallyRejected)
    }

    /// A failure seen by us before any response: connect error, timeout or reset.
    pub const fn is_local_origin(self) -> bool {
        matches!(self, Outcome::ConnectError | Outcome::Timeout | Outcome::Reset)
    }

    /// Envoy's gateway errors: 502, 503 and 504.
    pub const fn is_gateway_error(self) -> bool {
        matches!(self, Outcome::Http5xx(502..=504))
    }

    /// Any 5xx answer from the endpoint.
    pub const fn is_5xx(self) -> bool {
        matches!(self, Outcome::Http5xx(_))
    }

    /// The error class this outcome is counted under, or `None` for a success.
    pub const fn error_type(self) -> Option<ErrorType> {
        match self {
            Outcome::Success => None,
            Outcome::ConnectError => Some(ErrorType::Connect),
            Outcome::Timeout => Some(ErrorType::Timeout),
            Outcome::Reset => Some(ErrorType::Reset),
            Outcome::Http5xx(_) => Some(ErrorType::Http5xx),
            Outcome::LocallyRejected => Some(ErrorType::Rejected),
        }
    }
}

/// The classes of failed requests, as the `error_type` metric label names
/// them; one definition so the proxy and the client count alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorType {
    /// [`Outcome::ConnectError`].
    Connect = 0,
    /// [`Outcome::Timeout`].
    Timeout = 1,
    /// [`Outcome::Reset`].
    Reset = 2,
    /// [`Outcome::Http5xx`].
    Http5xx = 3,
    /// [`Outcome::LocallyRejected`].
    Rejected = 4,
}

impl ErrorType {
    /// Every class, in discriminant order (index a per-class array with `as usize`).
    pub const ALL: [ErrorType; 5] =
        [ErrorType::Connect, ErrorType::Timeout, ErrorType::Reset, ErrorType::Http5xx, ErrorType::Rejected];

    /// The `error_type` label value.
    pub const fn label(self) -> &'static str {
        match self {
            ErrorType::Connect => "connect",
            ErrorType::Timeout => "timeout",
            ErrorType::Reset => "reset",
            ErrorType::Http5xx => "http_5xx",
            ErrorType::Rejected => "rejected",
        }
    }
}

/// What a caller tells the balancer when a picked request finishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// How the request ended.
    pub outcome: Outcome,
    /// Time from the pick to the end of the response (or the failure).
    pub latency: Duration,
    /// When the request finished, on the caller's [`Clock`](crate::Clock).
    pub at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_classify() {
        assert_eq!(Outcome::from_status(200), Outcome::Success);
        assert_eq!(Outcome::from_status(404), Outcome::Success);
        assert_eq!(Outcome::from_status(503), Outcome::Http5xx(503));
        assert!(Outcome::from_status(503).is_gateway_error());
        assert!(!Outcome::from_status(500).is_gateway_error());
        assert!(Outcome::from_status(500).is_5xx());
    }

    #[test]
    fn error_types_cover_every_failure_in_index_order() {
        assert_eq!(Outcome::Success.error_type(), None);
        assert_eq!(Outcome::Http5xx(502).error_type().map(ErrorType::label), Some("http_5xx"));
        for (i, t) in ErrorType::ALL.iter().enumerate() {
            assert_eq!(*t as usize, i);
        }
    }

    #[test]
    fn local_rejection_blames_nobody() {
        assert!(!Outcome::LocallyRejected.is_failure());
        assert!(!Outcome::LocallyRejected.is_success());
        assert!(Outcome::Timeout.is_failure() && Outcome::Timeout.is_local_origin());
        assert!(!Outcome::Http5xx(502).is_local_origin());
    }
}
