//! Turning transport errors into [`Outcome`]s every health mechanism understands.

use std::error::Error as StdError;
use std::io::ErrorKind;

use lb_core::Outcome;

/// The outcome of a reqwest attempt that returned an error.
pub(crate) fn reqwest_error(error: &reqwest::Error) -> Outcome {
    if error.is_builder() {
        // Our request was bad; the endpoint is not to blame.
        Outcome::LocallyRejected
    } else if error.is_connect() {
        Outcome::ConnectError
    } else if error.is_timeout() {
        Outcome::Timeout
    } else {
        error_chain(error)
    }
}

/// The outcome of any transport error, read from its source chain: a
/// refused or unreachable connection is a connect error, a timeout a
/// timeout, anything else a reset (the connection broke after it was made).
pub fn error_chain(error: &(dyn StdError + 'static)) -> Outcome {
    let mut cause: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                ErrorKind::ConnectionRefused
                | ErrorKind::AddrNotAvailable
                | ErrorKind::HostUnreachable
                | ErrorKind::NetworkUnreachable => Outcome::ConnectError,
                ErrorKind::TimedOut => Outcome::Timeout,
                _ => Outcome::Reset,
            };
        }
        if e.is::<tokio::time::error::Elapsed>() || e.is::<tower::timeout::error::Elapsed>() {
            return Outcome::Timeout;
        }
        cause = e.source();
    }
    Outcome::Reset
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapped(std::io::Error);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("tcp connect error")
        }
    }

    impl StdError for Wrapped {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn io_kinds_found_down_the_chain() {
        let refused = Wrapped(std::io::Error::from(ErrorKind::ConnectionRefused));
        assert_eq!(error_chain(&refused), Outcome::ConnectError);
        let timed_out = Wrapped(std::io::Error::from(ErrorKind::TimedOut));
        assert_eq!(error_chain(&timed_out), Outcome::Timeout);
        let reset = Wrapped(std::io::Error::from(ErrorKind::ConnectionReset));
        assert_eq!(error_chain(&reset), Outcome::Reset);
        assert_eq!(error_chain(&tower::timeout::error::Elapsed::new()), Outcome::Timeout);
    }
}
