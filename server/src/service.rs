//! The application interface every transport runs, and the one place it is called.

use std::panic::{self, AssertUnwindSafe};

use sockmsg_protocol::Message;

/// What a service may fail with: the server logs it and closes that connection.
pub type ServiceError = Box<dyn std::error::Error + Send + Sync>;

/// An application: turns each request into its response. Servers call it for every
/// message they receive, on whatever thread they run, so one service runs unchanged on
/// every transport.
///
/// ```
/// use sockmsg_protocol::Message;
/// use sockmsg_server::{Service, ServiceError};
/// struct Echo;
/// impl Service for Echo {
///     fn call(&self, request: Message) -> Result<Message, ServiceError> {
///         Ok(request)
///     }
/// }
/// let answer = Echo.call(Message::binary("x/y", b"hi".to_vec()))?;
/// assert_eq!(answer.content(), b"hi");
/// # Ok::<(), ServiceError>(())
/// ```
pub trait Service: Send + Sync + 'static {
    /// The response to `request`. An error closes the connection.
    fn call(&self, request: Message) -> Result<Message, ServiceError>;
}

impl<F> Service for F
where
    F: Fn(Message) -> Result<Message, ServiceError> + Send + Sync + 'static,
{
    fn call(&self, request: Message) -> Result<Message, ServiceError> {
        self(request)
    }
}

impl<S: Service + ?Sized> Service for std::sync::Arc<S> {
    fn call(&self, request: Message) -> Result<Message, ServiceError> {
        (**self).call(request)
    }
}

/// How a call of the service ended when it gave no answer.
#[derive(Debug)]
pub enum CallError {
    /// The service returned an error.
    Failed(ServiceError),
    /// The service panicked (the panic was caught; the server goes on).
    Panicked,
}

/// Calls `service` on `request` with panics caught: the one place a server calls a service.
///
/// ```
/// use sockmsg_protocol::Message;
/// use sockmsg_server::{call_service, CallError, ServiceError};
/// let boom = |_: Message| -> Result<Message, ServiceError> { panic!("boom") };
/// assert!(matches!(call_service(&boom, Message::binary("a/b", vec![])), Err(CallError::Panicked)));
/// ```
pub fn call_service<S: Service + ?Sized>(
    service: &S,
    request: Message,
) -> Result<Message, CallError> {
    match panic::catch_unwind(AssertUnwindSafe(|| service.call(request))) {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(CallError::Failed(e)),
        Err(_) => Err(CallError::Panicked),
    }
}
