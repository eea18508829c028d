//! The write side: whole frames, one writer at a time, never SIGPIPE.
//!
//! **No interleaving.** A frame is the 4-byte length prefix and the frame,
//! written with `writev` and completed after partial writes, all while the
//! writer holds this end's lock: frames of any size from the threads of one
//! process never interleave. The kernel makes writes of up to `PIPE_BUF`
//! (4096) bytes atomic, and no more: two *processes* writing frames larger
//! than that into one pipe would interleave, so a pipe end belongs to one
//! process (courier's pipe ends are close-on-exec and cannot travel in a
//! message, so it takes a deliberate `dup` across a `fork` to break this).
//!
//! **No SIGPIPE.** Writes go through
//! [`courier_transport::pipe::write_vectored`], which cannot raise SIGPIPE
//! whatever the process's disposition: a reader that went away is a
//! `BrokenPipe` error, which the channel reports as `Disconnected`.
//!
//! **Waiting without `O_NONBLOCK`.** A blocking send just writes. A `try_`
//! or deadline send to a pipe never writes part of a frame and then waits:
//! a frame of at most `PIPE_BUF` (4096) bytes including its prefix takes at
//! most one new page, so it is written once `poll` says a page is free
//! (`POLLOUT`), with `pwritev2(RWF_NOWAIT)` so that nothing is written
//! unless all of it is. A larger frame is written only into an empty pipe
//! (`FIONREAD` 0): how many pages the queued bytes occupy is not knowable
//! (the kernel starts a new page for a write whose tail does not fit the
//! last one), but an empty pipe takes any frame up to its capacity whole.
//! A frame larger than the pipe itself is refused by `try_` sends, and
//! started by deadline sends into the empty pipe, then written as the
//! reader makes room; should the deadline pass inside it, the frame cannot
//! be taken back, so the write end is released (the peer sees a torn frame
//! and the end of the stream) instead of waiting on. Waiting for another
//! thread's frame to finish counts against the deadline too. `O_NONBLOCK`, which
//! would change stdin/stdout for every process sharing them, is never set.
//! On other streams (sockets, ttys) waiting means `POLLOUT`.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::{Duration, Instant};

use courier_transport::{TransportError, Wait};
use nix::poll::PollFlags;

use crate::io::{back_off, not_ready, ready};
use crate::PREFIX_LEN;

/// Writes up to this size are atomic on a pipe.
const PIPE_BUF: usize = 4096;

/// Frames (prefix included) up to this size are copied into one buffer on
/// the stack before a blocking write.
const SMALL_FRAME: usize = 128;

/// Frames (prefix included) up to this size, in one slice, take the
/// shortest path (a small value's frame is 21 to 30 bytes).
const TINY_FRAME: usize = 64;

pub(crate) struct Writer {
    fd: OwnedFd,
    /// The pipe's capacity in bytes; `None` when the fd is not a pipe.
    capacity: Option<usize>,
    /// Guards whole frames, and `shut` (set under it).
    lock: Mutex<()>,
    /// The write end was released ([`Writer::shut_down`]).
    shut: AtomicBool,
}

impl Writer {
    pub(crate) fn new(fd: OwnedFd, capacity: Option<usize>) -> Self {
        Writer {
            fd,
            capacity,
            lock: Mutex::new(()),
            shut: AtomicBool::new(false),
        }
    }

