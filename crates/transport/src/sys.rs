//! The system calls, and the flags that are always right, defined once.
//!
//! Every socket courier creates is `SOCK_CLOEXEC`, every `recvmsg` passes
//! `MSG_CMSG_CLOEXEC` (the only atomic way to get close-on-exec on received
//! fds), every send passes `MSG_NOSIGNAL` (a send to a closed peer returns
//! `EPIPE` instead of killing the process with SIGPIPE). No other module
//! calls these syscalls.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::libc;
use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockType, SockaddrLike, UnixAddr};

/// Flags for every socket(2), socketpair(2) and accept4(2).
pub(crate) const SOCKET_FLAGS: SockFlag = SockFlag::SOCK_CLOEXEC;
/// Flags for every sendmsg(2).
pub(crate) const SEND_FLAGS: MsgFlags = MsgFlags::MSG_NOSIGNAL;
/// Flags for every recvmsg(2). `MSG_TRUNC` makes SEQPACKET and DGRAM
/// receives return the message's real length, so truncation can be reported
/// with both numbers.
pub(crate) const RECV_FLAGS: MsgFlags = MsgFlags::MSG_CMSG_CLOEXEC.union(MsgFlags::MSG_TRUNC);

fn socket_flags(nonblocking: bool) -> SockFlag {
    if nonblocking {
        SOCKET_FLAGS | SockFlag::SOCK_NONBLOCK
    } else {
        SOCKET_FLAGS
    }
}

/// A new AF_UNIX socket.
pub(crate) fn socket(ty: SockType, nonblocking: bool) -> io::Result<OwnedFd> {
    Ok(socket::socket(
        AddressFamily::Unix,
        ty,
        socket_flags(nonblocking),
        None,
    )?)
}

/// A connected pair of AF_UNIX sockets.
pub(crate) fn socketpair(ty: SockType, nonblocking: bool) -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(socket::socketpair(
        AddressFamily::Unix,
        ty,
        None,
        socket_flags(nonblocking),
    )?)
}

/// accept4(2) with the always-right flags.
pub(crate) fn accept(listener: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let raw = socket::accept4(listener.as_raw_fd(), SOCKET_FLAGS)?;
    Ok(owned(raw))
}

/// Wraps an fd number a syscall just returned to us.
#[allow(unsafe_code)]
fn owned(raw: std::os::fd::RawFd) -> OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: `raw` was returned a moment ago by a successful syscall that
    // creates an fd (accept4, fcntl F_DUPFD_CLOEXEC, pidfd_open) and has not
    // been given to anything else.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

/// Sets or clears `O_NONBLOCK`.
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
    let new = if on {
        flags | OFlag::O_NONBLOCK
    } else {
        flags - OFlag::O_NONBLOCK
    };
    if new != flags {
        fcntl(fd, FcntlArg::F_SETFL(new))?;
    }
    Ok(())
}

