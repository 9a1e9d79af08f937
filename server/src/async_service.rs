//! The application interface for services that await (a database, another server), and
//! the one place their answers are polled, with panics caught. Runtime-agnostic: a
//! transport drives the futures on whatever executor it has.

use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

use sockmsg_protocol::Message;

use crate::service::{CallError, ServiceError};

/// The answer an [`AsyncService`] is working on: a boxed future, `Send` so that a
/// multi-thread runtime may poll it on any of its threads, `'static` so that it may
/// outlive the call (it owns what it needs: clone an `Arc` of your state into it).
pub type AnswerFuture = Pin<Box<dyn Future<Output = Result<Message, ServiceError>> + Send>>;

/// An application whose answers take awaiting (a query to a database, a request to
/// another server): the async twin of [`Service`](crate::Service), with the same request,
/// answer and error types. A server runs it on its connections under the same rules as a
/// `Service` (answers in request order when requests are pipelined, the output cap, the
/// deadlines, the limit on answer size, panics caught and the connection closed, answers
/// owed sent on shutdown within the grace), and lets a connection have at most
/// [`ServerConfig::max_in_flight`](crate::ServerConfig::max_in_flight) answers in
/// progress at once.
///
/// `call` returns a boxed future rather than an `impl Future` (which Rust 1.75 allows in
/// traits): a boxed one keeps the trait object-safe, so a server takes an
/// `Arc<dyn AsyncService>` as it takes an `Arc<dyn Service>`, and needs no macro. Its cost,
/// one allocation per request, is small beside whatever the service awaits. A closure
/// returning a future is an `AsyncService` (it is boxed for you):
///
/// ```
/// use std::sync::Arc;
/// use sockmsg_protocol::Message;
/// use sockmsg_server::{AsyncService, ServiceError};
///
/// let lookup: Arc<dyn AsyncService> = Arc::new(|request: Message| async move {
///     // ... await a database here ...
///     Ok::<_, ServiceError>(Message::binary("text/plain", request.content().to_vec()))
/// });
/// # let _ = lookup;
/// ```
///
/// Or implement it on your own type, cloning what the future needs into it:
///
/// ```
/// use std::sync::Arc;
/// use sockmsg_protocol::Message;
/// use sockmsg_server::{AnswerFuture, AsyncService};
///
/// struct Tally {
///     seen: Arc<std::sync::atomic::AtomicU64>,
/// }
/// impl AsyncService for Tally {
///     fn call(&self, request: Message) -> AnswerFuture {
///         let seen = Arc::clone(&self.seen);
///         Box::pin(async move {
///             let n = seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
///             Ok(Message::binary("text/plain", format!("{n}: {}", request.content().len()).into_bytes()))
///         })
///     }
/// }
/// ```
pub trait AsyncService: Send + Sync + 'static {
    /// The answer to `request`, once awaited. An error closes the connection (after the
    /// answers to the requests before it are sent).
    fn call(&self, request: Message) -> AnswerFuture;
}

impl<F, Fut> AsyncService for F
where
    F: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Message, ServiceError>> + Send + 'static,
{
    fn call(&self, request: Message) -> AnswerFuture {
        Box::pin(self(request))
    }
}

impl<S: AsyncService + ?Sized> AsyncService for std::sync::Arc<S> {
    fn call(&self, request: Message) -> AnswerFuture {
        (**self).call(request)
    }
}

/// An answer in progress, with panics caught: what [`call_async_service`] returns. It
/// ends with the answer, or how the call failed ([`CallError`]), as
/// [`call_service`](crate::call_service) does for a sync service. Polling it again after
/// it ended gives [`CallError::Panicked`].
pub struct Answering {
    state: AnsweringState,
}

enum AnsweringState {
    Running(AnswerFuture),
    /// `call` itself panicked, before any future.
    Panicked,
    Done,
}

impl std::fmt::Debug for Answering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            AnsweringState::Running(_) => "running",
            AnsweringState::Panicked => "panicked",
            AnsweringState::Done => "done",
        };
        f.debug_struct("Answering").field("state", &state).finish()
    }
}

