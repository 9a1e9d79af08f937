//! Stopping a server from any thread, whatever its transport.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

type Waker = Box<dyn Fn() + Send + Sync>;

#[derive(Default)]
struct Inner {
    flag: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
}

/// Stops a server: a flag, plus the wake-ups its transport registered (a `mio::Waker`, a
/// `shutdown(2)` of blocked sockets...). Cheap to clone, `Send + Sync`, so a Ctrl-C handler
/// or a test can hold one.
///
/// On shutdown every transport does the same: it stops accepting, closes idle connections
/// and requests not yet complete at once, lets answers already owed flush within
/// [`crate::ServerConfig::shutdown_grace`], and logs one line per connection closed with
/// [`crate::CloseReason::Shutdown`].
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
/// use sockmsg_server::ShutdownHandle;
/// let handle = ShutdownHandle::new();
/// let woken = Arc::new(AtomicUsize::new(0));
/// let w = Arc::clone(&woken);
/// handle.on_shutdown(move || { w.fetch_add(1, Ordering::SeqCst); });
/// handle.shutdown();
/// handle.shutdown(); // a second call does nothing more
/// assert!(handle.is_shutdown());
/// assert_eq!(woken.load(Ordering::SeqCst), 1);
/// ```
#[derive(Clone, Default)]
pub struct ShutdownHandle {
    inner: Arc<Inner>,
}

impl fmt::Debug for ShutdownHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownHandle")
            .field("shutdown", &self.is_shutdown())
            .finish_non_exhaustive()
    }
}

impl ShutdownHandle {
    /// A handle not yet shut down, with no wake-up registered.
    pub fn new() -> ShutdownHandle {
        ShutdownHandle::default()
    }

    /// Starts a graceful shutdown and returns at once: sets the flag and runs every
    /// registered wake-up. Calling it again does nothing more.
    pub fn shutdown(&self) {
        if self.inner.flag.swap(true, Ordering::SeqCst) {
            return;
        }
        tracing::info!("shutting down: no new connections; finishing answers in progress");
        for wake in self.lock().iter() {
            wake();
        }
    }

    /// `true` once [`ShutdownHandle::shutdown`] was called.
    pub fn is_shutdown(&self) -> bool {
        self.inner.flag.load(Ordering::SeqCst)
    }

    /// Registers `wake`, run once when the server shuts down (at once if it already has).
    /// Transports use it to wake their threads out of `poll`, `accept` or `read`.
    pub fn on_shutdown(&self, wake: impl Fn() + Send + Sync + 'static) {
        let mut wakers = self.lock();
        // Checked under the lock: `shutdown` sets the flag before taking it, so a wake-up
        // registered concurrently either runs here or in `shutdown`.
        if self.is_shutdown() {
            drop(wakers);
            wake();
        } else {
            wakers.push(Box::new(wake));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Waker>> {
        // A wake-up that panicked leaves the list intact.
        self.inner.wakers.lock().unwrap_or_else(|e| e.into_inner())
    }
}