/// sendmsg(2): the data in `bufs`, the encoded `control` data, to `to` if given.
#[allow(unsafe_code)]
#[inline]
pub(crate) fn sendmsg(
    fd: BorrowedFd<'_>,
    bufs: &[IoSlice<'_>],
    control: &[u8],
    to: Option<&UnixAddr>,
    flags: MsgFlags,
) -> io::Result<usize> {
    if let ([buf], [], None) = (bufs, control, to) {
        // The common message: one buffer, nothing else. send(2) spares the
        // kernel copying in a msghdr and an iovec (about 0.1 µs here).
        return send(fd, buf, flags);
    }
    // SAFETY: `msghdr` is a C struct of integers and raw pointers; all-zero
    // bytes are a valid value of it (null pointers, zero lengths).
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    if let Some(addr) = to {
        hdr.msg_name = addr.as_ptr().cast_mut().cast();
        hdr.msg_namelen = addr.len();
    }
    // `IoSlice` is guaranteed ABI-compatible with `struct iovec` on Unix.
    hdr.msg_iov = bufs.as_ptr().cast_mut().cast();
    hdr.msg_iovlen = bufs.len() as _;
    if !control.is_empty() {
        hdr.msg_control = control.as_ptr().cast_mut().cast();
        hdr.msg_controllen = control.len() as _;
    }
    let flags = (flags | SEND_FLAGS).bits();
    // The syscall itself on 64-bit, not libc's wrapper (see `send`).
    #[cfg(target_pointer_width = "64")]
    // SAFETY: every pointer in `hdr` points into a borrow that outlives this
    // call (`bufs`, `control`, `to`), with the lengths set beside it; the
    // kernel only reads through them.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_sendmsg,
            libc::c_long::from(fd.as_raw_fd()),
            std::ptr::from_ref(&hdr),
            libc::c_long::from(flags),
        )
    };
    #[cfg(not(target_pointer_width = "64"))]
    // SAFETY: as above.
    let ret = unsafe { libc::sendmsg(fd.as_raw_fd(), &hdr, flags) };
    Ok(Errno::result(ret)? as usize)
}

/// send(2) of one buffer.
#[allow(unsafe_code)]
#[inline]
pub(crate) fn send(fd: BorrowedFd<'_>, buf: &[u8], flags: MsgFlags) -> io::Result<usize> {
    let flags = (flags | SEND_FLAGS).bits();
    // On 64-bit Linux the syscall itself, not libc's `send`: the libc
    // wrapper is a thread cancellation point, and entering and leaving it
    // costs two atomic operations per call, which Rust code (never
    // cancelled) does not need. Integer arguments are passed as `c_long`,
    // as the C library's own syscall macros do. Elsewhere (32-bit targets,
    // where socket calls may go through socketcall), libc's wrapper.
    #[cfg(target_pointer_width = "64")]
    // SAFETY: `buf` is a live borrow of `buf.len()` bytes that the kernel
    // only reads during the call; sendto(2) with a null address and length
    // 0 is send(2).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_sendto,
            libc::c_long::from(fd.as_raw_fd()),
            buf.as_ptr(),
            buf.len(),
            libc::c_long::from(flags),
            std::ptr::null::<libc::sockaddr>(),
            0 as libc::c_long,
        )
    };
    #[cfg(not(target_pointer_width = "64"))]
    // SAFETY: as above.
    let ret = unsafe { libc::send(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), flags) };
    Ok(Errno::result(ret)? as usize)
}

/// What recvmsg(2) reported.
pub(crate) struct RawRecv {
    /// The message's real length (thanks to `MSG_TRUNC`), even when it did
    /// not fit.
    pub(crate) len: usize,
    /// `msg_flags`: `MSG_TRUNC`, `MSG_CTRUNC`, ...
    pub(crate) flags: MsgFlags,
    /// Bytes of control data the kernel wrote.
    pub(crate) control_len: usize,
    /// Bytes of `name` the kernel filled in.
    pub(crate) name_len: usize,
}

