//! # courier: typed message-passing IPC for processes on one machine
//!
//! courier lets processes on one machine — a parent and the child it spawns,
//! a host and its plugins — exchange messages that may carry open file
//! descriptors.
//!
//! The workspace is layered; this facade re-exports it:
//!
//! * [`transport`] (crate `courier-transport`): safe AF_UNIX `SOCK_SEQPACKET`
//!   and `SOCK_DGRAM` sockets, path and abstract addresses, fd and
//!   credential passing, with close-on-exec and no-SIGPIPE always on.
//! * [`channel`](mod@channel) (crate `courier-channel`): typed channels (serde +
//!   postcard) whose values carry fds, other channels and large payloads;
//!   its main items are re-exported at the root ([`channel()`],
//!   [`Sender`], [`Receiver`], [`Endpoint`], [`Fd`], [`Bytes`], ...).
//!
//! The facade adds spawning: [`CommandExt::spawn_endpoint`] starts a
//! child with a handshaken [`Endpoint`] to it, race-free (only that child
//! inherits its end), and the child takes its end with [`from_env`]. See
//! `examples/parent_child.rs` and `examples/plugin_host/`.
//!
//! ```
//! use courier::transport::SeqPacketSocket;
//!
//! let (a, b) = SeqPacketSocket::pair()?;
//! a.send(b"hello")?;
//! let mut buf = [0; 16];
//! let n = b.recv(&mut buf)?;
//! assert_eq!(&buf[..n], b"hello");
//! # Ok::<(), std::io::Error>(())
//! ```

#![deny(unsafe_code)]
#![deny(missing_docs)]

mod spawn;

pub use spawn::{from_env, CommandExt, Spawned, CHANNEL_ENV};

pub use courier_channel as channel;
pub use courier_transport as transport;

pub use courier_channel::{
    as_fd, channel, endpoints, Authorize, Bytes, CallError, ChannelError, Client, Config,
    ConnectError, Endpoint, Fd, FdType, FrameError, Hello, Listener, Receiver, RecvError,
    RecvTimeoutError, SendError, SendTimeoutError, Sender, Served, TryRecvError, TrySendError,
};
pub use courier_transport::{AbstractName, Address, Credentials, PidFd};
