//! Reading and writing an fd under a [`Wait`], without `O_NONBLOCK`.
//!
//! The fds may be a process's stdin and stdout, shared with a terminal or
//! a parent: setting `O_NONBLOCK` on them would change them for everyone.
//! So waiting is done with `poll` before the call, and a call is only made
//! when it will not block (a read once the fd is readable; a pipe write once
//! the whole frame fits, see [`crate::writer`]).

use std::io;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use courier_transport::Wait;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};

/// Reads what is there (at least one byte, or 0 at end of stream) under
/// `wait`.
#[inline]
pub(crate) fn read(fd: BorrowedFd<'_>, buf: &mut [u8], wait: Wait) -> io::Result<usize> {
    if wait != Wait::Block && !ready(fd, PollFlags::POLLIN, wait)? {
        return Err(not_ready(wait));
    }
    loop {
        match courier_transport::pipe::read(fd, buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // An fd someone else made non-blocking: wait as asked.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !ready(fd, PollFlags::POLLIN, wait)? {
                    return Err(not_ready(wait));
                }
            }
            other => return other,
        }
    }
}

/// The error for a wait that ran out.
pub(crate) fn not_ready(wait: Wait) -> io::Error {
    match wait {
        Wait::Never => io::ErrorKind::WouldBlock.into(),
        _ => io::ErrorKind::TimedOut.into(),
    }
}

/// Whether `fd` has `events` (or an error or hangup) before `wait` runs
/// out. `Wait::Block` waits without limit.
pub(crate) fn ready(fd: BorrowedFd<'_>, events: PollFlags, wait: Wait) -> io::Result<bool> {
    loop {
        let timeout = match wait {
            Wait::Block => PollTimeout::NONE,
            Wait::Never => PollTimeout::ZERO,
            Wait::Until(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                // Rounded up: never return before the deadline.
                let ms = left.as_micros().div_ceil(1000);
                PollTimeout::try_from(ms.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = [PollFd::new(fd, events)];
        match nix::poll::poll(&mut fds, timeout) {
            Ok(0) => match wait {
                Wait::Until(deadline) if Instant::now() < deadline => continue,
                _ => return Ok(false),
            },
            Ok(_) => return Ok(true),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Sleeps for the current backoff step (bounded by the deadline) and
/// doubles it, from 50 µs up to 1 ms: for waits that poll cannot express.
pub(crate) fn back_off(step: &mut Duration, wait: Wait) {
    let pause = match wait {
        Wait::Until(deadline) => (*step).min(deadline.saturating_duration_since(Instant::now())),
        _ => *step,
    };
    std::thread::sleep(pause);
    *step = (*step * 2).min(Duration::from_millis(1));
}
