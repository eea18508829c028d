//! [`Sender`], [`Receiver`], [`channel`] and [`Config`].

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use courier_transport::{DatagramSocket, FrameTransport, SeqPacketSocket, Wait};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{self, Link, RecvFail, RecvState, SendFail, Shared};
use crate::{
    ChannelError, Config, RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError,
    TrySendError,
};

/// A typed channel over a new SEQPACKET socketpair, with the default
/// [`Config`].
///
/// Either end can be sent to another process inside a message (it travels
/// as its socket's fd) and keeps working there.
///
/// ```
/// let (tx, rx) = courier_channel::channel::<(u32, String)>()?;
/// let tx2 = tx.clone();
/// std::thread::spawn(move || tx2.send((1, "from a thread".into())).unwrap());
/// assert_eq!(rx.recv().unwrap().0, 1);
/// drop(tx);
/// assert!(rx.recv().is_err()); // every sender gone: Disconnected
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
///
/// When the socketpair cannot be made.
pub fn channel<T: Serialize + DeserializeOwned>() -> io::Result<(Sender<T>, Receiver<T>)> {
    Config::default().channel()
}

/// The sending half of a typed channel: `Clone + Send + Sync`, usable from
/// many threads (and, sent inside a message, from many processes). Each
/// value is one whole message; messages from one sender arrive in order.
pub struct Sender<T> {
    pub(crate) shared: Arc<Shared>,
    kind: PhantomData<fn(T)>,
}

impl<T: Serialize> Sender<T> {
    pub(crate) fn new(link: Link, config: Config) -> Self {
        Self::from_shared(Shared::new(link, config))
    }

    pub(crate) fn from_shared(shared: Arc<Shared>) -> Self {
        shared.sender_added();
        Sender {
            shared,
            kind: PhantomData,
        }
    }

    /// A sender over a connected SEQPACKET socket.
    pub fn from_socket(socket: SeqPacketSocket, config: Config) -> Self {
        Self::new(Link::SeqPacket(socket), config.datagram(false))
    }

    /// A sender over a connected DGRAM socket.
    pub fn from_datagram_socket(socket: DatagramSocket, config: Config) -> Self {
        Self::new(Link::Datagram(socket), config.datagram(true))
    }

    /// A sender over any [`FrameTransport`] (a pipe, a stream: see
    /// courier-pipe). Such a sender cannot itself travel inside a message.
    pub fn with_transport(transport: Box<dyn FrameTransport>, config: Config) -> Self {
        Self::new(Link::Other(transport), config)
    }

    fn send_wait(&self, value: T, wait: Wait) -> Result<(), (T, SendFail)> {
        match codec::send(&self.shared, &value, wait) {
            Ok(()) => Ok(()), // `value` drops here: its fds now live in the receiver
            Err(fail) => Err((value, fail)),
        }
    }

    /// Sends `value`, waiting while the channel is full.
    ///
    /// # Errors
    ///
    /// [`SendError::Disconnected`] when the receiver is gone;
    /// [`SendError::Failed`] when the value cannot be encoded, exceeds the
    /// limit, holds too many fds, or the transport fails. Either way the
    /// value comes back with every fd it owns.
    pub fn send(&self, value: T) -> Result<(), SendError<T>> {
        self.send_wait(value, Wait::Block)
            .map_err(|(v, fail)| match fail {
                SendFail::Disconnected => SendError::Disconnected(v),
                SendFail::Failed(e) => SendError::Failed(v, e),
                SendFail::Full | SendFail::Timeout => {
                    SendError::Failed(v, ChannelError::Io(io::ErrorKind::WouldBlock.into()))
                }
            })
    }