/// recvmsg(2) into `bufs` and `control`, with the sender's address in `name`
/// if given.
#[allow(unsafe_code)]
#[inline]
pub(crate) fn recvmsg(
    fd: BorrowedFd<'_>,
    bufs: &mut [IoSliceMut<'_>],
    control: &mut [u8],
    name: Option<&mut libc::sockaddr_un>,
    flags: MsgFlags,
) -> io::Result<RawRecv> {
    // SAFETY: as in `sendmsg`: all-zero is a valid `msghdr`.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    if let Some(name) = name {
        hdr.msg_namelen = size_of::<libc::sockaddr_un>() as libc::socklen_t;
        hdr.msg_name = std::ptr::from_mut(name).cast();
    }
    // `IoSliceMut` is guaranteed ABI-compatible with `struct iovec` on Unix.
    hdr.msg_iov = bufs.as_mut_ptr().cast();
    hdr.msg_iovlen = bufs.len() as _;
    if !control.is_empty() {
        hdr.msg_control = control.as_mut_ptr().cast();
        hdr.msg_controllen = control.len() as _;
    }
    let flags = (flags | RECV_FLAGS).bits();
    // The syscall itself on 64-bit, not libc's wrapper (see `send`).
    #[cfg(target_pointer_width = "64")]
    // SAFETY: every pointer in `hdr` points into an exclusive borrow that
    // outlives this call (`bufs`, `control`, `name`), with its true length
    // beside it; the kernel writes at most that many bytes through each.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_recvmsg,
            libc::c_long::from(fd.as_raw_fd()),
            std::ptr::from_mut(&mut hdr),
            libc::c_long::from(flags),
        )
    };
    #[cfg(not(target_pointer_width = "64"))]
    // SAFETY: as above.
    let ret = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut hdr, flags) };
    let len = Errno::result(ret)? as usize;
    Ok(RawRecv {
        len,
        flags: MsgFlags::from_bits_retain(hdr.msg_flags),
        control_len: hdr.msg_controllen as usize,
        name_len: hdr.msg_namelen as usize,
    })
}

/// recv(2) with `MSG_PEEK | MSG_TRUNC` and no buffer: the real length of the
/// next message, which stays queued. No control buffer is passed, so passed
/// fds are not installed by the peek.
pub(crate) fn peek_len(fd: BorrowedFd<'_>, flags: MsgFlags) -> io::Result<usize> {
    let flags = flags | MsgFlags::MSG_PEEK | MsgFlags::MSG_TRUNC;
    Ok(socket::recv(fd.as_raw_fd(), &mut [], flags)?)
}

/// The domain and type of a socket fd: checks it is an AF_UNIX socket.
pub(crate) fn unix_socket_type(fd: BorrowedFd<'_>) -> io::Result<i32> {
    let ty = socket::getsockopt(&fd, socket::sockopt::SockType).map_err(|e| match e {
        Errno::ENOTSOCK => io::Error::from(crate::TransportError::NotUnixSocket),
        e => e.into(),
    })?;
    let addr: socket::SockaddrStorage = socket::getsockname(fd.as_raw_fd())?;
    if addr.family() != Some(AddressFamily::Unix) {
        return Err(crate::TransportError::NotUnixSocket.into());
    }
    Ok(ty as i32)
}

/// Whether the peer of a connected socket has shut down its writing side
/// (or closed): `POLLRDHUP`/`POLLHUP`, without waiting. A raw `pollfd` is
/// used because nix's `PollFlags` cannot represent `POLLRDHUP`.
#[allow(unsafe_code)]
pub(crate) fn peer_shut_down(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: `pfd` is one valid, exclusively borrowed `pollfd`, and nfds is 1.
    let ret = unsafe { libc::poll(&mut pfd, 1, 0) };
    Errno::result(ret)?;
    Ok(pfd.revents & (libc::POLLRDHUP | libc::POLLHUP) != 0)
}

/// `SO_PASSRIGHTS` (Linux 6.16+, `asm-generic/socket.h`): whether the
/// socket accepts SCM_RIGHTS. libc does not name it yet.
const SO_PASSRIGHTS: libc::c_int = 83;

