//! Pipe capacity: how much a pipe holds, and raising it.
//!
//! A pipe holds 64 KiB by default, but only 2 pages once its user has more
//! than `/proc/sys/fs/pipe-user-pages-soft` pages in pipes. courier asks
//! for [`TARGET`] (1 MiB, capped by `/proc/sys/fs/pipe-max-size`), halving
//! the request while the kernel refuses (`EPERM` past the user's limit),
//! and keeps what it gets: a larger pipe means fewer sleeps for a writer
//! of large values.

use std::io;
use std::os::fd::BorrowedFd;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};
use nix::sys::stat::{fstat, SFlag};

/// The capacity courier asks for.
pub const TARGET: usize = 1 << 20;

/// Whether `fd` is a pipe (or FIFO).
pub(crate) fn is_pipe(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let st = fstat(fd)?;
    Ok(SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFIFO)
}

/// The capacity of the pipe behind `fd`.
pub(crate) fn get(fd: BorrowedFd<'_>) -> io::Result<usize> {
    Ok(fcntl(fd, FcntlArg::F_GETPIPE_SZ)? as usize)
}

/// Raises the pipe's capacity towards `want` as far as the system allows;
/// returns the capacity it has afterwards. Never lowers it.
pub(crate) fn raise(fd: BorrowedFd<'_>, want: usize) -> io::Result<usize> {
    let current = get(fd)?;
    let mut ask = want.min(max_size().unwrap_or(want));
    while ask > current {
        let request = i32::try_from(ask).unwrap_or(i32::MAX);
        match fcntl(fd, FcntlArg::F_SETPIPE_SZ(request)) {
            Ok(got) => return Ok(got as usize),
            Err(Errno::EPERM | Errno::EBUSY) => ask /= 2,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(current)
}

/// `/proc/sys/fs/pipe-max-size`, when readable.
fn max_size() -> Option<usize> {
    std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .ok()?
        .trim()
        .parse()
        .ok()
}