    /// Sends `*value` and leaves it with the caller, so a large value can
    /// be sent again without being rebuilt (the fds it holds are
    /// duplicated into the message, as for every send).
    ///
    /// ```
    /// let (tx, rx) = courier_channel::channel::<courier_channel::Bytes>()?;
    /// let block = courier_channel::Bytes::from(vec![1u8; 4096]);
    /// tx.send_ref(&block).unwrap();
    /// tx.send_ref(&block).unwrap();
    /// assert_eq!(rx.recv().unwrap(), block);
    /// assert_eq!(rx.recv().unwrap(), block);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send), with the reference handed back.
    pub fn send_ref<'v>(&self, value: &'v T) -> Result<(), SendError<&'v T>> {
        codec::send(&self.shared, value, Wait::Block).map_err(|fail| match fail {
            SendFail::Disconnected => SendError::Disconnected(value),
            SendFail::Failed(e) => SendError::Failed(value, e),
            SendFail::Full | SendFail::Timeout => {
                SendError::Failed(value, ChannelError::Io(io::ErrorKind::WouldBlock.into()))
            }
        })
    }

    /// Sends `value` if there is room now.
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`], and as [`send`](Self::send).
    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        self.send_wait(value, Wait::Never)
            .map_err(|(v, fail)| match fail {
                SendFail::Full | SendFail::Timeout => TrySendError::Full(v),
                SendFail::Disconnected => TrySendError::Disconnected(v),
                SendFail::Failed(e) => TrySendError::Failed(v, e),
            })
    }

    /// Sends `value`, waiting at most `timeout` for room.
    ///
    /// # Errors
    ///
    /// [`SendTimeoutError::Timeout`], and as [`send`](Self::send).
    pub fn send_timeout(&self, value: T, timeout: Duration) -> Result<(), SendTimeoutError<T>> {
        self.send_deadline_wait(value, Wait::timeout(timeout))
    }

    /// Sends `value`, waiting until `deadline` at most for room.
    ///
    /// # Errors
    ///
    /// [`SendTimeoutError::Timeout`], and as [`send`](Self::send).
    pub fn send_deadline(&self, value: T, deadline: Instant) -> Result<(), SendTimeoutError<T>> {
        self.send_deadline_wait(value, Wait::Until(deadline))
    }

    fn send_deadline_wait(&self, value: T, wait: Wait) -> Result<(), SendTimeoutError<T>> {
        self.send_wait(value, wait).map_err(|(v, fail)| match fail {
            SendFail::Full | SendFail::Timeout => SendTimeoutError::Timeout(v),
            SendFail::Disconnected => SendTimeoutError::Disconnected(v),
            SendFail::Failed(e) => SendTimeoutError::Failed(v, e),
        })
    }

    /// This end's settings.
    pub fn config(&self) -> Config {
        self.shared.config
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.sender_added();
        Sender {
            shared: Arc::clone(&self.shared),
            kind: PhantomData,
        }
    }
}

/// The last sender of a socket shuts its writing side down
/// (`shutdown(SHUT_WR)`), so the receiver sees end of stream after the
/// queued values even if a stray copy of the fd lives on in another process
/// (one that inherited it by accident, or a message in flight). A sender
/// that has been put in a message, or that arrived in one, does not:
/// another process may own the socket too, and end of stream then comes
/// when the last copy is closed.
impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.shared.sender_dropped();
    }
}

impl<T> AsFd for Sender<T> {
    /// The fd to poll for writability.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.shared.link.transport().writable_fd()
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("fd", &self.as_fd())
            .finish_non_exhaustive()
    }
}

/// The receiving half of a typed channel: `Send`, not `Sync` (like std's).
///
/// Every received frame is validated before a value is built (header,
/// lengths, limits, fd count, each fd index used exactly once); a frame
/// that fails is discarded with all its fds closed, the call returns
/// `Failed`, and the channel stays usable: SEQPACKET and DGRAM keep message
/// boundaries, so the next frame starts clean.
pub struct Receiver<T> {
    pub(crate) shared: Arc<Shared>,
    pub(crate) state: RefCell<RecvState>,
    kind: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Receiver<T> {
    pub(crate) fn new(link: Link, config: Config) -> Self {
        Self::from_shared(Shared::new(link, config))
    }

    pub(crate) fn from_shared(shared: Arc<Shared>) -> Self {
        Self::from_parts(shared, RecvState::default())
    }

    pub(crate) fn from_parts(shared: Arc<Shared>, state: RecvState) -> Self {
        Receiver {
            shared,
            state: RefCell::new(state),
            kind: PhantomData,
        }
    }

    /// A receiver over a connected SEQPACKET socket.
    pub fn from_socket(socket: SeqPacketSocket, config: Config) -> Self {
        Self::new(Link::SeqPacket(socket), config.datagram(false))
    }

    /// A receiver over a connected DGRAM socket.
    pub fn from_datagram_socket(socket: DatagramSocket, config: Config) -> Self {
        Self::new(Link::Datagram(socket), config.datagram(true))
    }

    /// A receiver over any [`FrameTransport`]. It cannot itself travel
    /// inside a message.
    pub fn with_transport(transport: Box<dyn FrameTransport>, config: Config) -> Self {
        Self::new(Link::Other(transport), config)
    }

    fn recv_wait(&self, wait: Wait) -> Result<T, RecvFail> {
        let Ok(mut state) = self.state.try_borrow_mut() else {
            let busy = ChannelError::Refused(
                "the receiver is already receiving (re-entered from a Deserialize impl)".into(),
            );
            return Err(RecvFail::Failed(busy));
        };
        codec::recv(&self.shared, &mut state, wait)
    }

    /// Receives the next value, waiting until one arrives.
    ///
    /// # Errors
    ///
    /// [`RecvError::Disconnected`] once every sender is gone and every
    /// queued value has been received (never on DGRAM);
    /// [`RecvError::Failed`] for a frame that failed validation or
    /// decoding, or a transport failure.
    pub fn recv(&self) -> Result<T, RecvError> {
        self.recv_wait(Wait::Block).map_err(|fail| match fail {
            RecvFail::Disconnected => RecvError::Disconnected,
            RecvFail::Failed(e) => RecvError::Failed(e),
            RecvFail::Empty | RecvFail::Timeout => {
                RecvError::Failed(ChannelError::Io(io::ErrorKind::WouldBlock.into()))
            }
        })
    }

    /// Receives a value if one is queued.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`], and as [`recv`](Self::recv).
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        self.recv_wait(Wait::Never).map_err(|fail| match fail {
            RecvFail::Empty | RecvFail::Timeout => TryRecvError::Empty,
            RecvFail::Disconnected => TryRecvError::Disconnected,
            RecvFail::Failed(e) => TryRecvError::Failed(e),
        })
    }

    /// Receives a value, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`RecvTimeoutError::Timeout`], and as [`recv`](Self::recv).
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.recv_deadline_wait(Wait::timeout(timeout))
    }

    /// Receives a value, waiting until `deadline` at most (a value already
    /// queued is returned even when the deadline has passed).
    ///
    /// # Errors
    ///
    /// [`RecvTimeoutError::Timeout`], and as [`recv`](Self::recv).
    pub fn recv_deadline(&self, deadline: Instant) -> Result<T, RecvTimeoutError> {
        self.recv_deadline_wait(Wait::Until(deadline))
    }

    fn recv_deadline_wait(&self, wait: Wait) -> Result<T, RecvTimeoutError> {
        self.recv_wait(wait).map_err(|fail| match fail {
            RecvFail::Empty | RecvFail::Timeout => RecvTimeoutError::Timeout,
            RecvFail::Disconnected => RecvTimeoutError::Disconnected,
            RecvFail::Failed(e) => RecvTimeoutError::Failed(e),
        })
    }

    /// A blocking iterator: each value (or the error of a frame that
    /// failed), ending when the channel is disconnected.
    pub fn iter(&self) -> Iter<'_, T> {
        Iter { rx: self }
    }

    /// A non-blocking iterator over the values queued now, ending when the
    /// channel is empty or disconnected.
    pub fn try_iter(&self) -> TryIter<'_, T> {
        TryIter { rx: self }
    }

    /// This end's settings.
    pub fn config(&self) -> Config {
        self.shared.config
    }
}

