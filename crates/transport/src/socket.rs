//! [`Socket`]: a connected (or bound) AF_UNIX message socket, generic over
//! its [`Kind`]. Everything SEQPACKET and DGRAM share lives here, once.

use std::fmt;
use std::io::{self, IoSlice, IoSliceMut};
use std::marker::PhantomData;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::libc;
use nix::poll::PollFlags;
use nix::sys::socket::{self, sockopt, MsgFlags, UnixAddr};
use nix::sys::time::TimeVal;

use crate::bind::OwnedPath;
use crate::cmsg::{self, FullCmsgBuf, RecvCmsgBuf, SmallCmsgBuf, SMALL_FDS};
use crate::kind::{Datagram, Kind, SeqPacket};
use crate::pidfd::PidFd;
use crate::wait::{self, Wait};
use crate::{sys, Address, Credentials, Received, RecvMsg, SendMsg, TransportError, MAX_FDS};

/// The largest single message courier sends, whatever the send buffer size.
///
/// One skb holds at most about 4 MiB of linear data plus `MAX_SKB_FRAGS`
/// pages (measured on x86-64 Linux 6.18: 4,263,616 bytes; other page sizes
/// and kernels differ), and above its real ceiling the kernel fails with a
/// bare ENOBUFS. courier refuses anything above this 4 MiB floor itself,
/// before any syscall, so the limit it documents is the limit it enforces.
pub const KERNEL_MESSAGE_CEILING: usize = 4 << 20;

/// The kernel's per-message overhead charged against `SO_SNDBUF` on AF_UNIX
/// SEQPACKET and DGRAM sockets (`len > sk_sndbuf - 32` is EMSGSIZE).
const SNDBUF_OVERHEAD: usize = 32;

/// An AF_UNIX message socket of kind `K`: [`SeqPacketSocket`] or
/// [`DatagramSocket`].
///
/// All operations take `&self`: a socket may be shared between threads
/// (each send and each receive is one whole message). Every method that can
/// wait comes in four forms: blocking (`send`), non-blocking (`try_send`,
/// [`io::ErrorKind::WouldBlock`]), and bounded (`send_timeout`,
/// `send_deadline`, [`io::ErrorKind::TimedOut`]); the `_msg` forms take a
/// [`Wait`] to say which.
pub struct Socket<K: Kind> {
    /// The socket file this socket created by binding, removed on drop.
    /// Declared before `fd` so it drops first: the open socket keeps the
    /// file's inode alive, so its number cannot be reused by someone
    /// else's file while the ownership check runs.
    path: Option<OwnedPath>,
    fd: OwnedFd,
    kind: PhantomData<fn() -> K>,
}

/// A `SOCK_SEQPACKET` socket: connected, ordered, reliable, message
/// boundaries kept, end-of-stream when the peer goes.
pub type SeqPacketSocket = Socket<SeqPacket>;

/// A `SOCK_DGRAM` socket: message boundaries kept, reliable and ordered on
/// AF_UNIX, but no end-of-stream: see the [crate docs](crate#datagram-sockets-and-peer-death).
pub type DatagramSocket = Socket<Datagram>;

impl<K: Kind> Socket<K> {
    pub(crate) fn from_fd(fd: OwnedFd) -> Self {
        Socket {
            fd,
            path: None,
            kind: PhantomData,
        }
    }

    pub(crate) fn with_path(fd: OwnedFd, path: Option<OwnedPath>) -> Self {
        Socket {
            fd,
            path,
            kind: PhantomData,
        }
    }

    /// The fd alone; a socket file this socket created is left in place.
    pub(crate) fn into_fd(self) -> OwnedFd {
        let Socket { fd, path, kind: _ } = self;
        if let Some(path) = path {
            path.release();
        }
        fd
    }

    /// A connected pair of sockets, both close-on-exec and blocking.
    ///
    /// # Errors
    ///
    /// The kernel's: `EMFILE`/`ENFILE` when out of fds, `EAFNOSUPPORT` or
    /// `EPERM` where the host forbids AF_UNIX sockets.
    pub fn pair() -> io::Result<(Self, Self)> {
        let (a, b) = sys::socketpair(K::sock_type(), false)?;
        Ok((Self::from_fd(a), Self::from_fd(b)))
    }

