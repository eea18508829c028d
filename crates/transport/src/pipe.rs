//! The pipe primitives courier-pipe needs below safe std and nix: how much
//! a pipe holds, and writing to a pipe or stream without ever raising
//! SIGPIPE.

use std::io::{self, IoSlice};
use std::os::fd::BorrowedFd;

use crate::sys;

/// How many bytes are queued in the pipe behind `fd` (`FIONREAD`). On a
/// pipe it works on either end: both name the same buffer.
///
/// # Errors
///
/// The kernel's (`ENOTTY` for an fd that is not a pipe, socket or tty).
pub fn queued_bytes(fd: BorrowedFd<'_>) -> io::Result<usize> {
    sys::fionread(fd)
}

/// `writev(2)` that never raises SIGPIPE: a write to a pipe or stream
/// whose reader is gone fails with [`io::ErrorKind::BrokenPipe`] and the
/// process lives, whatever the SIGPIPE disposition.
///
/// How: where SIGPIPE is ignored (the default in Rust programs, which
/// ignore it before `main`), this is a plain `writev`. Otherwise SIGPIPE
/// is blocked in the calling thread for the write (the kernel sends it to
/// the writing thread), a SIGPIPE the write raised is taken off the pending
/// set with `sigtimedwait`, and the thread's mask is restored. A SIGPIPE
/// that was already pending before the write is left alone.
///
/// # Errors
///
/// The kernel's (`writev`, `rt_sigprocmask`).
pub fn write_vectored(fd: BorrowedFd<'_>, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    if sys::sigpipe_ignored()? {
        return sys::writev(fd, bufs);
    }
    let guard = sys::SigpipeBlocked::new()?;
    let result = sys::writev(fd, bufs);
    if matches!(&result, Err(e) if e.kind() == io::ErrorKind::BrokenPipe) {
        guard.consume_raised()?;
    }
    drop(guard);
    result
}

/// Points fd `fd` at `/dev/null` (close-on-exec), releasing this
/// process's reference to whatever it was: for a pipe end, the same as
/// closing it, for the peer's end of stream or `EPIPE`, while the fd number
/// stays valid for anyone who borrowed it (closing it could not promise
/// that). The caller must own `fd`, and then owns `/dev/null` there.
///
/// # Errors
///
/// When `/dev/null` cannot be opened or `dup3` fails.
pub fn detach(fd: BorrowedFd<'_>) -> io::Result<()> {
    let null = std::fs::File::open("/dev/null")?;
    sys::dup_over(std::os::fd::AsFd::as_fd(&null), fd)
}