/// Dropping a receiver shuts its socket's reading side down
/// (`shutdown(SHUT_RD)`): the peer's sends fail with `Disconnected` at once,
/// even if a stray copy of the fd survives elsewhere. Not done for a
/// receiver that has been put in a message.
impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.shared.receiver_dropped();
    }
}

impl<T> AsFd for Receiver<T> {
    /// The fd to poll for readability.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.shared.link.transport().readable_fd()
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("fd", &self.as_fd())
            .finish_non_exhaustive()
    }
}

/// The iterator of [`Receiver::iter`].
#[derive(Debug)]
pub struct Iter<'a, T> {
    rx: &'a Receiver<T>,
}

impl<T: DeserializeOwned> Iterator for Iter<'_, T> {
    type Item = Result<T, ChannelError>;
    fn next(&mut self) -> Option<Self::Item> {
        match self.rx.recv() {
            Ok(v) => Some(Ok(v)),
            Err(RecvError::Disconnected) => None,
            Err(RecvError::Failed(e)) => Some(Err(e)),
        }
    }
}

/// The iterator of [`Receiver::try_iter`].
#[derive(Debug)]
pub struct TryIter<'a, T> {
    rx: &'a Receiver<T>,
}

impl<T: DeserializeOwned> Iterator for TryIter<'_, T> {
    type Item = Result<T, ChannelError>;
    fn next(&mut self) -> Option<Self::Item> {
        match self.rx.try_recv() {
            Ok(v) => Some(Ok(v)),
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => None,
            Err(TryRecvError::Failed(e)) => Some(Err(e)),
        }
    }
}
