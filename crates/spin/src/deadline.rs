//! A deadline on an asynchronous host call, kept by the guest itself.
//!
//! Spin 4.0.2 puts no deadline on a `wasi:http/incoming-handler@0.2` request and its Redis and
//! libSQL clients have no timeouts (see `deploy/README.md`), so a request waiting on a store
//! that does not answer waits for minutes. A guest cannot abandon a blocking host call
//! (key-value and SQLite are such calls), but it can stop waiting for an outgoing HTTP request,
//! service chaining included: [`within`] races the request against a WASI monotonic-clock
//! timer on spin-sdk's executor, and whichever is ready first wins.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::Duration;

/// The deadline passed before the awaited future was ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl std::fmt::Display for Elapsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline elapsed")
    }
}

impl std::error::Error for Elapsed {}

/// `future`'s output, or [`Elapsed`] if `limit` passes first (WASI monotonic clock). Dropping
/// the future abandons it: an outgoing request is dropped, though Spin lets a chained
/// component it started run to its end.
pub async fn within<F: Future>(limit: Duration, future: F) -> Result<F::Output, Elapsed> {
    first_of(future, Timer::after(limit)).await
}

/// `future`'s output, or [`Elapsed`] once `timer` is ready; `future` is polled first, so a
/// future that is ready wins over a timer that is ready too.
async fn first_of<F: Future, T: Future<Output = ()>>(future: F, timer: T) -> Result<F::Output, Elapsed> {
    let mut future = pin!(future);
    let mut timer = pin!(timer);
    poll_fn(|cx: &mut Context<'_>| {
        if let Poll::Ready(output) = future.as_mut().poll(cx) {
            return Poll::Ready(Ok(output));
        }
        timer.as_mut().poll(cx).map(|()| Err(Elapsed))
    })
    .await
}

/// Ready at a monotonic-clock instant. Each poll that finds it pending registers a fresh
/// pollable for that instant with spin-sdk's executor (the one it polls alongside outgoing
/// requests); replacing the token drops the previous registration.
struct Timer {
    at: wasi::clocks::monotonic_clock::Instant,
    registration: Option<spin_executor::CancelOnDropToken>,
}

impl Timer {
    fn after(limit: Duration) -> Self {
        let nanos = u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX);
        Self { at: wasi::clocks::monotonic_clock::now().saturating_add(nanos), registration: None }
    }
}

impl Future for Timer {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        use wasi::clocks::monotonic_clock;
        if monotonic_clock::now() >= self.at {
            self.registration = None;
            return Poll::Ready(());
        }
        let pollable = monotonic_clock::subscribe_instant(self.at);
        self.registration = Some(spin_executor::push_waker_and_get_token(pollable, cx.waker().clone()).into());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll_once<F: Future>(future: F) -> Poll<F::Output> {
        pin!(future).as_mut().poll(&mut Context::from_waker(std::task::Waker::noop()))
    }

    #[test]
    fn a_ready_future_wins_even_when_the_timer_is_ready() {
        assert_eq!(poll_once(first_of(std::future::ready(7), std::future::ready(()))), Poll::Ready(Ok(7)));
    }

    #[test]
    fn a_pending_future_loses_to_a_ready_timer() {
        assert_eq!(
            poll_once(first_of(std::future::pending::<u8>(), std::future::ready(()))),
            Poll::Ready(Err(Elapsed))
        );
    }

    #[test]
    fn both_pending_is_pending() {
        assert_eq!(poll_once(first_of(std::future::pending::<u8>(), std::future::pending::<()>())), Poll::Pending);
    }
}
