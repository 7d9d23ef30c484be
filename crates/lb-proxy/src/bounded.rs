//! Timeouts that cost nothing unless something waits.
//!
//! Most socket operations on the request path complete at once (a write to
//! a socket with room, a read of bytes that already arrived). Wrapping each
//! in `tokio::time::timeout` would read the clock and set up a timer for
//! every one; these helpers poll the operation first and arm a timer only
//! when it has to wait.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::Duration;

/// Polls `op` once: its output if it was ready without waiting.
pub(crate) async fn at_once<F: Future>(mut op: Pin<&mut F>) -> Option<F::Output> {
    poll_fn(|cx| {
        Poll::Ready(match op.as_mut().poll(cx) {
            Poll::Ready(output) => Some(output),
            Poll::Pending => None,
        })
    })
    .await
}

/// `op`'s output, or `None` when it waited longer than `limit`.
pub(crate) async fn within<F: Future>(limit: Duration, op: F) -> Option<F::Output> {
    let mut op = pin!(op);
    if let Some(output) = at_once(op.as_mut()).await {
        return Some(output);
    }
    tokio::time::timeout(limit, op).await.ok()
}

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_ready_operation_needs_no_timer_and_a_waiting_one_times_out() {
        assert_eq!(
            within(Duration::ZERO, async { 7 }).await,
            Some(7),
            "ready at once beats even a zero limit"
        );
        let never = std::future::pending::<()>();
        let started = Instant::now();
        assert_eq!(within(Duration::from_secs(3), never).await, None);
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        let soon = tokio::time::sleep(Duration::from_secs(1));
        assert_eq!(within(Duration::from_secs(2), soon).await, Some(()));
    }
}
