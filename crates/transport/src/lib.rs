//! # courier-transport: safe AF_UNIX message sockets
//!
//! The core of [courier](https://crates.io/crates/courier): AF_UNIX
//! `SOCK_SEQPACKET` and `SOCK_DGRAM` sockets that carry whole messages,
//! file descriptors (SCM_RIGHTS) and credentials (SCM_CREDENTIALS), with the
//! flags that are easy to forget always set:
//!
//! * every socket is `SOCK_CLOEXEC`, every receive is `MSG_CMSG_CLOEXEC`, so
//!   no fd courier creates or receives leaks into a child across `exec`;
//! * every send is `MSG_NOSIGNAL`: writing to a closed peer returns `EPIPE`,
//!   it never kills the process with SIGPIPE;
//! * every fd is an [`OwnedFd`](std::os::fd::OwnedFd) or
//!   [`BorrowedFd`](std::os::fd::BorrowedFd) from the moment the syscall
//!   returns; fds that arrive with a message the caller cannot take are
//!   closed, never leaked;
//! * truncation is never silent: a message too long for the buffer
//!   ([`TransportError::Truncated`]) or carrying more fds than accepted
//!   ([`TransportError::FdsTruncated`]) is an error.
//!
//! ## Which socket for what
//!
//! | you want | use |
//! |---|---|
//! | two connected ends, e.g. parent and child | [`SeqPacketSocket::pair`] |
//! | a service others connect to by name | [`Listener::bind`] + [`SeqPacketSocket::connect`] |
//! | one socket receiving from many senders, no connections | [`DatagramSocket::bind`], [`DatagramSocket::send_to`] |
//! | frames for a higher layer (courier's typed channels) | the [`FrameTransport`] trait |
//!
//! `SOCK_SEQPACKET` is the default choice: message boundaries are kept, and
//! the peer going away is seen as end of stream (a zero-length read) after
//! everything it sent has been read.
//!
//! ```
//! use std::os::fd::AsFd;
//! use courier_transport::SeqPacketSocket;
//!
//! let (parent, child) = SeqPacketSocket::pair()?;
//! let (reader, writer) = std::io::pipe()?;
//! parent.send_with_fds(b"write here", &[writer.as_fd()])?;
//! drop(writer);
//!
//! let mut buf = [0; 64];
//! let mut fds = Vec::new();
//! let got = child.recv_with_fds(&mut buf, &mut fds, 1)?;
//! assert_eq!(&buf[..got.len], b"write here");
//! let mut pipe = std::fs::File::from(fds.pop().unwrap());
//! std::io::Write::write_all(&mut pipe, b"hello")?;
//! drop(pipe);
//! let mut out = String::new();
//! std::io::Read::read_to_string(&mut { reader }, &mut out)?;
//! assert_eq!(out, "hello");
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! ## Addresses
//!
//! An [`Address`] is a filesystem path, a Linux abstract name
//! ([`AbstractName`], an exact byte string with no file and no permission
//! check), or unnamed. Path sockets are created with mode 0600 whatever the
//! umask ([`BindOptions::mode`] changes it); a stale socket file nobody
//! listens on is replaced; something that is not a socket is never removed;
//! the file is removed on drop if it is still the one the bind created.
//! Missing directories above the socket file are created mode 0700 (only
//! the owner can enter them) and removed again on drop when empty.
//! Abstract names are reachable by anyone in the network namespace: use
//! [`AbstractName::random`] and check [`Socket::peer_cred`].
//!
//! ## Processes
//!
//! [`inherit`] hands one fd to one spawned child, race-free: every courier
//! fd is close-on-exec, and only the chosen child clears that flag, between
//! its `fork` and `exec`. [`PidFd`] names a process for waiting on its
//! death ([`PidFd::open`] for a child, [`Socket::peer_pidfd`] for a peer).
//!
//! ## Waiting
//!
//! Each operation that can wait has a blocking form (`send`), a `try_` form
//! that fails with [`std::io::ErrorKind::WouldBlock`], and `_timeout` /
//! `_deadline` forms that fail with [`std::io::ErrorKind::TimedOut`]; the
//! `_msg` forms take a [`Wait`]. A deadline is never returned early.
//! Sends, receives and accepts wait with `ppoll` (nanosecond resolution),
//! so their deadlines are kept to the microsecond, scheduling permitting;
//! a connect that waits for room in a full backlog lets the kernel wait
//! (tick resolution) until [`CONNECT_SLACK`] before the deadline, then
//! retries with a backoff of at most 1 ms.
//!
//! ## Sizes and limits
//!
//! * One message carries at most [`MAX_FDS`] (253, the kernel's
//!   SCM_MAX_FD) fds; more is refused before any syscall.
//! * One message is at most `SO_SNDBUF - 32` bytes (212,960 by default) and
//!   never more than 4 MiB ([`KERNEL_MESSAGE_CEILING`]), whatever the
//!   buffer. [`Socket::max_message_len`] says the current limit,
//!   [`Socket::set_send_buffer_size`] raises the first, and a send above
//!   the limit fails with [`TransportError::MessageTooLarge`] naming both
//!   numbers. Bulk data belongs in shared memory passed as one fd.
//! * A zero-length SEQPACKET message reads exactly like end of stream, so
//!   courier refuses to send one ([`TransportError::EmptyMessage`]).
//! * Received fds count against `RLIMIT_NOFILE`: a receiver at its limit
//!   gets [`TransportError::FdsTruncated`] (the kernel dropped some).
//!
//! ## Datagram sockets and peer death
//!
//! A `SOCK_DGRAM` socketpair has no connection state: when the peer closes,
//! the survivor gets no end of stream and no POLLHUP, a blocking receive
//! waits forever, and its next send fails with `ECONNREFUSED` (then
//! `ENOTCONN`). Use bounded receives ([`Socket::recv_timeout`]), or another
//! liveness signal such as the peer's pidfd ([`Socket::peer_pidfd`]).
//! `shutdown` on a DGRAM socket is local only.
//!
//! ## Credentials
//!
//! [`Socket::peer_cred`] is the peer's pid/uid/gid as of connect (for a
//! pair made before `fork`, the process that made it);
//! [`Socket::set_pass_cred`] stamps each received message with its
//! sender's; [`Socket::peer_pidfd`] gives a pidfd for the peer where the
//! kernel has `SO_PEERPIDFD` (Linux 6.5+), and `None` elsewhere.
//!
//! # Platform-specific behavior
//!
//! Written for Linux, the only platform tested. Abstract names, `SO_PEERCRED`,
//! `SCM_CREDENTIALS`, `SO_PEERPIDFD` and `MSG_CMSG_CLOEXEC` are Linux
//! features.

