//! The frame path of sockets: what [`FrameTransport`](crate::FrameTransport)
//! does for a typed channel on every message.
//!
//! The common frame (one buffer, no fds to send, [`Wait::Block`]) takes one
//! syscall, the checks every message needs, and nothing else: no waiting
//! loop, no message structs, no scatter list. Anything rare (an interrupted
//! call, fds, a message cut short, the end of stream) leaves this path for
//! the general one, out of line.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, OwnedFd};

use nix::libc;
use nix::sys::socket::MsgFlags;

use crate::cmsg::RecvCmsgBuf;
use crate::kind::Kind;
use crate::socket::settle;
use crate::sys::{self, RawRecv};
use crate::{Received, RecvMsg, SendMsg, Socket, Wait, KERNEL_MESSAGE_CEILING, MAX_FDS};

impl<K: Kind> Socket<K> {
    /// Sends `frame` as one message without fds, blocking: send(2) after
    /// the checks of [`send_msg`](Socket::send_msg).
    #[inline]
    pub(crate) fn send_frame_blocking(&self, frame: &[u8]) -> io::Result<()> {
        let size = frame.len();
        if (K::HAS_EOF && size == 0) || size > KERNEL_MESSAGE_CEILING {
            return Err(self.refuse_send(&SendMsg::new(&[IoSlice::new(frame)]), size));
        }
        let fd = self.as_fd();
        loop {
            match sys::send(fd, frame, MsgFlags::empty()) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.explain_send_error(e, size)),
            }
        }
    }

    /// Receives one frame into `buf` with up to `max_fds` fds, blocking:
    /// [`recv_frame`](crate::FrameTransport::recv_frame) under
    /// [`Wait::Block`].
    #[inline]
    pub(crate) fn recv_frame_blocking(
        &self,
        buf: &mut [u8],
        fds: &mut Vec<OwnedFd>,
        max_fds: usize,
    ) -> io::Result<Option<usize>> {
        let fd = self.as_fd();
        let max_fds = max_fds.min(MAX_FDS);
        let capacity = buf.len();
        let done = RecvCmsgBuf::with(|control| {
            let bufs = &mut [IoSliceMut::new(buf)];
            let raw = sys::recvmsg(fd, bufs, control.for_recv(max_fds), None, MsgFlags::empty());
            match raw {
                // Data only, whole, and not the end of stream.
                Ok(RawRecv {
                    len,
                    flags,
                    control_len: 0,
                    ..
                }) if !flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC)
                    && len <= capacity
                    && (len > 0 || !K::HAS_EOF) =>
                {
                    Some(Ok(Some(len)))
                }
                other => self.recv_frame_rare(other, control, capacity, fds, max_fds),
            }
        });
        match done {
            Some(done) => done,
            None => self.recv_frame_waiting(buf, fds, max_fds, Wait::Block),
        }
    }

    /// The rest of [`recv_frame_blocking`](Self::recv_frame_blocking) after
    /// a receive that was not plain data. `None`: nothing was received
    /// (an interrupted call, or `ECONNRESET` on SEQPACKET), try again.
    #[cold]
    #[inline(never)]
    fn recv_frame_rare(
        &self,
        raw: io::Result<RawRecv>,
        control: &RecvCmsgBuf,
        capacity: usize,
        fds: &mut Vec<OwnedFd>,
        max_fds: usize,
    ) -> Option<io::Result<Option<usize>>> {
        match raw {
            Err(e)
                if e.kind() == io::ErrorKind::Interrupted
                    || (K::HAS_EOF && e.raw_os_error() == Some(libc::ECONNRESET)) =>
            {
                None
            }
            Err(e) => Some(Err(e)),
            Ok(raw) => Some(
                settle(&raw, control, fds, max_fds, capacity).and_then(|got| self.frame_end(got)),
            ),
        }
    }

    /// Receives one frame into `buf` under any `wait`.
    pub(crate) fn recv_frame_waiting(
        &self,
        buf: &mut [u8],
        fds: &mut Vec<OwnedFd>,
        max_fds: usize,
        wait: Wait,
    ) -> io::Result<Option<usize>> {
        loop {
            let msg = &mut RecvMsg {
                bufs: &mut [IoSliceMut::new(buf)],
                fds: &mut *fds,
                max_fds,
            };
            match self.recv_msg(msg, wait) {
                Ok(got) => return self.frame_end(got),
                Err(e) if K::HAS_EOF && e.raw_os_error() == Some(libc::ECONNRESET) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// A received message as a frame: `None` for the end of stream, which
    /// on SEQPACKET is an empty message without fds from a peer that has
    /// shut down (`POLLRDHUP`) with nothing left queued (`FIONREAD`).
    fn frame_end(&self, got: Received) -> io::Result<Option<usize>> {
        let fd = self.as_fd();
        if K::HAS_EOF
            && got.len == 0
            && got.fds == 0
            && sys::peer_shut_down(fd)?
            && sys::fionread(fd)? == 0
        {
            return Ok(None);
        }
        Ok(Some(got.len))
    }
}