impl Future for Answering {
    type Output = Result<Message, CallError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let AnsweringState::Running(fut) = &mut self.state else {
            self.state = AnsweringState::Done;
            return Poll::Ready(Err(CallError::Panicked));
        };
        let polled = panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx)));
        let result = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(Ok(answer))) => Ok(answer),
            Ok(Poll::Ready(Err(e))) => Err(CallError::Failed(e)),
            Err(_) => Err(CallError::Panicked),
        };
        // The future is dropped as soon as it ends (a panicked one is not polled again).
        self.state = AnsweringState::Done;
        Poll::Ready(result)
    }
}

/// Calls `service` on `request` and returns its answer in progress, with panics caught,
/// whether in `call` itself or in any poll of its future: the one place a server calls an
/// async service.
///
/// ```
/// use std::future::Future;
/// use std::sync::Arc;
/// use std::task::{Context, Poll, Wake, Waker};
/// use sockmsg_protocol::Message;
/// use sockmsg_server::{call_async_service, CallError, ServiceError};
///
/// let boom = |_: Message| async move {
///     if true {
///         panic!("boom");
///     }
///     Ok::<_, ServiceError>(Message::binary("a/b", vec![]))
/// };
/// let mut answering = call_async_service(&boom, Message::binary("a/b", vec![]));
/// struct Nothing;
/// impl Wake for Nothing {
///     fn wake(self: Arc<Self>) {}
/// }
/// let waker = Waker::from(Arc::new(Nothing));
/// let mut cx = Context::from_waker(&waker);
/// let polled = std::pin::Pin::new(&mut answering).poll(&mut cx);
/// assert!(matches!(polled, Poll::Ready(Err(CallError::Panicked))));
/// ```
pub fn call_async_service<S: AsyncService + ?Sized>(service: &S, request: Message) -> Answering {
    let state = match panic::catch_unwind(AssertUnwindSafe(|| service.call(request))) {
        Ok(fut) => AnsweringState::Running(fut),
        Err(_) => AnsweringState::Panicked,
    };
    Answering { state }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::task::{Wake, Waker};

    use super::*;

    struct Nothing;
    impl Wake for Nothing {
        fn wake(self: Arc<Self>) {}
    }

    fn poll_once(a: &mut Answering) -> Poll<Result<Message, CallError>> {
        let waker = Waker::from(Arc::new(Nothing));
        let mut cx = Context::from_waker(&waker);
        Pin::new(a).poll(&mut cx)
    }

    #[test]
    fn answers_errors_and_panics_end_as_for_a_sync_service() {
        let svc: Arc<dyn AsyncService> = Arc::new(|m: Message| async move {
            match m.content() {
                b"fail" => Err::<Message, ServiceError>("no such row".into()),
                b"panic" => panic!("in the future"),
                _ => Ok(Message::binary("x/y", [b"ok:", m.content()].concat())),
            }
        });
        let mut ok = call_async_service(&*svc, Message::binary("x/y", b"a".to_vec()));
        match poll_once(&mut ok) {
            Poll::Ready(Ok(m)) => assert_eq!(m.content(), b"ok:a"),
            other => panic!("{other:?}"),
        }
        // Polled again after it ended: not a second answer.
        assert!(matches!(
            poll_once(&mut ok),
            Poll::Ready(Err(CallError::Panicked))
        ));
        let mut failed = call_async_service(&*svc, Message::binary("x/y", b"fail".to_vec()));
        match poll_once(&mut failed) {
            Poll::Ready(Err(CallError::Failed(e))) => assert_eq!(e.to_string(), "no such row"),
            other => panic!("{other:?}"),
        }
        let mut panicked = call_async_service(&*svc, Message::binary("x/y", b"panic".to_vec()));
        assert!(matches!(
            poll_once(&mut panicked),
            Poll::Ready(Err(CallError::Panicked))
        ));
    }

    #[test]
    fn a_panic_in_call_itself_is_caught_too() {
        struct Eager;
        impl AsyncService for Eager {
            fn call(&self, _: Message) -> AnswerFuture {
                panic!("before any future")
            }
        }
        let mut a = call_async_service(&Eager, Message::binary("x/y", vec![]));
        assert!(matches!(
            poll_once(&mut a),
            Poll::Ready(Err(CallError::Panicked))
        ));
    }

    #[test]
    fn a_pending_future_stays_pending() {
        let svc = |_: Message| std::future::pending::<Result<Message, ServiceError>>();
        let mut a = call_async_service(&svc, Message::binary("x/y", vec![]));
        assert!(poll_once(&mut a).is_pending());
        assert!(poll_once(&mut a).is_pending());
    }
}
