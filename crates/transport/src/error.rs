//! The errors courier-transport adds to what the kernel reports.
//!
//! Every operation returns [`std::io::Error`]. When courier itself detects the
//! problem (a message too large, too many fds, a truncated receive, a path that
//! is not a socket, ...) the `io::Error` carries a [`TransportError`] as its
//! inner error, so callers can match on it with [`TransportError::of`].

use std::io;
use std::path::PathBuf;

use crate::MAX_FDS;

/// A failure detected by courier-transport, carried inside an [`io::Error`].
///
/// Get it back from an `io::Error` with [`TransportError::of`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The message is larger than this socket can carry in one packet.
    #[error("message of {size} bytes exceeds this socket's limit of {limit} bytes")]
    MessageTooLarge {
        /// Bytes the caller tried to send.
        size: usize,
        /// The largest message this socket can send now (see
        /// [`Socket::max_message_len`](crate::Socket::max_message_len)).
        limit: usize,
    },
    /// More file descriptors than the kernel's SCM_MAX_FD in one message.
    #[error("{count} file descriptors in one message exceed the kernel's limit of {MAX_FDS}")]
    TooManyFds {
        /// File descriptors the caller tried to send.
        count: usize,
    },
    /// The received message did not fit the buffer: the kernel dropped its
    /// tail, so the whole message is discarded and its fds are closed.
    #[error(
        "received message of {len} bytes does not fit the {capacity}-byte buffer; \
         it was discarded and its {fds} file descriptors closed"
    )]
    Truncated {
        /// The message's real length.
        len: usize,
        /// The receive buffer's total length.
        capacity: usize,
        /// File descriptors that arrived with it (all closed).
        fds: usize,
    },
    /// The message carried more file descriptors than this receive accepts.
    /// The kernel closed the ones that did not fit (MSG_CTRUNC); courier closed
    /// the ones that did.
    #[error(
        "message carried more file descriptors than the {limit} this receive accepts; \
         the {received} that arrived were closed"
    )]
    FdsTruncated {
        /// How many fds the receive accepted.
        limit: usize,
        /// How many fds arrived before the rest were dropped (all closed).
        received: usize,
    },
    /// Zero-length SOCK_SEQPACKET messages read as end-of-stream, so they
    /// are never sent.
    #[error("a zero-length message cannot be sent on a SOCK_SEQPACKET socket: the peer would read it as end of stream")]
    EmptyMessage,
    /// A filesystem path does not fit `sun_path`.
    #[error("socket path is {len} bytes long; at most {max} bytes fit")]
    PathTooLong {
        /// Length of the path in bytes.
        len: usize,
        /// The longest path that fits.
        max: usize,
    },
    /// An abstract name does not fit `sun_path`.
    #[error("abstract socket name is {len} bytes long; at most {max} bytes fit")]
    NameTooLong {
        /// Length of the name in bytes.
        len: usize,
        /// The longest name that fits.
        max: usize,
    },
    /// Something other than a socket exists at the path; courier never removes it.
    #[error("{} exists and is not a socket; it was left untouched", path.display())]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// A live socket is bound to the path.
    #[error("{} is in use by a live socket", path.display())]
    AddressInUse {
        /// The path.
        path: PathBuf,
    },
    /// An unnamed address cannot be bound or connected to.
    #[error("an unnamed address cannot be bound or connected to")]
    UnnamedAddress,
    /// The file descriptor is not an AF_UNIX socket.
    #[error("file descriptor is not an AF_UNIX socket")]
    NotUnixSocket,
    /// The file descriptor is an AF_UNIX socket of another type.
    #[error("socket is of type {found}, expected {expected}")]
    WrongSocketType {
        /// The type courier wanted.
        expected: &'static str,
        /// The raw `SO_TYPE` value found.
        found: i32,
    },
    /// The socket is not listening for connections.
    #[error("socket is not listening")]
    NotListening,
}

impl TransportError {
    /// The courier error inside `err`, if courier put one there.
    ///
    /// ```
    /// use courier_transport::{SeqPacketSocket, TransportError};
    ///
    /// let (a, _b) = SeqPacketSocket::pair()?;
    /// let err = a.send(&[]).unwrap_err();
    /// assert!(matches!(TransportError::of(&err), Some(TransportError::EmptyMessage)));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn of(err: &io::Error) -> Option<&TransportError> {
        err.get_ref()?.downcast_ref::<TransportError>()
    }

    /// The [`io::ErrorKind`] this error is reported with.
    pub fn kind(&self) -> io::ErrorKind {
        use TransportError::*;
        match self {
            MessageTooLarge { .. } | TooManyFds { .. } | EmptyMessage => {
                io::ErrorKind::InvalidInput
            }
            PathTooLong { .. } | NameTooLong { .. } | UnnamedAddress => io::ErrorKind::InvalidInput,
            Truncated { .. } | FdsTruncated { .. } => io::ErrorKind::InvalidData,
            NotASocket { .. } => io::ErrorKind::AlreadyExists,
            AddressInUse { .. } => io::ErrorKind::AddrInUse,
            NotUnixSocket | WrongSocketType { .. } | NotListening => io::ErrorKind::InvalidInput,
        }
    }
}

impl From<TransportError> for io::Error {
    fn from(err: TransportError) -> Self {
        io::Error::new(err.kind(), err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_lowercase_and_kind_is_kept() {
        let err: io::Error = TransportError::TooManyFds { count: 254 }.into();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let text = err.to_string();
        assert!(text.starts_with("254 file descriptors"), "{text}");
        assert!(text.contains("253"), "{text}");
        assert!(matches!(
            TransportError::of(&err),
            Some(TransportError::TooManyFds { count: 254 })
        ));
        assert!(TransportError::of(&io::Error::from(io::ErrorKind::Other)).is_none());
    }
}
