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
//! or deadline send to a pipe first makes sure the whole frame fits in the
//! pipe's free space (capacity minus what is queued, `FIONREAD`, counted in
//! whole pages plus one for a partly filled page), so the write that
//! follows cannot block and is never left half done. A frame larger than
//! the pipe itself can never fit: a deadline send starts it once the pipe
//! is empty and then finishes it, however long the reader takes (a frame
//! once begun must be completed, or the stream would be corrupt); `try_`
//! sends refuse it as full. On other streams (sockets, ttys) waiting means
//! `POLLOUT`.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use courier_transport::{TransportError, Wait};
use nix::poll::PollFlags;

use crate::io::{back_off, not_ready, ready};
use crate::PREFIX_LEN;

/// Pipes account in pages.
const PAGE: usize = 4096;

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
            courier_transport::pipe::detach(self.fd())?;
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
    pub(crate) fn send(&self, frame: &[IoSlice<'_>], wait: Wait) -> io::Result<()> {
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
        let _turn = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        if self.shut.load(Ordering::Acquire) {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        self.wait_for_room(PREFIX_LEN + len, wait)?;
        let mut slices = [IoSlice::new(&[]); 4];
        slices[0] = IoSlice::new(&prefix);
        if frame.len() < slices.len() {
            slices[1..=frame.len()].copy_from_slice(frame);
            write_all(self.fd(), &mut slices[..=frame.len()])
        } else {
            let mut all = Vec::with_capacity(frame.len() + 1);
            all.push(IoSlice::new(&prefix));
            all.extend_from_slice(frame);
            write_all(self.fd(), &mut all)
        }
    }

    /// Returns once writing `total` bytes will not block (or, for a frame
    /// larger than the pipe, once the pipe is empty), or fails under `wait`.
    fn wait_for_room(&self, total: usize, wait: Wait) -> io::Result<()> {
        if wait == Wait::Block {
            return Ok(()); // the write itself waits
        }
        let Some(capacity) = self.capacity else {
            return if ready(self.fd(), PollFlags::POLLOUT, wait)? {
                Ok(())
            } else {
                Err(not_ready(wait))
            };
        };
        let mut step = Duration::from_micros(50);
        loop {
            let queued = courier_transport::pipe::queued_bytes(self.fd())?;
            let free = capacity.saturating_sub((queued.div_ceil(PAGE) + 1) * PAGE);
            let never_fits = total > capacity.saturating_sub(PAGE);
            let go = total <= free || (never_fits && queued == 0 && wait != Wait::Never);
            // POLLERR: no reader any more. Let the write report it.
            if go || self.reader_gone()? {
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
