//! [`Listener`]: a bound, listening `SOCK_SEQPACKET` socket.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::PollFlags;
use nix::sys::socket::{self, Backlog, UnixAddr};

use crate::bind::{self, OwnedPath};
use crate::kind::{Kind, SeqPacket};
use crate::wait::{self, Wait};
use crate::{sys, Address, BindOptions, SeqPacketSocket};

/// A `SOCK_SEQPACKET` socket listening on a path or an abstract name.
///
/// The listener's own fd is always non-blocking; the blocking forms of
/// accept wait with `ppoll`, so a connection another thread took first can
/// never leave an accept stuck. Accepted sockets are blocking and
/// close-on-exec.
///
/// A listener that created a socket file removes it on drop, if the file at
/// the path is still the one it created.
///
/// ```
/// use courier_transport::{AbstractName, Address, Listener, SeqPacketSocket};
///
/// let addr = Address::from(AbstractName::random()?);
/// let listener = Listener::bind(&addr)?;
/// let client = SeqPacketSocket::connect(&addr)?;
/// let server = listener.accept()?;
/// client.send(b"hi")?;
/// let mut buf = [0; 8];
/// assert_eq!(server.recv(&mut buf)?, 2);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Listener {
    /// Dropped before `fd`, see [`Socket`](crate::Socket)'s field order.
    path: Option<OwnedPath>,
    fd: OwnedFd,
}

impl Listener {
    /// Listens on `addr` with the default [`BindOptions`] (socket file mode
    /// 0600, backlog 128, stale socket files replaced). Missing directories
    /// above a path socket are created mode 0700, and removed on drop.
    ///
    /// # Errors
    ///
    /// [`TransportError::NotASocket`](crate::TransportError::NotASocket) when
    /// something other than a socket is at the path (it is left untouched);
    /// [`TransportError::AddressInUse`](crate::TransportError::AddressInUse)
    /// when a live socket is bound there; `AddrInUse` for a taken abstract
    /// name; `EACCES`/`ENOENT` for the directory; the length errors of
    /// [`Address`].
    pub fn bind(addr: &Address) -> io::Result<Self> {
        Self::bind_with(addr, &BindOptions::default())
    }

    /// Listens on `addr` with `opts`.
    ///
    /// # Errors
    ///
    /// As [`bind`](Self::bind).
    pub fn bind_with(addr: &Address, opts: &BindOptions) -> io::Result<Self> {
        let fd = sys::socket(SeqPacket::sock_type(), true)?;
        let path = bind::bind(fd.as_fd(), SeqPacket::sock_type(), addr, opts)?;
        let backlog = Backlog::new(opts.get_backlog().max(1)).unwrap_or(Backlog::MAXCONN);
        socket::listen(&fd, backlog)?;
        Ok(Listener { fd, path })
    }

    pub(crate) fn from_fd(fd: OwnedFd) -> Self {
        Listener { fd, path: None }
    }

    /// Accepts one connection, blocking until a peer connects.
    ///
    /// # Errors
    ///
    /// `EMFILE`/`ENFILE` when out of fds (the connection stays queued).
    pub fn accept(&self) -> io::Result<SeqPacketSocket> {
        self.accept_wait(Wait::Block)
    }

    /// Accepts a connection if one is queued.
    ///
    /// # Errors
    ///
    /// As [`accept`](Self::accept), and [`io::ErrorKind::WouldBlock`].
    pub fn try_accept(&self) -> io::Result<SeqPacketSocket> {
        self.accept_wait(Wait::Never)
    }

    /// Accepts one connection, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`accept`](Self::accept), and [`io::ErrorKind::TimedOut`].
    pub fn accept_timeout(&self, timeout: Duration) -> io::Result<SeqPacketSocket> {
        self.accept_wait(Wait::timeout(timeout))
    }

    /// Accepts one connection, waiting until `deadline` at most.
    ///
    /// # Errors
    ///
    /// As [`accept`](Self::accept), and [`io::ErrorKind::TimedOut`].
    pub fn accept_deadline(&self, deadline: Instant) -> io::Result<SeqPacketSocket> {
        self.accept_wait(Wait::Until(deadline))
    }

    /// Accepts one connection under `wait`.
    ///
    /// # Errors
    ///
    /// As [`accept`](Self::accept), and the errors of `wait`.
    pub fn accept_wait(&self, wait: Wait) -> io::Result<SeqPacketSocket> {
        let fd = self.fd.as_fd();
        let conn = wait::run(fd, wait, PollFlags::POLLIN, true, |_| sys::accept(fd))?;
        Ok(SeqPacketSocket::from_fd(conn))
    }

    /// An endless iterator of accepted connections (blocking).
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self }
    }

    /// The address this listener is bound to.
    ///
    /// # Errors
    ///
    /// The kernel's.
    pub fn local_addr(&self) -> io::Result<Address> {
        let addr: UnixAddr = socket::getsockname(self.fd.as_raw_fd())?;
        Ok(Address::from_sockaddr(&addr))
    }

    /// The fd alone; a socket file this listener created is left in place.
    pub(crate) fn into_fd(self) -> OwnedFd {
        let Listener { fd, path } = self;
        if let Some(path) = path {
            path.release();
        }
        fd
    }
}

/// The iterator of [`Listener::incoming`].
#[derive(Debug)]
pub struct Incoming<'a> {
    listener: &'a Listener,
}

impl Iterator for Incoming<'_> {
    type Item = io::Result<SeqPacketSocket>;
    fn next(&mut self) -> Option<Self::Item> {
        Some(self.listener.accept())
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("fd", &self.fd.as_raw_fd())
            .field("path", &self.path.as_ref().map(OwnedPath::path))
            .finish()
    }
}