    /// Releases the write end, between frames, as closing it would.
    pub(crate) fn shut_down(&self) -> io::Result<()> {
        let _turn = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        if !self.shut.swap(true, Ordering::AcqRel) {
            courier_transport::pipe::detach(&self.fd)?;
        }
        Ok(())
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub(crate) fn capacity(&self) -> Option<usize> {
        self.capacity
    }

    /// Writes the length prefix and `frame` as one whole frame.
    #[inline]
    pub(crate) fn send(&self, frame: &[IoSlice<'_>], wait: Wait) -> io::Result<()> {
        match (frame, wait) {
            ([body], Wait::Block) if (1..=TINY_FRAME - PREFIX_LEN).contains(&body.len()) => {
                self.send_tiny(body)
            }
            _ => self.send_any(frame, wait),
        }
    }

    /// [`send`](Self::send) of one small slice that may block, the common
    /// frame (a small value): gathered with its prefix into a buffer on the
    /// stack and written with one call, under the lock.
    #[inline]
    fn send_tiny(&self, body: &[u8]) -> io::Result<()> {
        let total = PREFIX_LEN + body.len();
        let mut buf = [0u8; TINY_FRAME];
        // At most TINY_FRAME bytes, so the length fits the prefix.
        buf[..PREFIX_LEN].copy_from_slice(&(body.len() as u32).to_le_bytes());
        buf[PREFIX_LEN..total].copy_from_slice(body);
        let whole = &buf[..total];
        let _turn = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        if self.shut.load(Ordering::Acquire) {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        self.write_whole(whole)
    }

    /// Writes a frame gathered in one buffer: one call, and should that
    /// write part (or be interrupted), the rest as for any frame.
    #[inline]
    fn write_whole(&self, whole: &[u8]) -> io::Result<()> {
        match courier_transport::pipe::write_vectored(self.fd(), &[IoSlice::new(whole)]) {
            Ok(n) if n == whole.len() => Ok(()),
            Ok(n) => write_all(self.fd(), &mut [IoSlice::new(&whole[n..])]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) =>
            {
                write_all(self.fd(), &mut [IoSlice::new(whole)])
            }
            Err(e) => Err(e),
        }
    }

    /// [`send`](Self::send) of any frame.
    #[inline(never)]
    fn send_any(&self, frame: &[IoSlice<'_>], wait: Wait) -> io::Result<()> {
        let len: usize = frame.iter().map(|b| b.len()).sum();
        if len == 0 {
            return Err(TransportError::EmptyMessage.into());
        }
        let prefix = u32::try_from(len)
            .map_err(|_| TransportError::MessageTooLarge {
                size: len,
                limit: u32::MAX as usize,
            })?
            .to_le_bytes();
        // A panic in another writer cannot have left a frame half written
        // that this one could fix: the lock guards no data.
        let _turn = self.lock_within(wait)?;
        if self.shut.load(Ordering::Acquire) {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let total = PREFIX_LEN + len;
        if total <= SMALL_FRAME && wait == Wait::Block {
            // A small frame is gathered here and written from one buffer:
            // the kernel then imports no vector of slices.
            let mut buf = [0u8; SMALL_FRAME];
            buf[..PREFIX_LEN].copy_from_slice(&prefix);
            let mut at = PREFIX_LEN;
            for slice in frame {
                buf[at..at + slice.len()].copy_from_slice(slice);
                at += slice.len();
            }
            return self.write_whole(&buf[..total]);
        }
        let mut few = [IoSlice::new(&[]); 4];
        let mut all;
        let slices: &mut [IoSlice<'_>] = if frame.len() < few.len() {
            few[0] = IoSlice::new(&prefix);
            few[1..=frame.len()].copy_from_slice(frame);
            &mut few[..=frame.len()]
        } else {
            all = Vec::with_capacity(frame.len() + 1);
            all.push(IoSlice::new(&prefix));
            all.extend_from_slice(frame);
            &mut all
        };
        match wait {
            Wait::Block => write_all(self.fd(), slices),
            _ => self.send_waiting(slices, total, wait),
        }
    }

    /// A `try_` or deadline send: nothing is written until the whole frame
    /// can be written without waiting, so it is never left half done.
    fn send_waiting(&self, slices: &mut [IoSlice<'_>], total: usize, wait: Wait) -> io::Result<()> {
        let Some(capacity) = self.capacity else {
            // Not a pipe: all we can wait for is writability.
            if !ready(self.fd(), PollFlags::POLLOUT, wait)? {
                return Err(not_ready(wait));
            }
            return write_all(self.fd(), slices);
        };
        if total > PIPE_BUF {
            // The pipe's size may have changed (the peer shares it).
            let capacity = crate::capacity::get(self.fd()).unwrap_or(capacity);
            // How many of the pipe's pages the bytes queued occupy is not
            // knowable (the kernel starts a new page for a write whose tail
            // does not fit the last one), so a larger frame is only started
            // into an empty pipe: then it fits whole if it fits at all.
            // `try_` sends refuse a frame larger than the pipe; deadline
            // sends start it into the empty pipe and finish it as the
            // reader reads.
            if total > capacity && wait == Wait::Never {
                // Let the write report a reader that is gone.
                return if self.reader_gone()? {
                    write_all(self.fd(), slices)
                } else {
                    Err(not_ready(wait))
                };
            }
            self.wait_until(wait, |queued| queued == 0)?;
            if total <= capacity {
                return write_all(self.fd(), slices); // fits whole: no wait
            }
            return self.write_all_until(slices, wait);
        }
        loop {
            // Up to PIPE_BUF bytes take at most one new page, and POLLOUT
            // means a page is free; RWF_NOWAIT makes sure nothing is written
            // unless all of it is (should another process write too).
            match courier_transport::pipe::write_vectored_nowait(self.fd(), slices) {
                Ok(n) if n == total => return Ok(()),
                Ok(n) => {
                    let mut rest: &mut [IoSlice<'_>] = slices;
                    IoSlice::advance_slices(&mut rest, n);
                    return write_all(self.fd(), rest);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                    if !ready(self.fd(), PollFlags::POLLOUT, wait)? {
                        return Err(not_ready(wait));
                    }
                    return write_all(self.fd(), slices);
                }
                Err(e) => return Err(e),
            }
            if !ready(self.fd(), PollFlags::POLLOUT, wait)? {
                return Err(not_ready(wait));
            }
        }
    }

    /// Takes this end's turn to write, waiting no longer than `wait`.
    fn lock_within(&self, wait: Wait) -> io::Result<MutexGuard<'_, ()>> {
        let mut step = Duration::from_micros(50);
        loop {
            match self.lock.try_lock() {
                Ok(turn) => return Ok(turn),
                // The lock guards no data: a panic elsewhere changes nothing.
                Err(TryLockError::Poisoned(p)) => return Ok(p.into_inner()),
                Err(TryLockError::WouldBlock) => {}
            }
            match wait {
                Wait::Block => return Ok(self.lock.lock().unwrap_or_else(PoisonError::into_inner)),
                Wait::Until(deadline) if Instant::now() < deadline => back_off(&mut step, wait),
                _ => return Err(not_ready(wait)),
            }
        }
    }

    /// Writes a frame larger than the pipe, which the reader has to make
    /// room for as it goes, until `wait`'s deadline. Should the deadline
    /// pass inside the frame, the frame cannot be taken back: the write end
    /// is released instead (the peer sees a torn frame and the end of the
    /// stream, later sends fail), rather than waiting past the deadline
    /// for a reader that may never read again.
    fn write_all_until(&self, mut slices: &mut [IoSlice<'_>], wait: Wait) -> io::Result<()> {
        while !slices.is_empty() {
            match courier_transport::pipe::write_vectored_nowait(self.fd(), slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut slices, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !ready(self.fd(), PollFlags::POLLOUT, wait)? {
                        if !self.shut.swap(true, Ordering::AcqRel) {
                            courier_transport::pipe::detach(&self.fd)?;
                        }
                        return Err(not_ready(wait));
                    }
                }
                // An older kernel: no way to write without waiting.
                Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                    return write_all(self.fd(), slices)
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Waits under `wait` until `fits(queued bytes)` holds or the reader is
    /// gone (the write then reports it).
    fn wait_until(&self, wait: Wait, fits: impl Fn(usize) -> bool) -> io::Result<()> {
        let mut step = Duration::from_micros(50);
        loop {
            let queued = courier_transport::pipe::queued_bytes(self.fd())?;
            if fits(queued) || self.reader_gone()? {
                return Ok(());
            }
            match wait {
                Wait::Until(deadline) if Instant::now() < deadline => back_off(&mut step, wait),
                _ => return Err(not_ready(wait)),
            }
        }
    }

    fn reader_gone(&self) -> io::Result<bool> {
        let mut fds = [nix::poll::PollFd::new(self.fd(), PollFlags::POLLOUT)];
        nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO)?;
        Ok(fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP)))
    }
}

/// Writes every byte of `slices`, after partial writes too.
fn write_all(fd: BorrowedFd<'_>, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !slices.is_empty() {
        match courier_transport::pipe::write_vectored(fd, slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // An fd someone else made non-blocking: a frame once begun
            // must be finished, so wait for room.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                ready(fd, PollFlags::POLLOUT, Wait::Block)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
