//! [`FrameTransport`]: the small interface the typed channel and the pipe
//! fallback both build on.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::libc;

use crate::kind::Kind;
use crate::{SendMsg, Socket, Wait};

/// Something that moves whole frames (byte strings with their fds) between
/// two endpoints: a SEQPACKET or DGRAM [`Socket`], or a byte stream with
/// framing on top.
///
/// A frame is never empty. Sending and receiving take `&self`, so one
/// transport can be shared by several senders; implementations keep each
/// frame whole.
///
/// ```
/// use std::io::IoSlice;
/// use courier_transport::{FrameTransport, SeqPacketSocket, Wait};
///
/// let (a, b) = SeqPacketSocket::pair()?;
/// a.send_frame(&[IoSlice::new(b"frame")], &[], Wait::Block)?;
/// let mut buf = Vec::new();
/// let mut fds = Vec::new();
/// assert_eq!(b.recv_frame(&mut buf, 64, &mut fds, 0, Wait::Block)?, Some(5));
/// assert_eq!(&buf[..5], b"frame");
/// drop(a);
/// assert_eq!(b.recv_frame(&mut buf, 64, &mut fds, 0, Wait::Block)?, None);
/// # Ok::<(), std::io::Error>(())
/// ```
pub trait FrameTransport: Send + Sync {
    /// Whether frames can carry fds. A transport that cannot refuses a send
    /// with fds instead of dropping them.
    fn supports_fds(&self) -> bool;

    /// The largest frame [`send_frame`](Self::send_frame) can send now.
    ///
    /// # Errors
    ///
    /// When the transport cannot tell (a failed `getsockopt`).
    fn max_frame_len(&self) -> io::Result<usize>;

    /// Sends one frame, the concatenation of `frame`, with `fds`.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::BrokenPipe`] (or `ConnectionRefused`/`NotConnected`
    /// on DGRAM) once the peer is gone; the errors of `wait`; a frame too
    /// large, empty, or with too many fds.
    fn send_frame(
        &self,
        frame: &[IoSlice<'_>],
        fds: &[BorrowedFd<'_>],
        wait: Wait,
    ) -> io::Result<()>;

    /// Receives one frame of at most `max_len` bytes into `buf[..len]`,
    /// returning `len`, and up to `max_fds` fds into `fds`. `Ok(None)`
    /// means the peer is gone and everything it sent has been received.
    ///
    /// The transport may grow `buf` up to `max_len`, or swap in a buffer of
    /// its own: allocation is its business, bounded by `max_len`, and `buf`
    /// is kept and reused by the caller.
    ///
    /// # Errors
    ///
    /// [`TransportError::Truncated`](crate::TransportError::Truncated) for
    /// a frame longer than `max_len`, and
    /// [`TransportError::FdsTruncated`](crate::TransportError::FdsTruncated)
    /// for one with more than `max_fds` fds: it is discarded and its fds
    /// closed, and the transport stays usable. The errors of `wait`.
    fn recv_frame(
        &self,
        buf: &mut Vec<u8>,
        max_len: usize,
        fds: &mut Vec<OwnedFd>,
        max_fds: usize,
        wait: Wait,
    ) -> io::Result<Option<usize>>;

    /// The fd to poll for readability before [`recv_frame`](Self::recv_frame).
    fn readable_fd(&self) -> BorrowedFd<'_>;

    /// The fd to poll for writability before [`send_frame`](Self::send_frame).
    fn writable_fd(&self) -> BorrowedFd<'_>;

    /// Tells the peer this side is done, even if copies of the underlying fd
    /// survive elsewhere (in a child that inherited it, in flight in a
    /// message): `Write` ends its receiving, `Read` ends its sending. The
    /// default does nothing, for transports with no such notion.
    ///
    /// # Errors
    ///
    /// The kernel's.
    fn shutdown(&self, how: std::net::Shutdown) -> io::Result<()> {
        let _ = how;
        Ok(())
    }
}

impl<K: Kind> FrameTransport for Socket<K> {
    fn supports_fds(&self) -> bool {
        true
    }

    fn max_frame_len(&self) -> io::Result<usize> {
        self.max_message_len()
    }

    #[inline]
    fn send_frame(
        &self,
        frame: &[IoSlice<'_>],
        fds: &[BorrowedFd<'_>],
        wait: Wait,
    ) -> io::Result<()> {
        match (frame, fds, wait) {
            ([one], [], Wait::Block) => self.send_frame_blocking(one),
            _ => self
                .send_msg(&SendMsg::new(frame).with_fds(fds), wait)
                .map(drop),
        }
    }

    /// On SEQPACKET, `ECONNRESET` (the peer closed with our messages unread)
    /// is skipped: the messages the peer sent before closing are still
    /// queued, and end of stream comes after them. A zero-length read is
    /// end of stream only when the peer has really shut down
    /// (`POLLRDHUP`) and nothing is left queued (`FIONREAD`, which on
    /// SEQPACKET counts the bytes of every queued message); an empty
    /// message from a live peer, or from one that left with frames queued
    /// behind it, is returned as `Some(0)` for the caller to reject. (An
    /// empty message without fds followed only by empty messages from a
    /// departed peer cannot be told from the end of stream.)
    #[inline]
    fn recv_frame(
        &self,
        buf: &mut Vec<u8>,
        max_len: usize,
        fds: &mut Vec<OwnedFd>,
        max_fds: usize,
        wait: Wait,
    ) -> io::Result<Option<usize>> {
        if buf.len() < max_len {
            buf.resize(max_len, 0); // once: the caller keeps the buffer
        }
        let buf = &mut buf[..max_len];
        match wait {
            Wait::Block => self.recv_frame_blocking(buf, fds, max_fds),
            wait => self.recv_frame_waiting(buf, fds, max_fds, wait),
        }
    }

    fn readable_fd(&self) -> BorrowedFd<'_> {
        self.as_fd()
    }

    fn writable_fd(&self) -> BorrowedFd<'_> {
        self.as_fd()
    }

    /// `shutdown(2)`; on an unconnected socket or a peer already gone
    /// (`ENOTCONN`) there is nothing to tell, and it succeeds.
    fn shutdown(&self, how: std::net::Shutdown) -> io::Result<()> {
        match Socket::shutdown(self, how) {
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Ok(()),
            other => other,
        }
    }
}
