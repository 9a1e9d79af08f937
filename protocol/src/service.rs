//! The application interface shared by every transport.

use crate::message::Message;

/// What a service may fail with: the transport logs it and closes that connection.
pub type ServiceError = Box<dyn std::error::Error + Send + Sync>;

/// An application: turns each request into its response. Transports call it for every
/// message a server receives, on whatever thread they run, so one service runs unchanged on
/// the blocking and the event-loop transport.
///
/// ```
/// use sockmsg_protocol::{Message, Service, ServiceError};
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