/// Sets `SO_PASSRIGHTS`. `Ok(false)` where the kernel does not know it.
#[allow(unsafe_code)]
pub(crate) fn set_pass_rights(fd: BorrowedFd<'_>, on: bool) -> io::Result<bool> {
    let value: libc::c_int = on.into();
    // SAFETY: `value` is a live c_int and the length passed is its size.
    let ret = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PASSRIGHTS,
            std::ptr::from_ref(&value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    match Errno::result(ret) {
        Ok(_) => Ok(true),
        Err(Errno::ENOPROTOOPT) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// pidfd_open(2), close-on-exec (pidfds always are). `Ok(None)` where the
/// kernel lacks it (before 5.3).
#[allow(unsafe_code)]
pub(crate) fn pidfd_open(pid: libc::pid_t) -> io::Result<Option<OwnedFd>> {
    // SAFETY: pidfd_open takes a pid and a flags word and returns a new fd
    // or -1; no memory is passed.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0 as libc::c_uint) };
    match Errno::result(ret) {
        Ok(raw) => Ok(Some(owned(raw as std::os::fd::RawFd))),
        Err(Errno::ENOSYS) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A duplicate of `fd`, close-on-exec, numbered `min` or above.
pub(crate) fn dup_at_least(fd: BorrowedFd<'_>, min: std::os::fd::RawFd) -> io::Result<OwnedFd> {
    let raw = fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(min))?;
    Ok(owned(raw))
}

/// The `F_GETFD` flags of fd number `raw` (no ownership needed: the
/// number is only looked up).
#[allow(unsafe_code)]
pub(crate) fn fd_flags(raw: std::os::fd::RawFd) -> io::Result<libc::c_int> {
    // SAFETY: fcntl(F_GETFD) reads the flags of a number and touches no
    // memory; a number that is not open fails with EBADF.
    let ret = unsafe { libc::fcntl(raw, libc::F_GETFD) };
    Ok(Errno::result(ret)?)
}

/// Sets `FD_CLOEXEC`.
pub(crate) fn set_cloexec(fd: BorrowedFd<'_>) -> io::Result<()> {
    fcntl(fd, FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))?;
    Ok(())
}

/// Clears `FD_CLOEXEC` on fd number `raw`. Async-signal-safe and
/// allocation-free: it runs in a forked child before exec.
#[allow(unsafe_code)]
pub(crate) fn clear_cloexec_in_child(raw: std::os::fd::RawFd) -> io::Result<()> {
    // SAFETY: fcntl(F_SETFD) on a number touches no memory; a number that
    // is not open fails with EBADF.
    let ret = unsafe { libc::fcntl(raw, libc::F_SETFD, 0) };
    if ret == -1 {
        // An OS error code: building it does not allocate.
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// dup3(2) of `from` onto the fd number of `onto`, close-on-exec: the open
/// file `onto` named is released, its number now names `from`'s.
#[allow(unsafe_code)]
pub(crate) fn dup_over(from: BorrowedFd<'_>, onto: &OwnedFd) -> io::Result<()> {
    loop {
        // SAFETY: dup3 takes two fd numbers and a flag; both are open, and
        // `onto` is owned by the caller, whose OwnedFd keeps owning the
        // number, now naming a duplicate of `from`.
        let ret = unsafe { libc::dup3(from.as_raw_fd(), onto.as_raw_fd(), libc::O_CLOEXEC) };
        match Errno::result(ret) {
            Err(Errno::EINTR | Errno::EBUSY) => continue,
            other => return other.map(drop).map_err(Into::into),
        }
    }
}

/// `FIONREAD`: bytes queued for reading.
#[allow(unsafe_code)]
pub(crate) fn fionread(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut queued: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which points
    // to a live, exclusively borrowed c_int.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut queued) };
    Errno::result(ret)?;
    Ok(usize::try_from(queued).unwrap_or(0))
}

/// writev(2), retried on EINTR.
pub(crate) fn writev(fd: BorrowedFd<'_>, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    loop {
        match nix::sys::uio::writev(fd, bufs) {
            Err(Errno::EINTR) => continue,
            other => return Ok(other?),
        }
    }
}

/// Whether SIGPIPE's disposition is `SIG_IGN` (queried, not changed).
#[allow(unsafe_code)]
pub(crate) fn sigpipe_ignored() -> io::Result<bool> {
    let mut old = std::mem::MaybeUninit::<libc::sigaction>::uninit();
    // SAFETY: with a null new action, sigaction only writes the current
    // one into `old`, a valid, exclusively borrowed sigaction.
    let ret = unsafe { libc::sigaction(libc::SIGPIPE, std::ptr::null(), old.as_mut_ptr()) };
    Errno::result(ret)?;
    // SAFETY: the successful sigaction call above filled `old`.
    let old = unsafe { old.assume_init() };
    Ok(old.sa_sigaction == libc::SIG_IGN)
}

/// SIGPIPE blocked in this thread, until dropped.
pub(crate) struct SigpipeBlocked {
    old: nix::sys::signal::SigSet,
    /// A SIGPIPE was pending for this thread before: a write's SIGPIPE
    /// merges with it (signals do not queue), so it is left alone.
    thread_had_one: bool,
}

impl SigpipeBlocked {
    pub(crate) fn new() -> io::Result<Self> {
        use nix::sys::signal::{SigSet, SigmaskHow, Signal};
        let mut set = SigSet::empty();
        set.add(Signal::SIGPIPE);
        let old = set.thread_swap_mask(SigmaskHow::SIG_BLOCK)?;
        // sigpending(2) merges the thread's and the process's pending
        // sets; only when it shows SIGPIPE (rare) is the thread's own set
        // read, from /proc.
        let thread_had_one = sigpipe_pending()? && thread_sigpipe_pending();
        Ok(SigpipeBlocked {
            old,
            thread_had_one,
        })
    }

    /// Takes the SIGPIPE a write raised off, without waiting: the kernel
    /// dequeues this thread's own pending signals (where a write's SIGPIPE
    /// goes) before the process-wide ones.
    #[allow(unsafe_code)]
    pub(crate) fn consume_own(&self) -> io::Result<()> {
        if self.thread_had_one {
            return Ok(());
        }
        let mut set = nix::sys::signal::SigSet::empty();
        set.add(nix::sys::signal::Signal::SIGPIPE);
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        loop {
            // SAFETY: `set` is a valid sigset_t, `zero` a valid timespec
            // and the info pointer may be null; nothing is retained.
            let ret = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &zero) };
            match Errno::result(ret) {
                Ok(_) | Err(Errno::EAGAIN) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Drop for SigpipeBlocked {
    fn drop(&mut self) {
        // Restoring a mask we just read cannot fail.
        let _ = self.old.thread_set_mask();
    }
}

/// Whether SIGPIPE is pending for this thread or the process.
#[allow(unsafe_code)]
fn sigpipe_pending() -> io::Result<bool> {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigpending writes the pending set into `set`.
    let ret = unsafe { libc::sigpending(set.as_mut_ptr()) };
    Errno::result(ret)?;
    // SAFETY: `set` was filled by the successful sigpending above.
    let member = unsafe { libc::sigismember(set.as_ptr(), libc::SIGPIPE) };
    Ok(member == 1)
}

/// Whether SIGPIPE is pending for this thread itself (`SigPnd` in
/// `/proc/thread-self/status`). Assumed so when it cannot be read: then
/// nothing is consumed.
fn thread_sigpipe_pending() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/thread-self/status") else {
        return true;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigPnd:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_none_or(|mask| mask & (1 << (libc::SIGPIPE - 1)) != 0)
}

/// read(2), once (no retry on EINTR). The syscall itself on 64-bit, not
/// libc's wrapper: see `send`.
#[allow(unsafe_code)]
#[inline]
pub(crate) fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    #[cfg(target_pointer_width = "64")]
    // SAFETY: `buf` is an exclusive borrow of `buf.len()` bytes; the
    // kernel writes at most that many.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_read,
            libc::c_long::from(fd.as_raw_fd()),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    #[cfg(not(target_pointer_width = "64"))]
    // SAFETY: as above.
    let ret = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    Ok(Errno::result(ret)? as usize)
}

/// `RWF_NOSIGNAL` (Linux 6.18+): a write to a pipe or socket whose reader
/// is gone fails with `EPIPE` without raising SIGPIPE.
pub(crate) const RWF_NOSIGNAL: libc::c_int = 0x100;

/// pwritev2(2) at the current position (`offset` -1) with `flags`, retried
/// on EINTR. `Unsupported` where the kernel refuses a flag (for this fd).
#[allow(unsafe_code)]
#[inline]
pub(crate) fn pwritev2(
    fd: BorrowedFd<'_>,
    bufs: &[IoSlice<'_>],
    flags: libc::c_int,
) -> io::Result<usize> {
    let count = libc::c_int::try_from(bufs.len()).unwrap_or(libc::c_int::MAX);
    loop {
        // The syscall itself on 64-bit, not libc's wrapper (see `send`).
        // The kernel takes the offset as two words, low then high, and
        // joins them as `high << BITS_PER_LONG | low`: on 64-bit the high
        // word is shifted out, so -1 (the current position) is (-1, 0).
        #[cfg(target_pointer_width = "64")]
        // SAFETY: `IoSlice` is ABI-compatible with `struct iovec`; `bufs`
        // is a live slice of `count` of them, only read by the kernel.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_pwritev2,
                libc::c_long::from(fd.as_raw_fd()),
                bufs.as_ptr(),
                libc::c_long::from(count),
                -1 as libc::c_long,
                0 as libc::c_long,
                libc::c_long::from(flags),
            )
        };
        #[cfg(not(target_pointer_width = "64"))]
        // SAFETY: as above.
        let ret = unsafe { libc::pwritev2(fd.as_raw_fd(), bufs.as_ptr().cast(), count, -1, flags) };
        match Errno::result(ret) {
            Ok(n) => return Ok(n as usize),
            Err(Errno::EINTR) => continue,
            Err(Errno::EOPNOTSUPP) => return Err(io::ErrorKind::Unsupported.into()),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Setting this environment variable to `off` makes pipe writes take the
/// path of kernels before 6.18 (a `sigaction` query, and the signal mask
/// when SIGPIPE is not ignored) even where `RWF_NOSIGNAL` exists: for tests
/// of that path, and as a way out should the flag misbehave.
pub const NOSIGNAL_ENV: &str = "COURIER_PIPE_NOSIGNAL";

/// Whether this kernel takes `RWF_NOSIGNAL`, asked once per process by a
/// one-byte write into a fresh pipe (unless [`NOSIGNAL_ENV`] is `off`).
#[inline]
pub(crate) fn nosignal_supported() -> bool {
    match NOSIGNAL_KNOWN.load(Relaxed) {
        1 => true,
        2 => false,
        _ => ask_nosignal(),
    }
}

/// Whether the kernel takes `RWF_NOSIGNAL`: 0 = not asked yet, 1 = yes, 2 = no.
static NOSIGNAL_KNOWN: AtomicU8 = AtomicU8::new(0);

/// The question of [`nosignal_supported`], asked the first time.
#[cold]
fn ask_nosignal() -> bool {
    let off = std::env::var_os(NOSIGNAL_ENV).is_some_and(|v| v == "off");
    let yes = !off
        && nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map(|(_r, w)| {
                pwritev2(
                    std::os::fd::AsFd::as_fd(&w),
                    &[IoSlice::new(&[0])],
                    RWF_NOSIGNAL,
                )
                .is_ok()
            })
            .unwrap_or(false);
    NOSIGNAL_KNOWN.store(if yes { 1 } else { 2 }, Relaxed);
    yes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_always_right_flags_are_set() {
        assert!(SOCKET_FLAGS.contains(SockFlag::SOCK_CLOEXEC));
        assert!(SEND_FLAGS.contains(MsgFlags::MSG_NOSIGNAL));
        assert!(RECV_FLAGS.contains(MsgFlags::MSG_CMSG_CLOEXEC));
        assert!(socket_flags(true).contains(SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK));
    }
}
