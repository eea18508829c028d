//! # courier-channel: typed channels between processes
//!
//! Typed channels over AF_UNIX sockets (courier-transport): values are
//! `serde` types encoded with `postcard`; they may carry open file
//! descriptors, other channels, and payloads of hundreds of MiB.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, Debug, PartialEq)]
//! enum Request { Add(i64, i64), Quit }
//!
//! let (tx, rx) = courier_channel::channel::<Request>()?;
//! tx.send(Request::Add(2, 3)).unwrap();
//! assert_eq!(rx.recv().unwrap(), Request::Add(2, 3));
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! ## What you get
//!
//! * [`channel`] → ([`Sender`], [`Receiver`]) over a SEQPACKET socketpair;
//!   [`endpoints`] → two [`Endpoint`]s for request/response over one pair;
//!   [`Config`] for the limit, the inline threshold, and DGRAM.
//! * std/crossbeam vocabulary: `send`, `try_send`, `send_timeout`,
//!   `send_deadline`, `recv`, `try_recv`, `recv_timeout`, `recv_deadline`,
//!   `iter`, `try_iter`, with one error type per operation. A failed send
//!   hands the value back, with its fds. [`RecvError::Disconnected`] comes
//!   only after every queued value has been received.
//! * **File descriptors inside values**: an [`Fd<T>`] field (or any
//!   [`FdType`] field with `#[serde(with = "courier_channel::as_fd")]`)
//!   travels as an fd; the body holds its index in the message's fd table.
//!   Up to 253 fds per message. Sending moves the fd: the sender's copy
//!   closes when the send succeeds.
//! * **Channels inside values**: a [`Sender`], [`Receiver`] or [`Endpoint`]
//!   field travels as its socket and arrives working.
//!
//! ```
//! use courier_channel::{channel, Sender};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Subscribe { topic: String, updates: Sender<String> }
//!
//! let (requests, server) = channel::<Subscribe>()?;
//! let (updates, mine) = channel::<String>()?;
//! requests.send(Subscribe { topic: "weather".into(), updates }).unwrap();
//!
//! let sub = server.recv().unwrap(); // in the real world: another process
//! sub.updates.send(format!("{}: sunny", sub.topic)).unwrap();
//! assert_eq!(mine.recv().unwrap(), "weather: sunny");
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! * **Bytes**: [`Bytes`] encodes a byte buffer as one block instead of
//!   element by element.
//! * **Large values**: over a socket, an encoded value above the inline
//!   threshold (default 64 KiB) is encoded straight into the sending end's
//!   shared ring, a memfd made once (on the first such value), mapped once
//!   by each side and reused; the frame only says where the body is. The
//!   receiver decodes straight out of the ring, copying every byte into its
//!   own memory before it looks at it (a [`Bytes`] or `String` is copied
//!   once, into the buffer the value owns), then frees the space. One copy
//!   on each side: see `docs/benchmarks.md` for what that buys. The ring is
//!   sealed against shrinking and growing, so no peer can make the other
//!   fault with SIGBUS; [`Config::shared_ring`] sizes or disables it.
//!   Values over 2 MiB (without fds, sent by a blocking `send`) are
//!   *streamed*: the frame goes first and the receiver decodes while the
//!   sender encodes, through a ring of 4 MiB however large the value, so
//!   both copies stay in the caches. A value the ring cannot take (larger
//!   than half its cap and not streamed, or sent while it stays full)
//!   travels in a memfd of its own, sealed against writing too. The
//!   receive after a value from the ring polls the socket for up to 50 µs
//!   before it sleeps (where the thread may run on more than one CPU):
//!   large values tend to come one after the other, and neither side then
//!   pays for a sleep and a wake per value.
//!   The limit (default 256 MiB) is checked by the sender and again by the
//!   receiver before anything is mapped or allocated.
//! * Small values allocate nothing per message in steady state: encoding
//!   and receive buffers are reused.
//!
//! ## Connections between processes
//!
//! * **Handshake**: every connection set up by [`Listener`],
//!   [`Endpoint::connect`], [`Endpoint::handshake`] (and the facade's spawn
//!   helper) starts with both sides sending a [`Hello`]: courier's wire
//!   version, the protocol name and version ([`Config::protocol`]), whether
//!   fds are accepted ([`Config::accept_fds`]) and the receive limit. A
//!   mismatch fails with a [`ConnectError`] showing both sides' values; a
//!   peer that does not speak it, or stalls past
//!   [`Config::handshake_timeout`], is dropped. Afterwards a sender refuses
//!   at once what the peer would refuse (a value above its limit, fds to an
//!   end that takes none). The layout is in the `handshake` module docs and
//!   `docs/wire-format.md`.
//! * **Rendezvous**: [`Listener`] accepts on a path or abstract name; the
//!   peer's `SO_PEERCRED` is checked by [`Authorize`] (same uid by default)
//!   before anything is read from it. Refused and failed peers are counted
//!   and reported per accept; the listener keeps going.
//! * **Race-proof end of stream**: dropping the last [`Sender`] of a socket
//!   shuts its writing side down, and dropping a [`Receiver`] its reading
//!   side, so the peer learns even if a stray copy of the fd lives on in
//!   another process (Linux has no close-on-fork). An end that has been put
//!   in a message is not shut down: another process owns it now.
//! * **Request/response**: [`Client::call`] with a timeout, from many
//!   threads at once, replies matched to calls by id; [`Endpoint::serve`]
//!   runs a handler whose errors travel back as typed values.
//!
//! ## Validation
//!
//! Before a value is built, every frame is checked: magic, version, kind,
//! reserved bits, the body length against the frame and the limit, the fd
//! count against the header, each fd index used exactly once, no fd and no
//! byte left over, and nesting at most [`MAX_DEPTH`] levels (so a recursive
//! type cannot be used to overflow the receiver's stack). A frame that fails is discarded, every fd it brought is
//! closed, and the receive returns `Failed` with a [`FrameError`] (or a
//! [`ChannelError::Decode`]). The channel stays usable: SEQPACKET and DGRAM
//! keep message boundaries, so the next frame starts clean.
//!
//! ```
//! use courier_channel::{ChannelError, Config, FrameError, Receiver, RecvError};
//! use courier_transport::SeqPacketSocket;
//!
//! let (raw, sock) = SeqPacketSocket::pair()?;
//! let rx = Receiver::<u64>::from_socket(sock, Config::new());
//! raw.send(b"not a courier frame")?;
//! assert!(matches!(rx.recv(), Err(RecvError::Failed(ChannelError::Frame(FrameError::BadMagic { .. })))));
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! The wire format is specified in `docs/wire-format.md`.
//!
//! ## DGRAM
//!
//! [`Config::datagram`] runs the same channel over a DGRAM socketpair. What
//! you give up: DGRAM has no end of stream, so a receiver is never told
//! that its senders are gone (dropped or dead), and a blocking `recv` would
//! wait forever. What courier does: senders still see the receiver go
//! (`Disconnected`), and receivers have `recv_timeout`/`recv_deadline` to
//! bound every wait. Prefer SEQPACKET unless you need DGRAM.
//!
//! ```
//! use std::time::Duration;
//! use courier_channel::{Config, RecvTimeoutError};
//!
//! let (tx, rx) = Config::new().datagram(true).channel::<u32>()?;
//! tx.send(7).unwrap();
//! drop(tx);
//! assert_eq!(rx.recv_timeout(Duration::from_millis(100)).unwrap(), 7);
//! // No end of stream on DGRAM: the wait is bounded instead.
//! assert!(matches!(rx.recv_timeout(Duration::from_millis(10)), Err(RecvTimeoutError::Timeout)));
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! ## What postcard cannot carry
//!
//! postcard is not self-describing: the receiver must know the exact type.
//! So `#[serde(untagged)]` enums, `#[serde(flatten)]`, internally tagged
//! enums (`#[serde(tag = "...")]`), `serde_json::Value`-like "any" types and
//! `deserialize_any` in general do not work, and `skip_serializing_if`
//! breaks decoding. Use externally tagged enums (serde's default), explicit
//! `Option` fields, and nested structs instead of `flatten`.

