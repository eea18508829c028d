//! What one send takes and what one receive gives.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{BorrowedFd, OwnedFd};

use crate::Credentials;

/// The largest number of fds one message can carry: the kernel's
/// `SCM_MAX_FD`. Sending more fails with
/// [`TransportError::TooManyFds`](crate::TransportError::TooManyFds) before
/// any syscall.
pub const MAX_FDS: usize = 253;

/// One message to send: scattered bytes, borrowed fds and optional explicit
/// credentials.
///
/// ```
/// use std::io::IoSlice;
/// use std::os::fd::AsFd;
/// use courier_transport::{SendMsg, SeqPacketSocket, Wait};
///
/// let (a, b) = SeqPacketSocket::pair()?;
/// let file = std::fs::File::open("/dev/null")?;
/// let bufs = [IoSlice::new(b"head"), IoSlice::new(b"-tail")];
/// let fds = [file.as_fd()];
/// a.send_msg(&SendMsg::new(&bufs).with_fds(&fds), Wait::Block)?;
/// let mut buf = [0; 16];
/// let mut got = Vec::new();
/// let n = b.recv_with_fds(&mut buf, &mut got, 1)?.len;
/// assert_eq!(&buf[..n], b"head-tail");
/// assert_eq!(got.len(), 1);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct SendMsg<'a> {
    /// The message bytes, gathered from these slices in order.
    pub bufs: &'a [IoSlice<'a>],
    /// Fds to pass (at most [`MAX_FDS`]); the receiver gets new fds for the
    /// same open file descriptions.
    pub fds: &'a [BorrowedFd<'a>],
    /// Explicit SCM_CREDENTIALS. Unprivileged senders may only send their
    /// own ([`Credentials::current`]); when absent and the receiver asked for
    /// credentials, the kernel stamps the sender's anyway.
    pub credentials: Option<Credentials>,
}

impl<'a> SendMsg<'a> {
    /// A message of these bytes with no fds.
    #[inline]
    pub fn new(bufs: &'a [IoSlice<'a>]) -> Self {
        SendMsg {
            bufs,
            fds: &[],
            credentials: None,
        }
    }

    /// The same message carrying `fds`.
    pub fn with_fds(self, fds: &'a [BorrowedFd<'a>]) -> Self {
        SendMsg { fds, ..self }
    }

    /// The same message carrying explicit credentials.
    pub fn with_credentials(self, credentials: Credentials) -> Self {
        SendMsg {
            credentials: Some(credentials),
            ..self
        }
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.bufs.iter().map(|b| b.len()).sum()
    }
}

/// Where one receive puts a message.
#[derive(Debug)]
pub struct RecvMsg<'a, 'b> {
    /// The message bytes are scattered into these slices in order.
    pub bufs: &'a mut [IoSliceMut<'b>],
    /// Received fds are appended here, owned and close-on-exec.
    pub fds: &'a mut Vec<OwnedFd>,
    /// The most fds this receive accepts (capped at [`MAX_FDS`]). A message
    /// carrying more is an error and every fd it carried is closed.
    pub max_fds: usize,
}

/// What one receive got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Received {
    /// Bytes received. On a SOCK_SEQPACKET socket, 0 means end of stream
    /// (courier never sends empty SEQPACKET messages).
    pub len: usize,
    /// Fds appended to the caller's vector.
    pub fds: usize,
    /// The sender's credentials, stamped by the kernel, when this socket has
    /// [`set_pass_cred`](crate::Socket::set_pass_cred) on.
    ///
    /// A message sent while neither side had `SO_PASSCRED` on carries no
    /// sender: the kernel reports it as pid 0 with the overflow uid and gid
    /// (`/proc/sys/kernel/overflowuid`, usually 65534). Pid 0 also means
    /// the sender is outside this pid namespace.
    pub credentials: Option<Credentials>,
}