#![deny(unsafe_code)]
#![deny(missing_docs)]

mod addr;
mod bind;
mod cmsg;
mod convert;
mod cred;
mod dgram;
mod error;
mod fast;
mod frame;
mod inherit;
pub mod kind;
mod listener;
mod msg;
mod pidfd;
pub mod pipe;
mod socket;
mod sys;
mod wait;

pub use addr::{AbstractName, Address};
pub use bind::BindOptions;
pub use convert::{unix_socket_type, FromFdError};
pub use cred::Credentials;
pub use error::TransportError;
pub use frame::FrameTransport;
pub use inherit::{adopt_inherited, adopt_inherited_fd, check_inherited_fd, inherit, InheritedFd};
pub use kind::Kind;
pub use listener::{Incoming, Listener};
pub use msg::{Received, RecvMsg, SendMsg, MAX_FDS};
pub use pidfd::PidFd;
pub use socket::{DatagramSocket, SeqPacketSocket, Socket, CONNECT_SLACK, KERNEL_MESSAGE_CEILING};
pub use wait::Wait;

mod assertions {
    use super::*;
    use static_assertions::{assert_impl_all, assert_not_impl_any};
    use std::os::fd::{AsFd, OwnedFd};

    assert_impl_all!(SeqPacketSocket: Send, Sync, AsFd, std::fmt::Debug, TryFrom<OwnedFd>, Into<OwnedFd>);
    assert_impl_all!(DatagramSocket: Send, Sync, AsFd, std::fmt::Debug, TryFrom<OwnedFd>, Into<OwnedFd>);
    assert_impl_all!(Listener: Send, Sync, AsFd, std::fmt::Debug, TryFrom<OwnedFd>, Into<OwnedFd>);
    assert_impl_all!(SeqPacketSocket: FrameTransport);
    assert_impl_all!(DatagramSocket: FrameTransport);
    assert_impl_all!(TransportError: Send, Sync, std::error::Error);
    assert_impl_all!(FromFdError: Send, Sync, std::error::Error);
    assert_impl_all!(PidFd: Send, Sync, AsFd, std::fmt::Debug);
    assert_impl_all!(InheritedFd: Send, Sync, std::fmt::Debug);
    // Copies of a socket are explicit (`try_clone`), never implicit.
    assert_not_impl_any!(SeqPacketSocket: Clone, Copy);
    assert_not_impl_any!(Listener: Clone, Copy);
}