    /// A connected pair of non-blocking sockets (`SOCK_NONBLOCK`, set
    /// atomically at creation), for use with an event loop.
    ///
    /// # Errors
    ///
    /// As [`pair`](Self::pair).
    pub fn pair_nonblocking() -> io::Result<(Self, Self)> {
        let (a, b) = sys::socketpair(K::sock_type(), true)?;
        Ok((Self::from_fd(a), Self::from_fd(b)))
    }

    /// Connects to the socket bound at `addr`, waiting while a SEQPACKET
    /// listener's backlog is full.
    ///
    /// # Errors
    ///
    /// `ECONNREFUSED` ([`io::ErrorKind::ConnectionRefused`]) when nothing
    /// listens at `addr` (a stale socket file, or no such abstract name),
    /// `ENOENT` when no file exists at the path, `EACCES` without write
    /// permission on a socket file, `EPROTOTYPE` when the socket bound
    /// there is of another type, [`TransportError::UnnamedAddress`] for
    /// [`Address::Unnamed`].
    pub fn connect(addr: &Address) -> io::Result<Self> {
        Self::connect_wait(addr, Wait::Block)
    }

    /// Connects, failing with [`io::ErrorKind::WouldBlock`] instead of waiting
    /// for room in a full backlog.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub fn try_connect(addr: &Address) -> io::Result<Self> {
        Self::connect_wait(addr, Wait::Never)
    }

    /// Connects, waiting at most `timeout` for room in the backlog.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect), and [`io::ErrorKind::TimedOut`].
    pub fn connect_timeout(addr: &Address, timeout: Duration) -> io::Result<Self> {
        Self::connect_wait(addr, Wait::timeout(timeout))
    }

    /// Connects, waiting until `deadline` at most for room in the backlog.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect), and [`io::ErrorKind::TimedOut`].
    pub fn connect_deadline(addr: &Address, deadline: Instant) -> io::Result<Self> {
        Self::connect_wait(addr, Wait::Until(deadline))
    }

    /// Connects under `wait`. The socket returned is blocking.
    ///
    /// A SEQPACKET connect waits only while the listener's backlog is full.
    /// The bounded forms first try once without waiting (so a deadline in
    /// the past still connects when there is room), then let the kernel
    /// wait (`SO_SNDTIMEO`, woken as soon as the listener accepts) while the
    /// deadline is more than [`CONNECT_SLACK`] away, and spend the last
    /// stretch retrying without waiting, with a backoff of at most 1 ms:
    /// the kernel's timeout counts in scheduler ticks (4 ms at HZ=250) and
    /// would overshoot.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub fn connect_wait(addr: &Address, wait: Wait) -> io::Result<Self> {
        let to = addr.to_sockaddr()?;
        let fd = sys::socket(K::sock_type(), wait == Wait::Never)?;
        match wait {
            Wait::Block => retry_eintr(|| socket::connect(fd.as_raw_fd(), &to))?,
            Wait::Never => {
                retry_eintr(|| socket::connect(fd.as_raw_fd(), &to))?;
                sys::set_nonblocking(fd.as_fd(), false)?;
            }
            Wait::Until(deadline) => connect_until(&fd, &to, deadline)?,
        }
        Ok(Self::from_fd(fd))
    }

    // ---- sending -------------------------------------------------------

    /// Sends `buf` as one message, blocking while the socket's buffer is full.
    ///
    /// # Errors
    ///
    /// [`TransportError::MessageTooLarge`] (with both sizes) above
    /// [`max_message_len`](Self::max_message_len);
    /// [`TransportError::EmptyMessage`] for an empty SEQPACKET message;
    /// `EPIPE` ([`io::ErrorKind::BrokenPipe`]) when a SEQPACKET peer is gone
    /// (never SIGPIPE: courier sends with `MSG_NOSIGNAL`); `ECONNREFUSED`
    /// then `ENOTCONN` when a DGRAM peer is gone.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.send_msg(&SendMsg::new(&[IoSlice::new(buf)]), Wait::Block)
    }

    /// Sends `buf` as one message if there is room now.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send), and [`io::ErrorKind::WouldBlock`].
    pub fn try_send(&self, buf: &[u8]) -> io::Result<usize> {
        self.send_msg(&SendMsg::new(&[IoSlice::new(buf)]), Wait::Never)
    }

    /// Sends `buf`, waiting at most `timeout` for room.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send), and [`io::ErrorKind::TimedOut`].
    pub fn send_timeout(&self, buf: &[u8], timeout: Duration) -> io::Result<usize> {
        self.send_msg(&SendMsg::new(&[IoSlice::new(buf)]), Wait::timeout(timeout))
    }

    /// Sends `buf`, waiting until `deadline` at most for room.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send), and [`io::ErrorKind::TimedOut`].
    pub fn send_deadline(&self, buf: &[u8], deadline: Instant) -> io::Result<usize> {
        self.send_msg(&SendMsg::new(&[IoSlice::new(buf)]), Wait::Until(deadline))
    }

    /// Sends `buf` with `fds` (at most [`MAX_FDS`]) as one message, blocking.
    ///
    /// The fds stay open here; the receiver gets its own fds for the same
    /// open file descriptions (shared offset and status flags).
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send), and [`TransportError::TooManyFds`] before any
    /// syscall for more than [`MAX_FDS`] fds; `ETOOMANYREFS` when the
    /// sender has too many fds in flight; `EPERM` when the receiver refuses
    /// fds (Linux 6.16+ `SO_PASSRIGHTS`).
    pub fn send_with_fds(&self, buf: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
        self.send_msg(
            &SendMsg::new(&[IoSlice::new(buf)]).with_fds(fds),
            Wait::Block,
        )
    }

    /// Sends one message (vectored, with fds and credentials) under `wait`.
    ///
    /// # Errors
    ///
    /// As [`send_with_fds`](Self::send_with_fds), and the errors of `wait`.
    #[inline]
    pub fn send_msg(&self, msg: &SendMsg<'_>, wait: Wait) -> io::Result<usize> {
        self.send_msg_to(msg, None, wait)
    }

    // Inlined into its callers, the common message (no fds, one buffer)
    // costs a few comparisons before send(2); the rest is out of line.
    #[inline]
    pub(crate) fn send_msg_to(
        &self,
        msg: &SendMsg<'_>,
        to: Option<&UnixAddr>,
        wait: Wait,
    ) -> io::Result<usize> {
        let size = msg.len();
        if msg.fds.len() > MAX_FDS || (K::HAS_EOF && size == 0) || size > KERNEL_MESSAGE_CEILING {
            return Err(self.refuse_send(msg, size));
        }
        // Most messages carry no ancillary data: no control buffer then;
        // a few fds take a small one.
        let (mut small, mut full);
        let control: &[u8] = if msg.fds.is_empty() && msg.credentials.is_none() {
            &[]
        } else if msg.fds.len() <= SMALL_FDS {
            small = SmallCmsgBuf::new();
            small.encode(msg.fds, msg.credentials)
        } else {
            full = FullCmsgBuf::new();
            full.encode(msg.fds, msg.credentials)
        };
        let fd = self.fd.as_fd();
        let sent = wait::run(fd, wait, PollFlags::POLLOUT, false, |flags| {
            sys::sendmsg(fd, msg.bufs, control, to, flags)
        });
        sent.map_err(|e| self.explain_send_error(e, size))
    }

    /// Why `send_msg_to` refuses `msg` (of `size` bytes) before any send.
    #[cold]
    pub(crate) fn refuse_send(&self, msg: &SendMsg<'_>, size: usize) -> io::Error {
        if msg.fds.len() > MAX_FDS {
            return TransportError::TooManyFds {
                count: msg.fds.len(),
            }
            .into();
        }
        if K::HAS_EOF && size == 0 {
            return TransportError::EmptyMessage.into();
        }
        match self.max_message_len() {
            Ok(limit) => TransportError::MessageTooLarge { size, limit }.into(),
            Err(e) => e,
        }
    }

    /// Turns EMSGSIZE (above `SO_SNDBUF - 32`) into an error that names the
    /// size and the limit; other errors pass unchanged, with no syscall.
    /// ENOBUFS is left alone: sizes above the ceiling never reach the
    /// kernel, so below it ENOBUFS means memory pressure.
    #[cold]
    pub(crate) fn explain_send_error(&self, err: io::Error, size: usize) -> io::Error {
        if err.raw_os_error() != Some(libc::EMSGSIZE) {
            return err;
        }
        match self.max_message_len() {
            Ok(limit) => TransportError::MessageTooLarge { size, limit }.into(),
            Err(_) => err,
        }
    }

    // ---- receiving -----------------------------------------------------

    /// Receives one message into `buf`, blocking until one arrives. Returns
    /// its length; on SEQPACKET, 0 means the peer closed or shut down.
    ///
    /// # Errors
    ///
    /// [`TransportError::Truncated`] when the message is longer than `buf`
    /// (the message is gone: size `buf` with [`peek_len`](Self::peek_len) or
    /// to the protocol's maximum); [`TransportError::FdsTruncated`] when the
    /// message carried fds (they are closed: use
    /// [`recv_with_fds`](Self::recv_with_fds) to accept them);
    /// `ECONNRESET` once on SEQPACKET when the peer closed with messages
    /// we sent still unread (the messages it sent before closing are still
    /// queued here: keep receiving).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.recv_with(buf, Wait::Block)
    }

    /// Receives one message if one is queued.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv), and [`io::ErrorKind::WouldBlock`].
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.recv_with(buf, Wait::Never)
    }

    /// Receives one message, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv), and [`io::ErrorKind::TimedOut`].
    pub fn recv_timeout(&self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        self.recv_with(buf, Wait::timeout(timeout))
    }

    /// Receives one message, waiting until `deadline` at most.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv), and [`io::ErrorKind::TimedOut`].
    pub fn recv_deadline(&self, buf: &mut [u8], deadline: Instant) -> io::Result<usize> {
        self.recv_with(buf, Wait::Until(deadline))
    }

    fn recv_with(&self, buf: &mut [u8], wait: Wait) -> io::Result<usize> {
        let mut fds = Vec::new();
        let msg = &mut RecvMsg {
            bufs: &mut [IoSliceMut::new(buf)],
            fds: &mut fds,
            max_fds: 0,
        };
        Ok(self.recv_msg(msg, wait)?.len)
    }

    /// Receives one message and up to `max_fds` fds (appended to `fds`),
    /// blocking.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv); [`TransportError::FdsTruncated`] when the
    /// message carried more than `max_fds` fds (all of them are closed, and
    /// `fds` is left as it was).
    pub fn recv_with_fds(
        &self,
        buf: &mut [u8],
        fds: &mut Vec<OwnedFd>,
        max_fds: usize,
    ) -> io::Result<Received> {
        self.recv_msg(
            &mut RecvMsg {
                bufs: &mut [IoSliceMut::new(buf)],
                fds,
                max_fds,
            },
            Wait::Block,
        )
    }

    /// Receives one message (scattered, with fds and credentials) under
    /// `wait`.
    ///
    /// On any error, `msg.fds` is left as it was and every fd that arrived
    /// with the failed message is closed.
    ///
    /// # Errors
    ///
    /// As [`recv_with_fds`](Self::recv_with_fds), and the errors of `wait`.
    #[inline]
    pub fn recv_msg(&self, msg: &mut RecvMsg<'_, '_>, wait: Wait) -> io::Result<Received> {
        Ok(self.recv_msg_from(msg, None, wait)?.0)
    }

    #[inline]
    pub(crate) fn recv_msg_from(
        &self,
        msg: &mut RecvMsg<'_, '_>,
        mut name: Option<&mut libc::sockaddr_un>,
        wait: Wait,
    ) -> io::Result<(Received, usize)> {
        let max_fds = msg.max_fds.min(MAX_FDS);
        let fd = self.fd.as_fd();
        let capacity: usize = msg.bufs.iter().map(|b| b.len()).sum();
        RecvCmsgBuf::with(|control| {
            let raw = wait::run(fd, wait, PollFlags::POLLIN, false, |flags| {
                sys::recvmsg(
                    fd,
                    msg.bufs,
                    control.for_recv(max_fds),
                    name.as_deref_mut(),
                    flags,
                )
            })?;
            Ok((
                settle(&raw, control, msg.fds, max_fds, capacity)?,
                raw.name_len,
            ))
        })
    }

    /// The length of the next queued message, which stays queued (0 on
    /// SEQPACKET end of stream, or for an empty DGRAM message).
    ///
    /// Uses `recv(MSG_PEEK | MSG_TRUNC)` with no control buffer, so fds
    /// riding on the message are not installed by the peek.
    ///
    /// # Errors
    ///
    /// The errors of `wait`, and the kernel's.
    pub fn peek_len(&self, wait: Wait) -> io::Result<usize> {
        let fd = self.fd.as_fd();
        wait::run(fd, wait, PollFlags::POLLIN, false, |flags| {
            sys::peek_len(fd, flags)
        })
    }

    // ---- state and options ----------------------------------------------

    /// Shuts down reading, writing or both.
    ///
    /// # Platform-specific behavior
    ///
    /// On SEQPACKET, `Shutdown::Write` gives the peer end-of-stream even while
    /// other copies of this socket's fd exist (in a child, or in flight):
    /// the race-proof way to say "done". On DGRAM it is local only: the
    /// peer is not told.
    ///
    /// # Errors
    ///
    /// `ENOTCONN` when the socket is not connected.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        let how = match how {
            Shutdown::Read => socket::Shutdown::Read,
            Shutdown::Write => socket::Shutdown::Write,
            Shutdown::Both => socket::Shutdown::Both,
        };
        Ok(socket::shutdown(self.fd.as_raw_fd(), how)?)
    }

    /// Sets or clears `O_NONBLOCK`. On a non-blocking socket the blocking
    /// forms fail with [`io::ErrorKind::WouldBlock`] instead of waiting; the
    /// `_timeout` and `_deadline` forms still wait.
    ///
    /// # Errors
    ///
    /// The kernel's (`fcntl`).
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        sys::set_nonblocking(self.fd.as_fd(), nonblocking)
    }

    /// The send buffer size (`SO_SNDBUF`), as the kernel reports it.
    ///
    /// # Errors
    ///
    /// The kernel's.
    pub fn send_buffer_size(&self) -> io::Result<usize> {
        Ok(socket::getsockopt(&self.fd, sockopt::SndBuf)?)
    }

    /// Asks for a send buffer of `size` bytes. The kernel doubles the request
    /// and caps it at `net.core.wmem_max` (unless the caller has
    /// `CAP_NET_ADMIN`, for which courier uses `SO_SNDBUFFORCE`); read the
    /// result with [`send_buffer_size`](Self::send_buffer_size). On SEQPACKET
    /// and DGRAM it bounds both the largest message and the bytes in flight.
    ///
    /// # Errors
    ///
    /// The kernel's.
    pub fn set_send_buffer_size(&self, size: usize) -> io::Result<()> {
        match socket::setsockopt(&self.fd, sockopt::SndBufForce, &size) {
            Ok(()) => Ok(()),
            Err(Errno::EPERM) => Ok(socket::setsockopt(&self.fd, sockopt::SndBuf, &size)?),
            Err(e) => Err(e.into()),
        }
    }

    /// The receive buffer size (`SO_RCVBUF`).
    ///
    /// # Errors
    ///
    /// The kernel's.
    pub fn recv_buffer_size(&self) -> io::Result<usize> {
        Ok(socket::getsockopt(&self.fd, sockopt::RcvBuf)?)
    }

    /// Asks for a receive buffer of `size` bytes (doubled, capped at
    /// `net.core.rmem_max` unless privileged, as for the send buffer).
    ///
    /// # Errors
    ///
    /// The kernel's.
    pub fn set_recv_buffer_size(&self, size: usize) -> io::Result<()> {
        match socket::setsockopt(&self.fd, sockopt::RcvBufForce, &size) {
            Ok(()) => Ok(()),
            Err(Errno::EPERM) => Ok(socket::setsockopt(&self.fd, sockopt::RcvBuf, &size)?),
            Err(e) => Err(e.into()),
        }
    }

    /// The largest message this socket can send now:
    /// `min(SO_SNDBUF - 32, KERNEL_MESSAGE_CEILING)`.
    ///
    /// # Errors
    ///
    /// The kernel's.
    pub fn max_message_len(&self) -> io::Result<usize> {
        let sndbuf = self.send_buffer_size()?;
        Ok(sndbuf
            .saturating_sub(SNDBUF_OVERHEAD)
            .min(KERNEL_MESSAGE_CEILING))
    }

    /// Asks the kernel to stamp every message received from now on with
    /// the sender's credentials (`SO_PASSCRED`), returned in
    /// [`Received::credentials`]. Set it before the peer sends: messages
    /// already queued carry none.
    ///
    /// # Errors
    ///
    /// The kernel's.
    pub fn set_pass_cred(&self, on: bool) -> io::Result<()> {
        Ok(socket::setsockopt(&self.fd, sockopt::PassCred, &on)?)
    }

    /// Whether `SO_PASSCRED` is on.
    ///
    /// # Errors
    ///
    /// The kernel's.
    pub fn pass_cred(&self) -> io::Result<bool> {
        Ok(socket::getsockopt(&self.fd, sockopt::PassCred)?)
    }

    /// Whether this socket accepts fds (`SO_PASSRIGHTS`, on by default).
    /// Turned off, the kernel refuses any message carrying SCM_RIGHTS: the
    /// sender's `sendmsg` fails with `EPERM` and no fd ever reaches this
    /// process. Returns `false` where the kernel lacks the option
    /// (before Linux 6.16); the caller then has to close fds that arrive.
    ///
    /// # Errors
    ///
    /// The kernel's.
    pub fn set_pass_rights(&self, on: bool) -> io::Result<bool> {
        sys::set_pass_rights(self.fd.as_fd(), on)
    }

    /// The peer's pid, uid and gid (`SO_PEERCRED`): a snapshot taken when the
    /// connection or the pair was made.
    ///
    /// # Errors
    ///
    /// `ENOTCONN` on an unconnected DGRAM socket.
    pub fn peer_cred(&self) -> io::Result<Credentials> {
        let c = socket::getsockopt(&self.fd, sockopt::PeerCredentials)?;
        Ok(Credentials::new(c.pid(), c.uid(), c.gid()))
    }

    /// A pidfd for the peer process (`SO_PEERPIDFD`), close-on-exec: it
    /// names the process itself, not a pid that could be reused, and can be
    /// polled for its exit.
    ///
    /// # Platform-specific behavior
    ///
    /// Linux 6.5 and later. `Ok(None)` where the kernel lacks the option.
    ///
    /// # Errors
    ///
    /// `ESRCH` when the peer process has already been reaped; `ENODATA`
    /// when the socket has no peer credentials.
    pub fn peer_pidfd(&self) -> io::Result<Option<PidFd>> {
        match socket::getsockopt(&self.fd, sockopt::PeerPidfd) {
            Ok(fd) => Ok(Some(PidFd::from_owned(fd))),
            Err(Errno::ENOPROTOOPT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The address this socket is bound to.
    ///
    /// # Errors
    ///
    /// The kernel's.
    pub fn local_addr(&self) -> io::Result<Address> {
        let addr: UnixAddr = socket::getsockname(self.fd.as_raw_fd())?;
        Ok(Address::from_sockaddr(&addr))
    }

    /// The address of the connected peer (usually [`Address::Unnamed`]: a
    /// connecting socket rarely binds).
    ///
    /// # Errors
    ///
    /// `ENOTCONN` when not connected.
    pub fn peer_addr(&self) -> io::Result<Address> {
        let addr: UnixAddr = socket::getpeername(self.fd.as_raw_fd())?;
        Ok(Address::from_sockaddr(&addr))
    }

    /// A second handle to the same socket (`F_DUPFD_CLOEXEC`). The copy
    /// does not own a socket file this socket created.
    ///
    /// # Errors
    ///
    /// `EMFILE` when out of fds.
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(Self::from_fd(self.fd.try_clone()?))
    }
}

/// How long before a connect deadline courier stops letting the kernel
/// wait and retries by itself: two ticks of a HZ=100 kernel.
pub const CONNECT_SLACK: Duration = Duration::from_millis(20);

fn retry_eintr(mut op: impl FnMut() -> nix::Result<()>) -> io::Result<()> {
    loop {
        match op() {
            Err(Errno::EINTR) => continue,
            other => return Ok(other?),
        }
    }
}

/// Connects `fd` to `to` before `deadline` (see [`Socket::connect_wait`]),
/// leaving it blocking with no send timeout.
fn connect_until(fd: &OwnedFd, to: &UnixAddr, deadline: Instant) -> io::Result<()> {
    let mut backoff = Duration::from_micros(50);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let kernel_wait = left.checked_sub(CONNECT_SLACK).filter(|w| !w.is_zero());
        sys::set_nonblocking(fd.as_fd(), kernel_wait.is_none())?;
        if let Some(w) = kernel_wait {
            let tv = TimeVal::new(w.as_secs() as _, w.subsec_micros().max(1) as _);
            socket::setsockopt(fd, sockopt::SendTimeout, &tv)?;
        }
        match socket::connect(fd.as_raw_fd(), to) {
            Ok(()) => break,
            Err(Errno::EINTR | Errno::EAGAIN | Errno::EINPROGRESS) => {}
            Err(e) => return Err(e.into()),
        }
        if kernel_wait.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            std::thread::sleep(backoff.min(left));
            backoff = (backoff * 2).min(Duration::from_millis(1));
        }
    }
    sys::set_nonblocking(fd.as_fd(), false)?;
    socket::setsockopt(fd, sockopt::SendTimeout, &TimeVal::new(0, 0))?;
    Ok(())
}

