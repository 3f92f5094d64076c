use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use event_listener::{Event, EventListener};

/// A cheap, cloneable signal that asks a run to stop.
///
/// Runtime-agnostic (no tokio), so adapters can use it whatever executor drives them.
///
/// ```
/// use asm_ports::CancellationToken;
/// let token = CancellationToken::new();
/// let seen_by_adapter = token.clone();
/// token.cancel();
/// assert!(seen_by_adapter.is_cancelled());
/// futures::executor::block_on(seen_by_adapter.cancelled()); // resolves at once
/// ```
#[derive(Clone, Default)]
pub struct CancellationToken {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    cancelled: AtomicBool,
    event: Event,
}

impl CancellationToken {
    /// A token that has not fired.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fires the token; every waiter wakes. Idempotent.
    pub fn cancel(&self) {
        if !self.inner.cancelled.swap(true, Ordering::SeqCst) {
            self.inner.event.notify(usize::MAX);
        }
    }

    /// Whether the token has fired.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    /// A future that resolves once the token fires.
    pub fn cancelled(&self) -> WaitForCancellationFuture {
        WaitForCancellationFuture { token: self.clone(), listener: None }
    }
}

impl fmt::Debug for CancellationToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancellationToken").field("cancelled", &self.is_cancelled()).finish()
    }
}

/// Resolves when its [`CancellationToken`] fires.
#[must_use = "futures do nothing unless polled"]
pub struct WaitForCancellationFuture {
    token: CancellationToken,
    listener: Option<EventListener>,
}

impl fmt::Debug for WaitForCancellationFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitForCancellationFuture").field("token", &self.token).finish()
    }
}

impl Future for WaitForCancellationFuture {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.token.is_cancelled() {
                return Poll::Ready(());
            }
            match self.listener.as_mut() {
                None => {
                    // Register before re-checking the flag so a concurrent cancel is never missed.
                    let listener = self.token.inner.event.listen();
                    self.listener = Some(listener);
                }
                Some(listener) => match Pin::new(listener).poll(cx) {
                    Poll::Ready(()) => self.listener = None,
                    Poll::Pending => return Poll::Pending,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_wakes_a_waiter_on_another_thread() {
        let token = CancellationToken::new();
        let waiter = token.cancelled();
        let t = token.clone();
        let handle = std::thread::spawn(move || futures::executor::block_on(waiter));
        t.cancel();
        handle.join().unwrap();
        assert!(token.is_cancelled());
    }
}
