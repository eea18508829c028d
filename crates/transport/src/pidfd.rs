//! [`PidFd`]: a handle on a process, for waiting on its death.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Instant;

use nix::poll::PollFlags;

use crate::{sys, wait, Wait};

/// A pidfd: a handle naming one process (never a pid that could be reused
/// for another), readable once that process has exited.
///
/// Get one for a child with [`PidFd::open`] (before it is reaped), or for
/// the process at the other end of a connection with
/// [`Socket::peer_pidfd`](crate::Socket::peer_pidfd). It is close-on-exec
/// and can be polled with other fds.
///
/// ```
/// use std::process::Command;
/// use std::time::Duration;
/// use courier_transport::PidFd;
///
/// let mut child = Command::new("true").spawn()?;
/// if let Some(pidfd) = PidFd::open(child.id())? {
///     assert!(pidfd.wait_timeout(Duration::from_secs(10))?);
///     assert!(pidfd.has_exited()?);
/// }
/// child.wait()?;
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Platform-specific behavior
///
/// Linux 5.3 and later; [`PidFd::open`] returns `Ok(None)` on older kernels.
pub struct PidFd {
    fd: OwnedFd,
}

impl PidFd {
    /// A pidfd for process `pid` (`pidfd_open(2)`). For a child of this
    /// process, call it before the child is reaped (`Child::wait`), so the
    /// pid cannot have been reused.
    ///
    /// # Errors
    ///
    /// `ESRCH` when no such process exists; `Ok(None)` where the kernel
    /// lacks pidfds.
    pub fn open(pid: u32) -> io::Result<Option<PidFd>> {
        let pid = i32::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        Ok(sys::pidfd_open(pid)?.map(|fd| PidFd { fd }))
    }

    /// Wraps an fd the kernel returned as a pidfd.
    pub(crate) fn from_owned(fd: OwnedFd) -> Self {
        PidFd { fd }
    }

    /// Whether the process has exited (it may not have been reaped yet).
    ///
    /// # Errors
    ///
    /// The kernel's (`poll`).
    pub fn has_exited(&self) -> io::Result<bool> {
        self.wait(Wait::Never)
    }

    /// Waits until the process exits or `timeout` passes; `true` when it
    /// exited.
    ///
    /// # Errors
    ///
    /// The kernel's (`poll`).
    pub fn wait_timeout(&self, timeout: std::time::Duration) -> io::Result<bool> {
        self.wait(Wait::timeout(timeout))
    }

    /// Waits until the process exits or `deadline` passes; `true` when it
    /// exited.
    ///
    /// # Errors
    ///
    /// The kernel's (`poll`).
    pub fn wait_deadline(&self, deadline: Instant) -> io::Result<bool> {
        self.wait(Wait::Until(deadline))
    }

    /// Waits for the process's exit under `wait`; `true` when it exited.
    ///
    /// # Errors
    ///
    /// The kernel's (`poll`).
    pub fn wait(&self, wait: Wait) -> io::Result<bool> {
        let fd = self.fd.as_fd();
        match wait {
            Wait::Never => wait::poll_now(fd, PollFlags::POLLIN),
            Wait::Block => wait::poll_ready(fd, PollFlags::POLLIN, None),
            Wait::Until(d) => wait::poll_ready(fd, PollFlags::POLLIN, Some(d)),
        }
    }
}

impl AsFd for PidFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for PidFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl From<PidFd> for OwnedFd {
    fn from(p: PidFd) -> OwnedFd {
        p.fd
    }
}

impl fmt::Debug for PidFd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PidFd")
            .field("fd", &self.fd.as_raw_fd())
            .finish()
    }
}
