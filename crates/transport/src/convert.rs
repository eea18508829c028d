//! Conversions between courier's sockets and plain fds, checked.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use nix::sys::socket::{self, sockopt};

use crate::kind::{Kind, SeqPacket};
use crate::{sys, Listener, Socket, TransportError};

/// An fd that could not become a courier socket, handed back with the
/// reason.
#[derive(Debug, thiserror::Error)]
#[error("file descriptor cannot be used as this courier socket")]
pub struct FromFdError {
    #[source]
    error: io::Error,
    fd: OwnedFd,
}

impl FromFdError {
    /// Why the fd was refused.
    pub fn error(&self) -> &io::Error {
        &self.error
    }

    /// The fd, unchanged.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

impl From<FromFdError> for io::Error {
    fn from(err: FromFdError) -> Self {
        err.error
    }
}

/// The `SO_TYPE` of `fd` (`libc::SOCK_STREAM`, `SOCK_DGRAM`,
/// `SOCK_SEQPACKET`, ...) after checking that it is an AF_UNIX socket: what
/// the checked conversions use, for code that adopts other socket types.
///
/// ```
/// use courier_transport::{unix_socket_type, SeqPacketSocket};
///
/// let (a, _b) = SeqPacketSocket::pair()?;
/// assert_eq!(unix_socket_type(&a)?, nix::libc::SOCK_SEQPACKET);
/// assert!(unix_socket_type(std::fs::File::open("/dev/null")?).is_err());
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
///
/// [`TransportError::NotUnixSocket`] for anything but an AF_UNIX socket.
pub fn unix_socket_type(fd: impl AsFd) -> io::Result<i32> {
    sys::unix_socket_type(fd.as_fd())
}

/// Checks that `fd` is an AF_UNIX socket of type `K`.
fn check_kind<K: Kind>(fd: &OwnedFd) -> io::Result<()> {
    let found = unix_socket_type(fd)?;
    if found != K::RAW_TYPE {
        return Err(TransportError::WrongSocketType {
            expected: K::NAME,
            found,
        }
        .into());
    }
    Ok(())
}

impl<K: Kind> TryFrom<OwnedFd> for Socket<K> {
    type Error = FromFdError;

    /// Adopts `fd` after checking that it is an AF_UNIX socket of type `K`
    /// (`SO_TYPE` and the address family of `getsockname`).
    ///
    /// ```
    /// use std::os::fd::OwnedFd;
    /// use courier_transport::{DatagramSocket, SeqPacketSocket};
    ///
    /// let (a, _b) = SeqPacketSocket::pair()?;
    /// let fd = OwnedFd::from(a);
    /// let err = DatagramSocket::try_from(fd).unwrap_err();
    /// let a = SeqPacketSocket::try_from(err.into_fd())?; // handed back intact
    /// # Ok::<(), std::io::Error>(())
    /// ```
    fn try_from(fd: OwnedFd) -> Result<Self, FromFdError> {
        match check_kind::<K>(&fd) {
            Ok(()) => Ok(Socket::from_fd(fd)),
            Err(error) => Err(FromFdError { error, fd }),
        }
    }
}

impl<K: Kind> From<Socket<K>> for OwnedFd {
    /// The socket's fd. A socket file the socket created stays in place.
    fn from(socket: Socket<K>) -> OwnedFd {
        socket.into_fd()
    }
}

impl TryFrom<OwnedFd> for Listener {
    type Error = FromFdError;

    /// Adopts a listening AF_UNIX `SOCK_SEQPACKET` socket (for example one
    /// inherited from a service manager) and makes its fd non-blocking, as
    /// [`Listener`] needs. The socket file, if any, is not removed on drop.
    fn try_from(fd: OwnedFd) -> Result<Self, FromFdError> {
        let checked = check_kind::<SeqPacket>(&fd).and_then(|()| {
            if !socket::getsockopt(&fd, sockopt::AcceptConn)? {
                return Err(TransportError::NotListening.into());
            }
            sys::set_nonblocking(fd.as_fd(), true)
        });
        match checked {
            Ok(()) => Ok(Listener::from_fd(fd)),
            Err(error) => Err(FromFdError { error, fd }),
        }
    }
}

impl From<Listener> for OwnedFd {
    /// The listener's (non-blocking) fd. A socket file the listener created
    /// stays in place.
    fn from(listener: Listener) -> OwnedFd {
        listener.into_fd()
    }
}
