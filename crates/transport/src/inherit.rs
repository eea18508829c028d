//! Handing one fd to a child process, race-free.
//!
//! Every fd courier creates is close-on-exec, so a process spawned by any
//! thread inherits none of them. To give one to a particular child,
//! [`inherit`] registers a hook that std's `Command` runs in that child
//! only, between `fork` and `exec`: it clears close-on-exec on the fd,
//! there, and nowhere else. The parent's copy stays close-on-exec
//! throughout, so a process another thread spawns at the same moment never
//! keeps it past its own `exec`.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::kind::Kind;
use crate::{sys, Socket};

/// The lowest fd number an inherited fd gets: 0, 1 and 2 are the child's
/// stdio, which `Command` sets up after `fork`, over whatever was there.
const FIRST_FREE: RawFd = 3;

/// An fd that the next [`Command::spawn`] will pass to the child, at
/// [`number`](Self::number). Drop it once the child is spawned: that closes
/// the parent's copy and disarms the hook, so a later spawn from the same
/// `Command` passes nothing.
#[derive(Debug)]
pub struct InheritedFd {
    fd: OwnedFd,
    armed: Arc<AtomicBool>,
}

impl InheritedFd {
    /// The fd number the child will find it at. Tell the child (an argument
    /// or an environment variable).
    pub fn number(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Drop for InheritedFd {
    fn drop(&mut self) {
        self.armed.store(false, Ordering::SeqCst);
    }
}

/// Arranges for `fd` to be inherited by the next child `cmd` spawns, and by
/// no other process.
///
/// The hook that runs in the child between `fork` and `exec` makes no
/// allocation and takes no lock (an atomic load and one `fcntl`), as code
/// in a forked child of a multi-threaded process must.
///
/// ```
/// use std::os::fd::OwnedFd;
/// use std::process::Command;
/// use courier_transport::{inherit, SeqPacketSocket};
///
/// let (ours, theirs) = SeqPacketSocket::pair()?;
/// let mut cmd = Command::new("sh");
/// let passed = inherit(&mut cmd, OwnedFd::from(theirs))?;
/// cmd.arg("-c").arg(format!("printf hi >&{}", passed.number()));
/// let mut child = cmd.spawn()?;
/// drop(passed);
/// let mut buf = [0; 8];
/// let n = ours.recv(&mut buf)?;
/// assert_eq!(&buf[..n], b"hi");
/// child.wait()?;
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
///
/// When `fd` had a number below 3 and could not be duplicated above it.
#[allow(unsafe_code)]
pub fn inherit(cmd: &mut Command, fd: OwnedFd) -> io::Result<InheritedFd> {
    let fd = if fd.as_raw_fd() < FIRST_FREE {
        sys::dup_at_least(fd.as_fd(), FIRST_FREE)?
    } else {
        fd
    };
    let armed = Arc::new(AtomicBool::new(true));
    let number = fd.as_raw_fd();
    let hook_armed = Arc::clone(&armed);
    let hook = move || {
        if hook_armed.load(Ordering::SeqCst) {
            sys::clear_cloexec_in_child(number)?;
        }
        Ok(())
    };
    // SAFETY: the hook is async-signal-safe: an atomic load on memory the
    // parent allocated before fork, and fcntl(2); it allocates nothing and
    // takes no lock. Its error is an OS error code, which does not allocate.
    unsafe {
        cmd.pre_exec(hook);
    }
    Ok(InheritedFd { fd, armed })
}

/// Takes ownership of an fd this process inherited at number `raw` (the
/// other half of [`inherit`]), after checking that it is open, was really
/// inherited (not close-on-exec: everything std and courier open is, so an
/// fd that is not came from the parent), and passes `check` (its type). It
/// is made close-on-exec again, so this process's own children do not
/// inherit it.
///
/// On failure the fd is left as it was, open.
///
/// # Safety
///
/// Nothing else in this process may own fd `raw` or close it: typically
/// its number came from the parent (an argument or an environment variable
/// read once, then removed).
///
/// # Errors
///
/// [`io::ErrorKind::NotFound`] when `raw` is not open;
/// [`io::ErrorKind::InvalidInput`] when it is close-on-exec; the error of
/// `check`.
#[allow(unsafe_code)]
pub unsafe fn adopt_inherited_fd(
    raw: RawFd,
    check: impl FnOnce(BorrowedFd<'_>) -> io::Result<()>,
) -> io::Result<OwnedFd> {
    use std::os::fd::FromRawFd;

    // SAFETY: this function's contract is check_inherited_fd's.
    unsafe { check_inherited_fd(raw, check) }?;
    // SAFETY: `raw` is open (checked above) and, by this function's
    // contract, owned by nothing else in the process.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    if let Err(e) = sys::set_cloexec(fd.as_fd()) {
        // Not adopted after all: leave it open, as it was.
        let _ = std::os::fd::IntoRawFd::into_raw_fd(fd);
        return Err(e);
    }
    Ok(fd)
}

/// The checks of [`adopt_inherited_fd`] without taking ownership: for a
/// process that must adopt several fds all or none (check each, then
/// adopt each).
///
/// # Safety
///
/// As [`adopt_inherited_fd`]: nothing else in this process owns `raw`.
///
/// # Errors
///
/// As [`adopt_inherited_fd`].
#[allow(unsafe_code)]
pub unsafe fn check_inherited_fd(
    raw: RawFd,
    check: impl FnOnce(BorrowedFd<'_>) -> io::Result<()>,
) -> io::Result<()> {
    match sys::fd_flags(raw) {
        Err(e) if e.raw_os_error() == Some(nix::libc::EBADF) => {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("fd {raw} is not open"),
            ))
        }
        Err(e) => return Err(e),
        Ok(flags) if flags & nix::libc::FD_CLOEXEC != 0 => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("fd {raw} is close-on-exec, so it was not inherited"),
            ))
        }
        Ok(_) => {}
    }
    // SAFETY: `raw` is open (checked above) and, by this function's
    // contract, owned by nothing else: no one closes it during the borrow.
    let borrowed = unsafe { BorrowedFd::borrow_raw(raw) };
    check(borrowed)
}

/// [`adopt_inherited_fd`] for an AF_UNIX socket of type `K`.
///
/// # Safety
///
/// As [`adopt_inherited_fd`].
///
/// # Errors
///
/// As [`adopt_inherited_fd`], and [`io::ErrorKind::InvalidInput`] when the
/// fd is not an AF_UNIX socket of type `K`.
#[allow(unsafe_code)]
pub unsafe fn adopt_inherited<K: Kind>(raw: RawFd) -> io::Result<Socket<K>> {
    let check = |fd: BorrowedFd<'_>| match sys::unix_socket_type(fd) {
        Ok(ty) if ty == K::RAW_TYPE => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("fd {raw} is not an AF_UNIX {} socket", K::NAME),
        )),
    };
    // SAFETY: this function's contract is adopt_inherited_fd's.
    let fd = unsafe { adopt_inherited_fd(raw, check) }?;
    Socket::<K>::try_from(fd).map_err(|e| {
        let message = e.to_string();
        // Not adopted after all: leave it open, as it was.
        let _ = std::os::fd::IntoRawFd::into_raw_fd(e.into_fd());
        io::Error::new(io::ErrorKind::InvalidInput, message)
    })
}
