//! [`Endpoint`]: one socket, sending `S` and receiving `R`.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use courier_transport::{FrameTransport, SeqPacketSocket};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{Link, RecvState, Shared};
use crate::{
    Config, Iter, Receiver, RecvError, RecvTimeoutError, SendError, SendTimeoutError, Sender,
    TryRecvError, TrySendError,
};

/// A bidirectional channel end over one socket: sends `S`, receives `R`.
/// For request/response between two processes.
///
/// ```
/// use courier_channel::endpoints;
///
/// let (client, server) = endpoints::<String, usize>()?;
/// std::thread::spawn(move || {
///     for request in server.iter() {
///         let request = request.unwrap();
///         server.send(request.len()).unwrap();
///     }
/// });
/// client.send("hello".to_string()).unwrap();
/// assert_eq!(client.recv().unwrap(), 5);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Endpoint<S, R> {
    /// Dropped first: reading is shut down before writing, so a peer that
    /// answers our end of stream at once finds its send refused instead of
    /// queued for no one.
    rx: Receiver<R>,
    tx: Sender<S>,
}

/// Two connected endpoints over a new SEQPACKET socketpair, with the
/// default [`Config`].
///
/// # Errors
///
/// When the socketpair cannot be made.
pub fn endpoints<A, B>() -> io::Result<(Endpoint<A, B>, Endpoint<B, A>)>
where
    A: Serialize + DeserializeOwned,
    B: Serialize + DeserializeOwned,
{
    Config::default().endpoints()
}

impl<S: Serialize, R: DeserializeOwned> Endpoint<S, R> {
    pub(crate) fn from_link(link: Link, config: Config) -> Self {
        Self::from_shared(Shared::new(link, config))
    }

    pub(crate) fn from_shared(shared: Arc<Shared>) -> Self {
        Self::from_parts(shared, RecvState::default())
    }

    pub(crate) fn from_parts(shared: Arc<Shared>, state: RecvState) -> Self {
        Endpoint {
            tx: Sender::from_shared(Arc::clone(&shared)),
            rx: Receiver::from_parts(shared, state),
        }
    }

    /// An endpoint over a connected SEQPACKET socket (from
    /// [`Listener::accept`](courier_transport::Listener::accept),
    /// [`SeqPacketSocket::connect`], or inherited).
    pub fn from_socket(socket: SeqPacketSocket, config: Config) -> Self {
        Self::from_link(Link::SeqPacket(socket), config)
    }

    pub(crate) fn halves(&self) -> (&Sender<S>, &Receiver<R>) {
        (&self.tx, &self.rx)
    }

    /// An endpoint over any bidirectional [`FrameTransport`] (a pipe pair,
    /// a stream). It cannot itself travel inside a message.
    pub fn with_transport(transport: Box<dyn FrameTransport>, config: Config) -> Self {
        Self::from_link(Link::Other(transport), config)
    }

    /// The two halves, usable from different threads: the sender is
    /// `Clone + Sync`, the receiver moves to one reader.
    pub fn split(self) -> (Sender<S>, Receiver<R>) {
        (self.tx, self.rx)
    }

    /// As [`Sender::send`].
    ///
    /// # Errors
    ///
    /// As [`Sender::send`].
    pub fn send(&self, value: S) -> Result<(), SendError<S>> {
        self.tx.send(value)
    }

    /// As [`Sender::send_ref`].
    ///
    /// # Errors
    ///
    /// As [`Sender::send_ref`].
    pub fn send_ref<'v>(&self, value: &'v S) -> Result<(), SendError<&'v S>> {
        self.tx.send_ref(value)
    }

    /// As [`Sender::try_send`].
    ///
    /// # Errors
    ///
    /// As [`Sender::try_send`].
    pub fn try_send(&self, value: S) -> Result<(), TrySendError<S>> {
        self.tx.try_send(value)
    }

    /// As [`Sender::send_timeout`].
    ///
    /// # Errors
    ///
    /// As [`Sender::send_timeout`].
    pub fn send_timeout(&self, value: S, timeout: Duration) -> Result<(), SendTimeoutError<S>> {
        self.tx.send_timeout(value, timeout)
    }

    /// As [`Receiver::recv`].
    ///
    /// # Errors
    ///
    /// As [`Receiver::recv`].
    pub fn recv(&self) -> Result<R, RecvError> {
        self.rx.recv()
    }

    /// As [`Receiver::try_recv`].
    ///
    /// # Errors
    ///
    /// As [`Receiver::try_recv`].
    pub fn try_recv(&self) -> Result<R, TryRecvError> {
        self.rx.try_recv()
    }

    /// As [`Receiver::recv_timeout`].
    ///
    /// # Errors
    ///
    /// As [`Receiver::recv_timeout`].
    pub fn recv_timeout(&self, timeout: Duration) -> Result<R, RecvTimeoutError> {
        self.rx.recv_timeout(timeout)
    }

    /// As [`Receiver::recv_deadline`].
    ///
    /// # Errors
    ///
    /// As [`Receiver::recv_deadline`].
    pub fn recv_deadline(&self, deadline: Instant) -> Result<R, RecvTimeoutError> {
        self.rx.recv_deadline(deadline)
    }

    /// As [`Receiver::iter`].
    pub fn iter(&self) -> Iter<'_, R> {
        self.rx.iter()
    }
}

impl<S, R> AsFd for Endpoint<S, R> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.rx.as_fd()
    }
}

impl<S, R> fmt::Debug for Endpoint<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("fd", &self.as_fd())
            .finish_non_exhaustive()
    }
}