impl<K: Kind> AsFd for Socket<K> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl<K: Kind> AsRawFd for Socket<K> {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

impl<K: Kind> fmt::Debug for Socket<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Socket")
            .field("kind", &K::NAME)
            .field("fd", &self.fd.as_raw_fd())
            .field("path", &self.path.as_ref().map(OwnedPath::path))
            .finish()
    }
}

/// What one recvmsg(2) that returned `raw` delivered: the fds it carried
/// (appended to `fds`) and the credentials. A message or fds cut short
/// (more than `max_fds`, more than `capacity` bytes) is an error instead,
/// with every fd that arrived closed and `fds` as it was.
#[inline]
pub(crate) fn settle(
    raw: &sys::RawRecv,
    control: &RecvCmsgBuf,
    fds: &mut Vec<OwnedFd>,
    max_fds: usize,
    capacity: usize,
) -> io::Result<Received> {
    let before = fds.len();
    // Most messages carry no ancillary data at all.
    let credentials = match raw.control_len {
        0 => None,
        len => cmsg::decode(control.received(len), fds),
    };
    let got = fds.len() - before;
    let truncated = MsgFlags::MSG_CTRUNC | MsgFlags::MSG_TRUNC;
    if raw.flags.intersects(truncated) || got > max_fds || raw.len > capacity {
        fds.truncate(before); // closes what arrived
        return Err(truncation(raw, got, max_fds, capacity));
    }
    Ok(Received {
        len: raw.len,
        fds: got,
        credentials,
    })
}

/// The error for a message that did not fit: its fds (first), or its bytes.
#[cold]
fn truncation(raw: &sys::RawRecv, fds: usize, max_fds: usize, capacity: usize) -> io::Error {
    if raw.flags.contains(MsgFlags::MSG_CTRUNC) || fds > max_fds {
        TransportError::FdsTruncated {
            limit: max_fds,
            received: fds,
        }
        .into()
    } else {
        TransportError::Truncated {
            len: raw.len,
            capacity,
            fds,
        }
        .into()
    }
}
