//! Errors: one enum per operation, std/crossbeam style, each carrying a
//! [`ChannelError`] for what is neither disconnection nor waiting.

use std::fmt;
use std::io;

/// Why a frame from the peer was refused. The frame is discarded and every
/// fd that came with it is closed; the channel stays usable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// Shorter than the 16-byte header (an empty frame included).
    #[error("frame of {len} bytes is shorter than the 16-byte header")]
    TooShort {
        /// The frame's length.
        len: usize,
    },
    /// Longer than any frame courier sends inline
    /// ([`MAX_INLINE_FRAME`](crate::MAX_INLINE_FRAME)); discarded unread.
    #[error("frame of {len} bytes is longer than the {max}-byte maximum")]
    TooLong {
        /// The frame's length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The first two bytes are not courier's magic.
    #[error("frame does not start with courier's magic (found {found:02x?})")]
    BadMagic {
        /// The bytes found.
        found: [u8; 2],
    },
    /// A wire-format version this build does not speak.
    #[error("frame has wire-format version {found}; this build speaks {supported}")]
    UnsupportedVersion {
        /// The version in the frame.
        found: u8,
        /// The version this build speaks.
        supported: u8,
    },
    /// A body kind this build does not know.
    #[error("frame has unknown body kind {found}")]
    UnknownKind {
        /// The kind byte found.
        found: u8,
    },
    /// Reserved header bits are set.
    #[error("frame has reserved header bits set")]
    ReservedBitsSet,
    /// The fds that arrived are not the number the header declares.
    #[error("frame declares {declared} file descriptors but {received} arrived")]
    FdCountMismatch {
        /// Declared by the header (including a shared-memory fd).
        declared: usize,
        /// Arrived in SCM_RIGHTS.
        received: usize,
    },
    /// The body is not the length the header declares.
    #[error("frame declares a {declared}-byte body but carries {actual} bytes")]
    BodyLengthMismatch {
        /// Declared by the header.
        declared: u64,
        /// Present in the frame.
        actual: u64,
    },
    /// The declared body is larger than the receiver's limit.
    #[error("frame declares a {size}-byte body; this receiver's limit is {limit} bytes")]
    TooLarge {
        /// Declared size.
        size: u64,
        /// The receiver's limit.
        limit: usize,
    },
    /// The shared-memory fd is not a memfd sealed against shrinking,
    /// growing and writing, or is smaller than the body.
    #[error("shared-memory payload refused: {reason}")]
    BadSharedMemory {
        /// What was wrong.
        reason: &'static str,
    },
    /// The sender of a streamed body (a large value that is read while it
    /// is written) made no progress with it for `after`, or sent it too
    /// slowly (below 8 MiB/s past that): it is taken to be gone, and its
    /// value is dropped.
    #[error("streamed body stalled: its sender made no progress for {after:?}")]
    Stalled {
        /// How long nothing came.
        after: std::time::Duration,
    },
    /// An fd index in the body is outside the frame's fd table.
    #[error("value refers to fd {index} but the frame carries {count}")]
    FdIndexOutOfRange {
        /// The index found.
        index: u32,
        /// The table's size.
        count: usize,
    },
    /// An fd index is used twice.
    #[error("value uses fd {index} twice")]
    FdIndexReused {
        /// The index used twice.
        index: u32,
    },
    /// fds in the table that the value did not use.
    #[error("{count} file descriptors arrived that the value does not use")]
    FdsLeftOver {
        /// How many were left (all closed).
        count: usize,
    },
    /// The value nests deeper than courier decodes (a recursive type fed
    /// by a hostile peer would otherwise overflow the stack).
    #[error("value nests deeper than {limit} levels")]
    TooDeep {
        /// The nesting limit ([`MAX_DEPTH`](crate::MAX_DEPTH)).
        limit: usize,
    },
    /// Bytes after the value's end.
    #[error("{count} bytes follow the end of the value")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
}