#![deny(unsafe_code)]
#![deny(missing_docs)]

mod auth;
mod bytes;
mod channel;
mod codec;
mod config;
mod connect;
mod depth;
mod endpoint;
mod error;
mod fd;
mod fdtable;
mod handshake;
mod large;
mod listener;
mod ring;
mod ringread;
mod rpc;
mod shm;
mod travel;
mod wire;

pub use auth::Authorize;
pub use bytes::Bytes;
pub use channel::{channel, Iter, Receiver, Sender, TryIter};
pub use config::Config;
pub use depth::MAX_DEPTH;
pub use endpoint::{endpoints, Endpoint};
pub use error::{
    ChannelError, FrameError, RecvError, RecvTimeoutError, SendError, SendTimeoutError,
    TryRecvError, TrySendError,
};
pub use fd::{as_fd, Fd, FdType};
pub use handshake::{ConnectError, Hello};
pub use listener::Listener;
pub use rpc::{Call, CallError, Client, Reply, Served};
pub use wire::{HEADER_LEN, MAX_INLINE_FRAME, WIRE_VERSION};

mod assertions {
    use super::*;
    use static_assertions::{assert_impl_all, assert_not_impl_any};

    struct NotSend(#[allow(dead_code)] std::rc::Rc<()>);

    assert_impl_all!(Sender<u64>: Clone, Send, Sync);
    assert_impl_all!(Sender<NotSend>: Clone, Send, Sync);
    assert_impl_all!(Receiver<u64>: Send);
    assert_not_impl_any!(Receiver<u64>: Sync, Clone);
    assert_impl_all!(Endpoint<u64, String>: Send);
    assert_impl_all!(ChannelError: Send, Sync, std::error::Error);
    assert_impl_all!(SendError<std::fs::File>: Send, std::error::Error);
    assert_impl_all!(RecvError: Send, Sync, std::error::Error);
}
