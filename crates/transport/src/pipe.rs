//! The pipe primitives courier-pipe needs below safe std and nix: how much
//! a pipe holds, and writing to a pipe or stream without ever raising
//! SIGPIPE.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::libc;

use crate::sys;

pub use crate::sys::NOSIGNAL_ENV;

/// How many bytes are queued in the pipe behind `fd` (`FIONREAD`). On a
/// pipe it works on either end: both name the same buffer.
///
/// # Errors
///
/// The kernel's (`ENOTTY` for an fd that is not a pipe, socket or tty).
pub fn queued_bytes(fd: BorrowedFd<'_>) -> io::Result<usize> {
    sys::fionread(fd)
}

/// `read(2)` of what is there, once: at least one byte, or 0 at end of
/// stream or for an empty `buf` (an `EINTR` is returned, not retried). Like
/// [`std::io::Read::read`] on the fd, without libc's wrapper (a thread
/// cancellation point whose bookkeeping Rust code never needs).
///
/// # Errors
///
/// The kernel's.
#[inline]
pub fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    sys::read(fd, buf)
}

/// `writev(2)` that never raises SIGPIPE: a write to a pipe or stream
/// whose reader is gone fails with [`io::ErrorKind::BrokenPipe`] and the
/// process lives, whatever the SIGPIPE disposition.
///
/// How: where the kernel has `RWF_NOSIGNAL` (Linux 6.18+), this is one
/// `pwritev2` with that flag. On older kernels, where SIGPIPE is ignored
/// (the default in Rust programs, which ignore it before `main`), it is a
/// `writev` after a `sigaction` query. Otherwise SIGPIPE
/// is blocked in the calling thread for the write (the kernel sends it to
/// the writing thread), and when the write may have raised it (it failed
/// with `EPIPE`, or wrote only part: a reader that left in the middle of a
/// large write raises SIGPIPE and still returns the count), one SIGPIPE is
/// taken off this thread's pending signals with `sigtimedwait`, which takes
/// the thread's own before any pending for the whole process; then the
/// thread's mask is restored. A SIGPIPE already pending for this thread
/// before the write is left pending (the write's merges with it: signals
/// do not queue).
///
/// At most [`MAX_SLICES`] slices are written per call: pass more and only
/// the first ones are written (the count tells how much).
///
/// # Errors
///
/// The kernel's (`writev`, `rt_sigprocmask`).
#[inline]
pub fn write_vectored(fd: BorrowedFd<'_>, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    write_guarded(fd, bufs, false)
}

/// [`write_vectored`] that never waits: `pwritev2(RWF_NOWAIT)`. A write
/// that cannot proceed at all fails with [`io::ErrorKind::WouldBlock`];
/// one of at most `PIPE_BUF` bytes to a pipe is all or nothing, a larger
/// one may write part. Fails with [`io::ErrorKind::Unsupported`] where the
/// kernel cannot do this for the fd (before Linux 6.x for pipes).
///
/// # Errors
///
/// As [`write_vectored`], and those above.
pub fn write_vectored_nowait(fd: BorrowedFd<'_>, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    write_guarded(fd, bufs, true)
}

/// The most slices one write takes (the kernel's `UIO_MAXIOV`).
pub const MAX_SLICES: usize = 1024;

#[inline]
fn write_guarded(fd: BorrowedFd<'_>, bufs: &[IoSlice<'_>], nowait: bool) -> io::Result<usize> {
    let bufs = &bufs[..bufs.len().min(MAX_SLICES)];
    let nowait_flag = if nowait { libc::RWF_NOWAIT } else { 0 };
    if sys::nosignal_supported() {
        match sys::pwritev2(fd, bufs, sys::RWF_NOSIGNAL | nowait_flag) {
            // A file whose driver has no vectored write path (some
            // character devices) refuses pwritev2 flags: the old way.
            Err(e) if e.kind() == io::ErrorKind::Unsupported => {}
            done => return done,
        }
    }
    write_without_nosignal(fd, bufs, nowait_flag)
}

/// `write_guarded` where the kernel has no `RWF_NOSIGNAL`.
#[inline(never)]
fn write_without_nosignal(
    fd: BorrowedFd<'_>,
    bufs: &[IoSlice<'_>],
    nowait_flag: libc::c_int,
) -> io::Result<usize> {
    let nowait = nowait_flag != 0;
    let write = || {
        if nowait {
            sys::pwritev2(fd, bufs, nowait_flag)
        } else {
            sys::writev(fd, bufs)
        }
    };
    if sys::sigpipe_ignored()? {
        return write();
    }
    let guard = sys::SigpipeBlocked::new()?;
    let result = write();
    let requested: usize = bufs.iter().map(|b| b.len()).sum();
    let may_have_raised = match &result {
        Err(e) => e.kind() == io::ErrorKind::BrokenPipe,
        Ok(n) => *n < requested,
    };
    if may_have_raised {
        guard.consume_own()?;
    }
    drop(guard);
    result
}

/// Points `fd`'s number at `/dev/null` (close-on-exec), releasing the open
/// file it named: for a pipe end, the same as closing it (the peer sees end
/// of stream, or `EPIPE`), while the number stays valid for anyone who
/// borrowed it, which closing could not promise. Taking `&OwnedFd` means
/// only the owner can do this.
///
/// # Errors
///
/// When `/dev/null` cannot be opened or `dup3` fails.
pub fn detach(fd: &OwnedFd) -> io::Result<()> {
    let null = std::fs::File::open("/dev/null")?;
    sys::dup_over(null.as_fd(), fd)
}