/// What went wrong besides disconnection and waiting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The encoded value is larger than the channel's limit.
    #[error("value of {size} bytes exceeds the channel's limit of {limit} bytes")]
    TooLarge {
        /// The encoded size.
        size: usize,
        /// The channel's limit ([`Config::limit`](crate::Config::limit)).
        limit: usize,
    },
    /// The value holds more fds than one message carries.
    #[error("value holds {count} file descriptors; one message carries at most {max}")]
    TooManyFds {
        /// fds in the value.
        count: usize,
        /// The most one message carries (253, or 252 with a shared-memory body).
        max: usize,
    },
    /// The value holds fds but the transport cannot carry them.
    #[error("value holds {count} file descriptors but this transport cannot carry any")]
    FdsUnsupported {
        /// fds in the value.
        count: usize,
    },
    /// The value holds fds but the peer said in the handshake that it does
    /// not accept any ([`Config::accept_fds`](crate::Config::accept_fds)).
    #[error("value holds {count} file descriptors but the peer does not accept any")]
    FdsRefused {
        /// fds in the value.
        count: usize,
    },
    /// A frame carried fds but this end does not accept any; they were
    /// closed on arrival and the frame discarded.
    #[error("a frame carried file descriptors but this end does not accept any; they were closed")]
    FdsNotAccepted,
    /// postcard could not encode the value.
    #[error("could not encode the value")]
    Encode(#[source] postcard::Error),
    /// postcard could not decode the body as the receiver's type.
    #[error("could not decode the value")]
    Decode(#[source] postcard::Error),
    /// A field of the value refused the frame (an fd field of the wrong
    /// kind, a channel that is not a socket, ...).
    #[error("value refused: {0}")]
    Refused(String),
    /// The frame broke the wire format.
    #[error("invalid frame")]
    Frame(#[source] FrameError),
    /// The transport failed.
    #[error("transport failed")]
    Io(#[source] io::Error),
}

impl From<FrameError> for ChannelError {
    fn from(e: FrameError) -> Self {
        ChannelError::Frame(e)
    }
}

macro_rules! value_error {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal,)* }) => {
        $(#[$doc])*
        pub enum $name<T> {
            $($(#[$vdoc])* $variant(T),)*
            /// The receiver is gone; the value was not sent.
            Disconnected(T),
            /// Something else failed; the value was not sent.
            Failed(T, ChannelError),
        }

        impl<T> $name<T> {
            /// The value that was not sent, with every fd it owns.
            pub fn into_inner(self) -> T {
                match self {
                    $($name::$variant(v) |)* $name::Disconnected(v) | $name::Failed(v, _) => v,
                }
            }

            /// Whether the receiver is gone.
            pub fn is_disconnected(&self) -> bool {
                matches!(self, $name::Disconnected(_))
            }
        }

        impl<T> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $($name::$variant(_) => f.write_str(concat!(stringify!($variant), "(..)")),)*
                    $name::Disconnected(_) => f.write_str("Disconnected(..)"),
                    $name::Failed(_, e) => f.debug_tuple("Failed").field(&"..").field(e).finish(),
                }
            }
        }

        impl<T> fmt::Display for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $($name::$variant(_) => f.write_str($text),)*
                    $name::Disconnected(_) => f.write_str("sending on a disconnected channel"),
                    $name::Failed(..) => f.write_str("sending failed"),
                }
            }
        }

        impl<T> std::error::Error for $name<T> {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                match self {
                    $name::Failed(_, e) => Some(e),
                    _ => None,
                }
            }
        }
    };
}

value_error! {
    /// Why [`Sender::send`](crate::Sender::send) failed. The value comes back.
    SendError {}
}

value_error! {
    /// Why [`Sender::try_send`](crate::Sender::try_send) failed. The value comes back.
    TrySendError {
        /// The channel is full now.
        Full => "sending on a full channel",
    }
}

value_error! {
    /// Why [`Sender::send_timeout`](crate::Sender::send_timeout) failed. The value comes back.
    SendTimeoutError {
        /// The channel stayed full until the deadline.
        Timeout => "timed out waiting to send on a full channel",
    }
}

macro_rules! recv_error {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, thiserror::Error)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vdoc])* #[error($text)] $variant,)*
            /// Every sender is gone and every message has been received.
            #[error("receiving on an empty and disconnected channel")]
            Disconnected,
            /// A message could not be received; the channel stays usable.
            #[error("receiving failed")]
            Failed(#[source] ChannelError),
        }
    };
}

recv_error! {
    /// Why [`Receiver::recv`](crate::Receiver::recv) failed.
    RecvError {}
}

recv_error! {
    /// Why [`Receiver::try_recv`](crate::Receiver::try_recv) failed.
    TryRecvError {
        /// No message is queued now.
        Empty => "receiving on an empty channel",
    }
}

recv_error! {
    /// Why [`Receiver::recv_timeout`](crate::Receiver::recv_timeout) failed.
    RecvTimeoutError {
        /// No message arrived before the deadline.
        Timeout => "timed out waiting on an empty channel",
    }
}
