//! How long an operation may wait: forever, not at all, or until a deadline.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags};
use nix::sys::socket::MsgFlags;
use nix::sys::time::TimeSpec;

/// How long an operation may wait for the socket to become ready.
///
/// The `try_`, `_timeout` and `_deadline` methods are shorthands for
/// [`Wait::Never`], [`Wait::timeout`] and [`Wait::Until`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Block until the operation can proceed (or, on a socket set
    /// non-blocking, fail with [`io::ErrorKind::WouldBlock`]).
    Block,
    /// Never wait: fail with [`io::ErrorKind::WouldBlock`] at once.
    Never,
    /// Wait until this instant, then fail with [`io::ErrorKind::TimedOut`].
    /// Waiting uses `ppoll(2)`, whose timeout has nanosecond resolution, so
    /// the deadline is kept to the microsecond (scheduling permitting).
    Until(Instant),
}

impl Wait {
    /// Wait at most `timeout` from now. A timeout too large to represent
    /// waits forever.
    pub fn timeout(timeout: Duration) -> Wait {
        Instant::now()
            .checked_add(timeout)
            .map_or(Wait::Block, Wait::Until)
    }
}

/// Runs `op` under `wait`.
///
/// `op` gets the extra `recv`/`send` flags to use (`MSG_DONTWAIT` unless
/// blocking). When `poll_when_blocking` is set the fd is non-blocking by
/// design (a listener), so [`Wait::Block`] polls without a deadline instead of
/// relying on the call to block.
#[inline]
pub(crate) fn run<T>(
    fd: BorrowedFd<'_>,
    wait: Wait,
    events: PollFlags,
    poll_when_blocking: bool,
    mut op: impl FnMut(MsgFlags) -> io::Result<T>,
) -> io::Result<T> {
    let (flags, deadline) = match wait {
        Wait::Block if !poll_when_blocking => (MsgFlags::empty(), None),
        Wait::Block => (MsgFlags::MSG_DONTWAIT, None),
        Wait::Never => (MsgFlags::MSG_DONTWAIT, None),
        Wait::Until(d) => (MsgFlags::MSG_DONTWAIT, Some(d)),
    };
    // Set once poll has said "ready": if the call still would block, the
    // readiness is not about what blocks it (an unconnected DGRAM send to a
    // full receiver: POLLOUT is our buffer, not the receiver's queue), and
    // polling again would return at once. Back off instead of spinning.
    let mut backoff: Option<Duration> = None;
    loop {
        match op(flags) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => match wait {
                Wait::Never => return Err(e),
                Wait::Block if !poll_when_blocking => return Err(e),
                _ => {
                    if let Some(pause) = backoff {
                        let left =
                            deadline.map_or(pause, |d| d.saturating_duration_since(Instant::now()));
                        std::thread::sleep(pause.min(left));
                        backoff = Some((pause * 2).min(MAX_BACKOFF));
                    }
                    if !poll_ready(fd, events, deadline)? {
                        return Err(io::ErrorKind::TimedOut.into());
                    }
                    backoff.get_or_insert(MIN_BACKOFF);
                }
            },
            other => return other,
        }
    }
}

/// The first pause after readiness that did not let the call through.
const MIN_BACKOFF: Duration = Duration::from_micros(50);
/// The longest pause: how late a wait may notice that the call can proceed.
const MAX_BACKOFF: Duration = Duration::from_millis(1);

/// Waits until `fd` has one of `events` (or an error/hangup), or until
/// `deadline`. Returns `false` when the deadline passed first.
pub(crate) fn poll_ready(
    fd: BorrowedFd<'_>,
    events: PollFlags,
    deadline: Option<Instant>,
) -> io::Result<bool> {
    loop {
        let timeout = match deadline {
            None => None,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(false);
                }
                Some(TimeSpec::from_duration(left))
            }
        };
        let mut fds = [PollFd::new(fd, events)];
        match nix::poll::ppoll(&mut fds, timeout, None) {
            Ok(0) => continue, // re-check the clock; returns false once it passed
            Ok(_) => return Ok(true),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether `fd` has one of `events` (or an error/hangup) now, without
/// waiting.
pub(crate) fn poll_now(fd: BorrowedFd<'_>, events: PollFlags) -> io::Result<bool> {
    loop {
        let mut fds = [PollFd::new(fd, events)];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO) {
            Ok(n) => return Ok(n > 0),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}
