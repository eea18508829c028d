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
//! * [`pipe`] (crate `courier-pipe`): the same frames over pipes, stdio or
//!   any fd-backed byte stream, for hosts without AF_UNIX SEQPACKET (no fds
//!   then).
//!
//! [`Transport::Auto`] picks SEQPACKET where the host has it and pipes
//! where it does not ([`TRANSPORT_ENV`] or [`Transport::Pipe`] force
//! either); [`endpoints_over`], [`channel_over`] and the spawn helpers take
//! it.
//!
//! The facade adds spawning: [`CommandExt::spawn_endpoint`] starts a
//! child with a handshaken [`Endpoint`] to it, race-free (only that child
//! inherits its end), and the child takes its end with [`from_env`];
//! [`CommandExt::spawn_stdio_endpoint`] and [`stdio_endpoint`] do the same
//! over the child's stdin and stdout. See `examples/parent_child.rs`,
//! `examples/plugin_host/` and `examples/stdio_plugin.rs`.
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

mod select;
mod spawn;

pub use select::{channel_over, endpoints_over, Transport, TRANSPORT_ENV};
pub use spawn::{from_env, stdio_endpoint, CommandExt, Spawned, CHANNEL_ENV};

pub use courier_channel as channel;
pub use courier_pipe as pipe;
pub use courier_transport as transport;

pub use courier_channel::{
    as_fd, channel, endpoints, Authorize, Bytes, CallError, ChannelError, Client, Config,
    ConnectError, Endpoint, Fd, FdType, FrameError, Hello, Listener, Receiver, RecvError,
    RecvTimeoutError, SendError, SendTimeoutError, Sender, Served, TryRecvError, TrySendError,
};
pub use courier_transport::{AbstractName, Address, Credentials, PidFd};
