//! Pipes next to AF_UNIX socketpairs, on real kernel objects: the claims of
//! `docs/pipes-vs-socketpairs.md` that no other test of the workspace shows.
//! Most checks use raw system calls (nix), because the point is what the
//! kernel does underneath courier; a few use courier's own types.
//!
//! Cross-process checks start real processes: `sleep` holding an inherited
//! fd, or this test binary re-executed in a named role (see
//! `common::role`); never a bare `fork()` of the multi-threaded harness.
//! Every wait is bounded. Other tests of this binary may spawn processes at
//! any moment, and between their fork and exec those children briefly hold
//! copies of every fd; such copies can only delay an end of file, so every
//! "the end arrives" check waits seconds, and every "no end yet" check is
//! unaffected by them.

#[path = "../crates/transport/tests/common/mod.rs"]
mod common;

use std::fs::File;
use std::io::{IoSlice, IoSliceMut, Read};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Guard;
use courier::transport::{FrameTransport, SeqPacketSocket, Wait};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    getsockopt, recv, recvmsg, send, sendmsg, setsockopt, socketpair, sockopt, AddressFamily,
    ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType,
};

const ROLES: &[(&str, fn())] = &[
    ("write_once", write_once),
    ("sigpipe_seqpacket_then_pipe", sigpipe_seqpacket_then_pipe),
    ("unprivileged_limits", unprivileged_limits),
];

#[test]
#[ignore = "child role: run by the other tests of this file"]
fn role_entry() {
    common::run_role(ROLES)
}

// ---- helpers ---------------------------------------------------------------

/// How long a "nothing happens" check watches.
const QUIET: Duration = Duration::from_millis(300);
/// How long a "this happens" check waits at most.
const SOON: Duration = Duration::from_secs(10);

/// The page size, from the auxiliary vector (`AT_PAGESZ`).
fn page_size() -> usize {
    const AT_PAGESZ: u64 = 6;
    let auxv = std::fs::read("/proc/self/auxv").expect("read /proc/self/auxv");
    auxv.chunks_exact(16)
        .map(|e| {
            (
                u64::from_ne_bytes(e[..8].try_into().unwrap()),
                u64::from_ne_bytes(e[8..].try_into().unwrap()),
            )
        })
        .find(|(key, _)| *key == AT_PAGESZ)
        .map(|(_, value)| value as usize)
        .expect("AT_PAGESZ in auxv")
}

/// A new pipe with `O_CLOEXEC` and `extra` flags: (read end, write end).
fn pipe_with(extra: OFlag) -> (File, File) {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | extra).expect("pipe2");
    (File::from(r), File::from(w))
}

fn pipe() -> (File, File) {
    pipe_with(OFlag::empty())
}

/// A raw AF_UNIX socketpair of `ty`, close-on-exec, plus `extra` flags.
fn raw_pair(ty: SockType, extra: SockFlag) -> (OwnedFd, OwnedFd) {
    socketpair(
        AddressFamily::Unix,
        ty,
        None,
        SockFlag::SOCK_CLOEXEC | extra,
    )
    .expect("socketpair")
}

/// Takes ownership of an fd the kernel just installed here (SCM_RIGHTS).
#[allow(unsafe_code)]
fn own(raw: RawFd) -> OwnedFd {
    // SAFETY: `raw` was installed in this process by the recvmsg that
    // returned it, and nothing else knows or owns that number.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

/// The bytes queued in a pipe (FIONREAD; either end names the same buffer).
fn queued(fd: impl AsFd) -> usize {
    courier::transport::pipe::queued_bytes(fd.as_fd()).expect("FIONREAD")
}

fn pipe_capacity(fd: impl AsFd) -> usize {
    fcntl(fd.as_fd(), FcntlArg::F_GETPIPE_SZ).expect("F_GETPIPE_SZ") as usize
}

/// Polls `fd` once for `events`, waiting at most `timeout`.
fn poll_for(fd: BorrowedFd<'_>, events: PollFlags, timeout: Duration) -> PollFlags {
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    let mut fds = [PollFd::new(fd, events)];
    nix::poll::poll(&mut fds, PollTimeout::from(ms)).expect("poll");
    fds[0].revents().unwrap_or(PollFlags::empty())
}

/// Reads `/proc/sys/...` as a number.
fn sysctl(path: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The `/proc` link of an fd of this process (`pipe:[ino]`, `socket:[ino]`).
fn link_of(fd: impl AsFd) -> String {
    let raw = fd.as_fd().as_raw_fd();
    std::fs::read_link(format!("/proc/self/fd/{raw}"))
        .expect("readlink")
        .to_string_lossy()
        .into_owned()
}

/// Starts `sleep 30` holding a copy of `fd` (made inheritable in that child
/// only, by courier's `inherit`), and checks in `/proc` that it holds it.
fn holder_of(fd: OwnedFd) -> Guard {
    let link = link_of(&fd);
    let mut cmd = Command::new("sleep");
    cmd.arg("30").stdin(Stdio::null());
    let passed = courier::transport::inherit(&mut cmd, fd).expect("inherit");
    let number = passed.number();
    let holder = Guard::spawn(cmd); // returns once `sleep` has been exec'd
    drop(passed);
    let held = std::fs::read_link(format!("/proc/{}/fd/{number}", holder.pid()))
        .map(|t| t.to_string_lossy().into_owned());
    assert_eq!(
        held.ok().as_deref(),
        Some(link.as_str()),
        "holder lacks the fd"
    );
    holder
}

/// Sends `fds` with a raw sendmsg (no courier checks in between).
fn send_fds(sock: &impl AsFd, data: &[u8], fds: &[RawFd]) -> nix::Result<usize> {
    sendmsg::<()>(
        sock.as_fd().as_raw_fd(),
        &[IoSlice::new(data)],
        &[ControlMessage::ScmRights(fds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
}

/// Receives one message and its fds (at most 4) with raw recvmsg and `flags`.
fn recv_fds(sock: &impl AsFd, flags: MsgFlags) -> (Vec<u8>, Vec<OwnedFd>) {
    let mut buf = [0u8; 64];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(sock.as_fd().as_raw_fd(), &mut iov, Some(&mut space), flags)
        .expect("recvmsg");
    let len = msg.bytes;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs().expect("cmsgs") {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            fds.extend(raw.into_iter().map(own));
        }
    }
    (buf[..len].to_vec(), fds)
}

// ---- what a user sees ----------------------------------------------------------

/// A pipe is one-way: its read end cannot write and its write end cannot
/// read (EBADF). Each end of a socketpair does both.
#[test]
fn a_pipe_is_one_way_a_socketpair_both_ways() {
    let (r, w) = pipe();
    assert_eq!(nix::unistd::write(&r, b"x"), Err(Errno::EBADF));
    assert_eq!(nix::unistd::read(&w, &mut [0; 1]), Err(Errno::EBADF));

    let (a, b) = raw_pair(SockType::SeqPacket, SockFlag::empty());
    let mut buf = [0u8; 8];
    for (from, to) in [(&a, &b), (&b, &a)] {
        send(from.as_raw_fd(), b"hi", MsgFlags::MSG_NOSIGNAL).expect("send");
        let n = recv(to.as_raw_fd(), &mut buf, MsgFlags::empty()).expect("recv");
        assert_eq!(&buf[..n], b"hi");
    }
}

/// A pipe is a byte stream: two writes come back from one read. SEQPACKET
/// and DGRAM keep each send as one message; a buffer too small for a
/// message truncates it (MSG_TRUNC) and the rest is gone: the next receive
/// gets the next message.
#[test]
fn a_pipe_merges_writes_seqpacket_and_dgram_keep_each_message() {
    let (r, w) = pipe();
    nix::unistd::write(&w, b"first").unwrap();
    nix::unistd::write(&w, b"second").unwrap();
    let mut buf = [0u8; 64];
    let n = nix::unistd::read(&r, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"firstsecond", "one read returns both writes");

    for ty in [SockType::SeqPacket, SockType::Datagram] {
        let (a, b) = raw_pair(ty, SockFlag::empty());
        for msg in [&b"first"[..], b"second", b"0123456789", b"after"] {
            send(a.as_raw_fd(), msg, MsgFlags::MSG_NOSIGNAL).unwrap();
        }
        let mut buf = [0u8; 64];
        let n = recv(b.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
        assert_eq!(&buf[..n], b"first", "{ty:?}");
        let n = recv(b.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
        assert_eq!(&buf[..n], b"second", "{ty:?}");

        let mut small = [0u8; 4];
        let (got, flags) = {
            let mut iov = [IoSliceMut::new(&mut small)];
            let msg = recvmsg::<()>(b.as_raw_fd(), &mut iov, None, MsgFlags::empty()).unwrap();
            (msg.bytes, msg.flags)
        };
        assert_eq!(got, 4, "{ty:?}");
        assert_eq!(&small, b"0123", "{ty:?}");
        assert!(flags.contains(MsgFlags::MSG_TRUNC), "{ty:?}: {flags:?}");
        let n = recv(b.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
        assert_eq!(&buf[..n], b"after", "{ty:?}: the truncated tail is gone");
    }
}

/// fds and credentials need a socket: sendmsg(SCM_RIGHTS) and
/// getsockopt(SO_PEERCRED) on a pipe fail with ENOTSOCK; on a socketpair
/// both work, and the passed fd arrives.
#[test]
fn fds_and_credentials_need_a_socket_a_pipe_gives_enotsock() {
    let (r, w) = pipe();
    assert_eq!(send_fds(&w, b"fd", &[r.as_raw_fd()]), Err(Errno::ENOTSOCK));
    assert_eq!(
        getsockopt(&w, sockopt::PeerCredentials).map(|_| ()),
        Err(Errno::ENOTSOCK)
    );

    let (a, b) = raw_pair(SockType::SeqPacket, SockFlag::empty());
    send_fds(&a, b"fd", &[r.as_raw_fd()]).expect("SCM_RIGHTS over a socket");
    let (data, fds) = recv_fds(&b, MsgFlags::MSG_CMSG_CLOEXEC);
    assert_eq!((data.as_slice(), fds.len()), (&b"fd"[..], 1));
    assert_eq!(link_of(&fds[0]), link_of(&r), "the same pipe arrived");
    for ty in [SockType::SeqPacket, SockType::Datagram] {
        let (_a, b) = raw_pair(ty, SockFlag::empty());
        let cred = getsockopt(&b, sockopt::PeerCredentials).expect("SO_PEERCRED");
        assert_eq!(cred.pid() as u32, std::process::id(), "{ty:?}");
    }
}

/// The kernel's own limit, without courier's check in front of it: 253 fds
/// in one sendmsg pass, 254 fail with EINVAL (SCM_MAX_FD), on SEQPACKET and
/// DGRAM alike.
#[test]
fn the_kernel_takes_at_most_253_fds_per_message() {
    let null = File::open("/dev/null").unwrap();
    let many = vec![null.as_raw_fd(); 254];
    for ty in [SockType::SeqPacket, SockType::Datagram] {
        let (a, b) = raw_pair(ty, SockFlag::SOCK_NONBLOCK);
        assert_eq!(send_fds(&a, b"253", &many[..253]), Ok(3), "{ty:?}");
        assert_eq!(send_fds(&a, b"254", &many), Err(Errno::EINVAL), "{ty:?}");
        drop((a, b)); // the 253 queued references go with the socket
    }
}

/// Close-on-exec is a flag of the fd-table entry, not of the file: the
/// sender's fd has it, the received one has it only if recvmsg was given
/// MSG_CMSG_CLOEXEC.
#[test]
fn received_fds_are_close_on_exec_only_with_msg_cmsg_cloexec() {
    let (a, b) = raw_pair(SockType::SeqPacket, SockFlag::empty());
    let null = File::open("/dev/null").unwrap(); // std opens with O_CLOEXEC
    assert!(common::is_cloexec(null.as_fd()));
    for (flags, cloexec) in [
        (MsgFlags::empty(), false),
        (MsgFlags::MSG_CMSG_CLOEXEC, true),
    ] {
        send_fds(&a, b"fd", &[null.as_raw_fd()]).unwrap();
        let (_, fds) = recv_fds(&b, flags);
        assert_eq!(fds.len(), 1);
        assert_eq!(
            common::is_cloexec(fds[0].as_fd()),
            cloexec,
            "received with {flags:?}"
        );
    }
}

/// EOF needs the last reference to go. A copy of a pipe's write end
/// inherited by `sleep` keeps the reader from seeing EOF after we close
/// ours, and courier-pipe's `shutdown(Write)` cannot help (a pipe has no
/// shutdown: it can only release its own end); the EOF comes when `sleep`
/// dies. A SEQPACKET socket's `shutdown(SHUT_WR)` ends the peer's stream at
/// once although `sleep` still holds a copy of the socket.
#[test]
fn a_stray_copy_delays_pipe_eof_but_not_socket_shutdown() {
    // Raw pipe.
    let (mut r, w) = pipe();
    let holder = holder_of(OwnedFd::from(w.try_clone().unwrap()));
    drop(w);
    let ev = poll_for(r.as_fd(), PollFlags::POLLIN, QUIET);
    assert!(ev.is_empty(), "EOF while a copy lives in `sleep`: {ev:?}");
    drop(holder); // killed and reaped: the last write end goes
    let ev = poll_for(r.as_fd(), PollFlags::POLLIN, SOON);
    assert!(
        ev.contains(PollFlags::POLLHUP),
        "no EOF after the holder died: {ev:?}"
    );
    assert_eq!(r.read(&mut [0; 8]).unwrap(), 0);

    // courier-pipe: shutdown(Write) releases our write end, no more.
    let (a, b) = courier::pipe::pair().unwrap();
    let holder = holder_of(a.writable_fd().try_clone_to_owned().unwrap());
    a.shutdown(Shutdown::Write).unwrap();
    let mut buf = Vec::new();
    let got = b.recv_frame(&mut buf, 64, &mut Vec::new(), 0, Wait::timeout(QUIET));
    assert_eq!(
        got.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::TimedOut),
        "courier-pipe: end of stream despite the copy in `sleep`"
    );
    drop(holder);
    let got = b.recv_frame(&mut buf, 64, &mut Vec::new(), 0, Wait::timeout(SOON));
    assert_eq!(
        got.unwrap(),
        None,
        "courier-pipe: no end after the holder died"
    );

    // SEQPACKET: shutdown(SHUT_WR) reaches the peer whatever copies exist.
    let (s, t) = SeqPacketSocket::pair().unwrap();
    let mut holder = holder_of(OwnedFd::from(s.try_clone().unwrap()));
    s.shutdown(Shutdown::Write).unwrap();
    let n = t
        .recv_timeout(&mut [0; 8], SOON)
        .expect("EOF, not a timeout");
    assert_eq!(n, 0, "end of stream");
    assert!(
        holder.0.try_wait().unwrap().is_none(),
        "the holder still holds a copy"
    );
}

/// Between fork and exec a child holds a copy of every fd of its parent,
/// close-on-exec or not: a SEQPACKET socket we close is still open in a
/// child that has forked but not yet exec'd (here held there by a
/// `pre_exec` hook waiting on a gate), so the peer sees no EOF; the exec
/// closes the copy and the EOF arrives. Any thread's spawn opens this
/// window for every fd of the process.
#[test]
fn a_forked_child_holds_close_on_exec_fds_until_it_execs() {
    use std::os::unix::process::CommandExt;
    let (s, t) = SeqPacketSocket::pair().unwrap();
    let (gate_r, gate_w) = pipe();
    /// Opens the gate (one byte) however the test ends, so the child execs.
    struct Gate(File);
    impl Drop for Gate {
        fn drop(&mut self) {
            let _ = nix::unistd::write(&self.0, b"g");
        }
    }
    let gate = Gate(gate_w);
    let mut cmd = Command::new("true");
    cmd.stdin(Stdio::null()).stdout(Stdio::null());
    let hook = move || {
        let _ = (&gate_r).read(&mut [0u8; 1]);
        Ok(())
    };
    #[allow(unsafe_code)]
    // SAFETY: the hook makes one read(2) on a file opened before the fork:
    // async-signal-safe, no allocation, no lock.
    unsafe {
        cmd.pre_exec(hook);
    }
    let spawner = std::thread::spawn(move || Guard::spawn(cmd)); // returns after exec
                                                                 // Wait (bounded) until the forked child exists and holds our socket.
    let link = link_of(&s);
    let deadline = Instant::now() + SOON;
    let child_pid = loop {
        let found = std::fs::read_dir("/proc").unwrap().flatten().find_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let ppid: u32 = stat
                .rsplit(')')
                .next()?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            let fds = std::fs::read_dir(e.path().join("fd")).ok()?;
            let holds = fds
                .flatten()
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == link));
            (ppid == std::process::id() && holds).then_some(pid)
        });
        if let Some(pid) = found {
            break pid;
        }
        assert!(
            Instant::now() < deadline,
            "no forked child holds the socket"
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    assert!(common::is_cloexec(s.as_fd()), "our socket is close-on-exec");
    drop(s);
    assert_eq!(
        t.recv_timeout(&mut [0; 8], QUIET).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::TimedOut),
        "EOF although child {child_pid} (forked, not exec'd) holds a copy"
    );
    drop(gate); // the child execs `true`: the close-on-exec copy goes
    let n = t
        .recv_timeout(&mut [0; 8], SOON)
        .expect("EOF after the exec");
    assert_eq!(n, 0);
    spawner.join().unwrap().wait_success();
}

/// On Linux a SEQPACKET send to a closed peer fails with EPIPE and raises
/// no SIGPIPE even without MSG_NOSIGNAL; a pipe write to a closed reader
/// raises SIGPIPE, which kills a process at the default disposition. Both
/// happen in one child: it reports the socket result, then dies on the pipe.
/// Runs `cmd` (stdout piped) to its end (bounded by `Guard`) and returns
/// its exit status and what it printed.
fn exit_and_output(cmd: Command) -> (std::process::ExitStatus, String) {
    let mut child = Guard::spawn(cmd);
    let status = child.wait();
    let mut out = String::new();
    child
        .0
        .stdout
        .take()
        .expect("stdout piped")
        .read_to_string(&mut out)
        .expect("read the child's stdout");
    (status, out)
}

#[test]
fn a_seqpacket_send_gives_epipe_a_pipe_write_kills_with_sigpipe() {
    let mut cmd = common::role("sigpipe_seqpacket_then_pipe");
    cmd.stdout(Stdio::piped());
    let (status, out) = exit_and_output(cmd);
    assert!(
        out.contains("SEQPACKET-EPIPE-ALIVE"),
        "the socket send did not end in EPIPE with the process alive; child said {out:?}, {status:?}"
    );
    assert_eq!(
        status.signal(),
        Some(nix::libc::SIGPIPE),
        "the pipe write did not kill the child: {status:?}"
    );
}

fn sigpipe_seqpacket_then_pipe() {
    use nix::sys::signal::{SigHandler, Signal};
    #[allow(unsafe_code)]
    // SAFETY: SIG_DFL installs no handler function, so no async-signal-safety
    // rule can be broken; nothing else in this process handles SIGPIPE.
    unsafe { nix::sys::signal::signal(Signal::SIGPIPE, SigHandler::SigDfl) }.unwrap();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let ign = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .unwrap();
    let ign = u64::from_str_radix(ign.trim(), 16).unwrap();
    assert_eq!(
        ign & (1 << (nix::libc::SIGPIPE - 1)),
        0,
        "SIGPIPE still ignored"
    );

    let (a, b) = raw_pair(SockType::SeqPacket, SockFlag::empty());
    drop(b);
    // No MSG_NOSIGNAL on purpose.
    assert_eq!(
        send(a.as_raw_fd(), b"anyone?", MsgFlags::empty()),
        Err(Errno::EPIPE)
    );
    println!("SEQPACKET-EPIPE-ALIVE");

    let (r, w) = pipe();
    drop(r);
    let _ = nix::unistd::write(&w, b"anyone?"); // SIGPIPE: the process dies here
    println!("PIPE-WRITE-SURVIVED");
}

// ---- sizes and limits --------------------------------------------------------

/// A new pipe holds 16 pages (64 KiB with 4 KiB pages). F_SETPIPE_SZ rounds
/// a request up to a power-of-two number of bytes, at least one page,
/// returns the new capacity, and refuses (EBUSY) to shrink below what is
/// queued. Up to /proc/sys/fs/pipe-max-size needs no privilege.
#[test]
fn default_pipe_capacity_and_f_setpipe_sz_rounding() {
    let page = page_size();
    let (_r, w) = pipe();
    // (A user past /proc/sys/fs/pipe-user-pages-soft without
    // CAP_SYS_RESOURCE gets smaller pipes; not the case here.)
    assert_eq!(pipe_capacity(&w), 16 * page, "default capacity");
    for (ask, want) in [
        (1, page),
        (page + 1, 2 * page),
        (3 * page - 1, 4 * page),
        (5 * page, 8 * page),
        (16 * page, 16 * page),
    ] {
        let got = fcntl(&w, FcntlArg::F_SETPIPE_SZ(ask as i32)).expect("F_SETPIPE_SZ");
        assert_eq!(got as usize, want, "asked {ask}");
        assert_eq!(pipe_capacity(&w), want);
    }
    nix::unistd::write(&w, &vec![7u8; 3 * page]).unwrap();
    assert_eq!(
        fcntl(&w, FcntlArg::F_SETPIPE_SZ(page as i32)),
        Err(Errno::EBUSY),
        "shrinking below the queued pages"
    );
    let max = sysctl("/proc/sys/fs/pipe-max-size");
    let got = fcntl(&w, FcntlArg::F_SETPIPE_SZ(max as i32)).expect("up to pipe-max-size");
    assert_eq!(got as usize, max);
}

/// A pipe is a ring of page-sized slots, and its capacity counts slots: a
/// write merges into the last page only when it fits there, otherwise it
/// takes new slots. Alternating 1-byte and 1-page writes use one slot
/// each, so the pipe is full with half its capacity in bytes; 64-byte
/// writes pack pages full and fill the whole capacity.
#[test]
fn a_pipe_counts_pages_not_bytes() {
    let page = page_size();
    let (r, w) = pipe_with(OFlag::O_NONBLOCK);
    let cap = pipe_capacity(&w);
    let slots = cap / page;
    let one = [1u8; 1];
    let full = vec![2u8; page];
    let mut writes = 0;
    loop {
        let buf: &[u8] = if writes % 2 == 0 { &one } else { &full };
        match nix::unistd::write(&w, buf) {
            Ok(n) => assert_eq!(n, buf.len(), "write {writes} was partial"),
            Err(Errno::EAGAIN) => break,
            Err(e) => panic!("write {writes}: {e}"),
        }
        writes += 1;
        assert!(writes <= 2 * slots, "more writes than slots");
    }
    assert_eq!(writes, slots, "one slot per write");
    assert_eq!(queued(&r), slots / 2 * (page + 1), "bytes in a full pipe");
    eprintln!(
        "pipe of {cap} bytes ({slots} slots): full after {writes} writes holding {} bytes",
        queued(&r)
    );

    let (r, w) = pipe_with(OFlag::O_NONBLOCK);
    let small = [3u8; 64];
    let mut writes = 0;
    while nix::unistd::write(&w, &small).is_ok() {
        writes += 1;
        assert!(writes <= cap, "never full");
    }
    assert_eq!(writes * small.len(), cap, "64-byte writes fill every byte");
    assert_eq!(queued(&r), cap);
}

/// PIPE_BUF (4096) is the atomicity bound. With the pipe's slots all used
/// and 300 bytes in the last page, a non-blocking write of at most PIPE_BUF
/// bytes goes in whole (200 bytes merge into the last page) or not at all
/// (4000 bytes: EAGAIN, nothing written); a larger write is split: of 5000
/// bytes, the 904 (5000 mod 4096) that fit the last page go in and the
/// call returns 904. The rest would follow in a later write, after whatever
/// another writer put in between.
#[test]
fn pipe_writes_up_to_pipe_buf_are_all_or_nothing_larger_ones_split() {
    let page = page_size();
    assert_eq!(page, 4096, "the figures below assume 4 KiB pages");
    let (r, w) = pipe_with(OFlag::O_NONBLOCK);
    let slots = pipe_capacity(&w) / page;
    let filled = nix::unistd::write(&w, &vec![0u8; (slots - 1) * page]).unwrap();
    assert_eq!(filled, (slots - 1) * page);
    assert_eq!(nix::unistd::write(&w, &[1u8; 100]), Ok(100)); // the last slot
    assert_eq!(
        nix::unistd::write(&w, &[2u8; 200]),
        Ok(200),
        "merged, whole"
    );
    let before = queued(&r);
    assert_eq!(
        nix::unistd::write(&w, &[3u8; 4000]),
        Err(Errno::EAGAIN),
        "<= PIPE_BUF and no room: nothing"
    );
    assert_eq!(queued(&r), before, "not a byte of it was written");
    assert_eq!(
        nix::unistd::write(&w, &[4u8; 5000]),
        Ok(904),
        "> PIPE_BUF: the part that fits"
    );
}

/// Two processes write into one pipe with single write(2) calls: A writes
/// 128 KiB into a 64 KiB pipe (so it blocks half way), B writes exactly
/// PIPE_BUF bytes while A is blocked. Reading a page at a time lets both
/// go on: B's 4096 bytes arrive contiguous (atomic), A's one write arrives
/// in two pieces with B's bytes between them (not atomic).
#[test]
fn two_writer_processes_a_pipe_buf_write_lands_whole_inside_a_larger_one() {
    const A_LEN: usize = 128 << 10;
    const B_LEN: usize = 4096;
    let page = page_size();
    let (mut r, w) = pipe();
    fcntl(&w, FcntlArg::F_SETPIPE_SZ(64 << 10)).unwrap();
    let cap = pipe_capacity(&w);
    assert_eq!(cap, 64 << 10);

    let writer = |byte: u8, len: usize| {
        let mut cmd = common::role("write_once");
        let passed =
            courier::transport::inherit(&mut cmd, OwnedFd::from(w.try_clone().unwrap())).unwrap();
        cmd.env("COURIER_TEST_FD", passed.number().to_string())
            .env("COURIER_TEST_LEN", len.to_string())
            .env("COURIER_TEST_BYTE", byte.to_string());
        let child = Guard::spawn(cmd);
        drop(passed);
        child
    };
    // Some thread of the child (libtest runs the role in a thread of its
    // own) sleeps inside write(2).
    let blocked_in_write = |child: &Guard| {
        let write_nr = nix::libc::SYS_write.to_string();
        let deadline = Instant::now() + SOON;
        loop {
            let tasks = std::fs::read_dir(format!("/proc/{}/task", child.pid()));
            let blocked = tasks.into_iter().flatten().flatten().any(|task| {
                let read = |file: &str| {
                    std::fs::read_to_string(task.path().join(file)).unwrap_or_default()
                };
                let stat = read("stat");
                let state = stat.rsplit(')').next().unwrap_or("").trim_start();
                read("syscall").split_whitespace().next() == Some(write_nr.as_str())
                    && state.starts_with('S')
            });
            if blocked {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "child {} never blocked in write",
                child.pid()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    };

    let mut a = writer(b'A', A_LEN);
    blocked_in_write(&a);
    assert_eq!(queued(&r), cap, "A filled the pipe and waits");
    let mut b = writer(b'B', B_LEN);
    blocked_in_write(&b);

    // A page at a time; after each, wait until a writer has refilled it.
    let mut stream = Vec::with_capacity(A_LEN + B_LEN);
    let mut page_buf = vec![0u8; page];
    while b.0.try_wait().unwrap().is_none() {
        assert!(stream.len() < A_LEN + B_LEN, "B never wrote");
        r.read_exact(&mut page_buf).unwrap();
        stream.extend_from_slice(&page_buf);
        // Until a writer has refilled the pipe, or B has gone: when B's
        // write is the last, nobody refills the page read after it.
        let deadline = Instant::now() + SOON;
        while !poll_for(w.as_fd(), PollFlags::POLLOUT, Duration::ZERO).is_empty() {
            if b.0.try_wait().unwrap().is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "no writer refilled the pipe");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    drop(w);
    let mut rest = vec![0u8; A_LEN + B_LEN - stream.len()];
    r.read_exact(&mut rest).unwrap();
    stream.extend_from_slice(&rest);
    a.wait_success();
    b.wait_success();

    let start = stream.iter().position(|&x| x == b'B').unwrap();
    let b_count = stream.iter().filter(|&&x| x == b'B').count();
    assert_eq!(b_count, B_LEN);
    assert!(
        stream[start..start + B_LEN].iter().all(|&x| x == b'B'),
        "B's PIPE_BUF-sized write was split"
    );
    assert!(
        start > 0 && start + B_LEN < stream.len(),
        "A's write was not split: B's bytes at {start}"
    );
    eprintln!(
        "A's single {A_LEN}-byte write arrived as {start} + {} bytes, B's {B_LEN} bytes whole between",
        stream.len() - start - B_LEN
    );
}

/// Child role: one write(2) of `COURIER_TEST_LEN` bytes of
/// `COURIER_TEST_BYTE` to fd `COURIER_TEST_FD`.
fn write_once() {
    let var = |name: &str| -> usize { std::env::var(name).unwrap().parse().unwrap() };
    let fd = var("COURIER_TEST_FD") as RawFd;
    let buf = vec![var("COURIER_TEST_BYTE") as u8; var("COURIER_TEST_LEN")];
    #[allow(unsafe_code)]
    // SAFETY: the parent passed this fd number for this process alone, and
    // nothing else here owns or closes it.
    let fd = unsafe { courier::transport::adopt_inherited_fd(fd, |_| Ok(())) }.expect("adopt");
    let n = nix::unistd::write(&fd, &buf).expect("write");
    assert_eq!(n, buf.len(), "one write(2), all of it");
}

/// SO_SNDBUF: the kernel doubles what is asked (for its bookkeeping) and
/// caps the request at net.core.wmem_max. A SEQPACKET or DGRAM message may
/// be at most SO_SNDBUF - 32 bytes (EMSGSIZE above). With a large enough
/// buffer a second ceiling appears: one message must fit one socket buffer;
/// 4 MiB still goes, 6 MiB fails with ENOBUFS.
#[test]
fn socket_buffer_and_message_size_limits() {
    let wmem_max = sysctl("/proc/sys/net/core/wmem_max");
    let wmem_default = sysctl("/proc/sys/net/core/wmem_default");
    for ty in [SockType::SeqPacket, SockType::Datagram] {
        let (a, b) = raw_pair(ty, SockFlag::SOCK_NONBLOCK);
        assert_eq!(
            getsockopt(&a, sockopt::SndBuf).unwrap(),
            wmem_default,
            "{ty:?}"
        );
        let ask = 100_000.min(wmem_max);
        setsockopt(&a, sockopt::SndBuf, &ask).unwrap();
        let sndbuf = getsockopt(&a, sockopt::SndBuf).unwrap();
        assert_eq!(sndbuf, 2 * ask, "{ty:?}: doubled");
        let flags = MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT;
        let largest = vec![5u8; sndbuf - 32];
        assert_eq!(
            send(a.as_raw_fd(), &largest, flags),
            Ok(largest.len()),
            "{ty:?}"
        );
        let mut buf = vec![0u8; sndbuf];
        assert_eq!(
            recv(b.as_raw_fd(), &mut buf, MsgFlags::empty()),
            Ok(largest.len())
        );
        let over = vec![5u8; sndbuf - 31];
        assert_eq!(
            send(a.as_raw_fd(), &over, flags),
            Err(Errno::EMSGSIZE),
            "{ty:?}"
        );

        setsockopt(&a, sockopt::SndBuf, &(4 * wmem_max)).unwrap();
        assert_eq!(
            getsockopt(&a, sockopt::SndBuf).unwrap(),
            2 * wmem_max,
            "{ty:?}: capped"
        );
    }

    let size = 6 << 20;
    if 2 * wmem_max - 32 < size {
        eprintln!("skipped the ENOBUFS check: wmem_max {wmem_max} is below 3 MiB");
        return;
    }
    let six_mib = vec![6u8; size];
    let four_mib = vec![4u8; 4 << 20];
    let mut buf = vec![0u8; 4 << 20];
    for ty in [SockType::SeqPacket, SockType::Datagram] {
        let (a, b) = raw_pair(ty, SockFlag::SOCK_NONBLOCK);
        setsockopt(&a, sockopt::SndBuf, &wmem_max).unwrap();
        let sndbuf = getsockopt(&a, sockopt::SndBuf).unwrap();
        let flags = MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT;
        assert_eq!(
            send(a.as_raw_fd(), &four_mib, flags),
            Ok(4 << 20),
            "{ty:?}: 4 MiB"
        );
        assert_eq!(
            recv(b.as_raw_fd(), &mut buf, MsgFlags::empty()),
            Ok(4 << 20)
        );
        assert_eq!(
            send(a.as_raw_fd(), &six_mib, flags),
            Err(Errno::ENOBUFS),
            "{ty:?}: 6 MiB in one message with SO_SNDBUF {sndbuf}"
        );
    }
}

/// Each socket message is a buffer of its own, charged to the sender's
/// SO_SNDBUF at its true size (data, header and bookkeeping): a SEQPACKET
/// socketpair is full after a few hundred 1-byte messages, while a pipe
/// packs 1-byte writes into its pages and takes its whole capacity of them.
#[test]
fn each_socket_message_is_charged_as_a_buffer_of_its_own() {
    let (a, _b) = raw_pair(SockType::SeqPacket, SockFlag::SOCK_NONBLOCK);
    let sndbuf = getsockopt(&a, sockopt::SndBuf).unwrap();
    let mut messages = 0usize;
    loop {
        match send(
            a.as_raw_fd(),
            b"x",
            MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(1) => messages += 1,
            Err(Errno::EAGAIN) => break,
            other => panic!("send {messages}: {other:?}"),
        }
        assert!(messages <= sndbuf, "never full");
    }
    assert!(messages > 0);
    assert!(
        messages * 256 <= sndbuf,
        "{messages} one-byte messages in a {sndbuf}-byte send buffer: under 256 bytes each"
    );

    let (r, w) = pipe_with(OFlag::O_NONBLOCK);
    let cap = pipe_capacity(&w);
    let mut writes = 0usize;
    while nix::unistd::write(&w, b"x").is_ok() {
        writes += 1;
        assert!(writes <= cap, "never full");
    }
    assert_eq!(writes, cap);
    assert_eq!(queued(&r), cap);
    eprintln!(
        "SEQPACKET: full after {messages} one-byte messages (SO_SNDBUF {sndbuf}, about {} bytes \
         charged each); pipe: full after {writes} one-byte writes",
        sndbuf / messages
    );
}

/// An fd in flight is a reference to the open file: the write end of a
/// pipe sent over a socket and closed by the sender keeps the pipe open
/// (no EOF) until the receiver takes it and closes it, or until the
/// receiving socket is closed with the message still queued.
#[test]
fn an_fd_in_flight_keeps_its_file_open() {
    let (mut r, w) = pipe();
    let (a, b) = SeqPacketSocket::pair().unwrap();
    a.send_with_fds(b"w", &[w.as_fd()]).unwrap();
    drop(w);
    let ev = poll_for(r.as_fd(), PollFlags::POLLIN, QUIET);
    assert!(ev.is_empty(), "EOF with the write end in flight: {ev:?}");
    let mut fds = Vec::new();
    b.recv_with_fds(&mut [0; 8], &mut fds, 1).unwrap();
    assert_eq!(fds.len(), 1);
    assert!(
        poll_for(r.as_fd(), PollFlags::POLLIN, QUIET).is_empty(),
        "received, still open"
    );
    drop(fds);
    let ev = poll_for(r.as_fd(), PollFlags::POLLIN, SOON);
    assert!(ev.contains(PollFlags::POLLHUP), "{ev:?}");
    assert_eq!(r.read(&mut [0; 8]).unwrap(), 0);

    let (mut r, w) = pipe();
    let (a, b) = SeqPacketSocket::pair().unwrap();
    a.send_with_fds(b"w", &[w.as_fd()]).unwrap();
    drop(w);
    assert!(poll_for(r.as_fd(), PollFlags::POLLIN, QUIET).is_empty());
    drop(b); // never received: closing the receiver releases the queued fd
    let ev = poll_for(r.as_fd(), PollFlags::POLLIN, SOON);
    assert!(ev.contains(PollFlags::POLLHUP), "{ev:?}");
    assert_eq!(r.read(&mut [0; 8]).unwrap(), 0);
}

/// Sockets in flight can form a cycle no process can reach: `a` queued in
/// `b`'s receive queue and `b` (with a pipe's write end) queued in `a`'s.
/// After every fd is closed only the in-flight garbage collector can free
/// them; the pipe's EOF shows that it did.
#[test]
fn the_garbage_collector_frees_an_unreachable_cycle_in_flight() {
    let (mut r, w) = pipe();
    let (a, b) = SeqPacketSocket::pair().unwrap();
    a.send_with_fds(b"a", &[a.as_fd()]).unwrap(); // into b's queue
    b.send_with_fds(b"b", &[b.as_fd(), w.as_fd()]).unwrap(); // into a's queue
    drop(w);
    assert!(
        poll_for(r.as_fd(), PollFlags::POLLIN, QUIET).is_empty(),
        "EOF too early"
    );
    let closed = Instant::now();
    drop((a, b));
    // The collector runs when the kernel decides to (a release or a send
    // of an in-flight socket schedules it; which ones do varies with the
    // kernel's bookkeeping: on one machine the last close above ran it,
    // later in the same boot it did not). Passing and closing another
    // socket schedules a run; only the collector can free the cycle.
    let mut ev = poll_for(r.as_fd(), PollFlags::POLLIN, QUIET);
    let deadline = Instant::now() + SOON;
    while !ev.contains(PollFlags::POLLHUP) && Instant::now() < deadline {
        let (c, d) = SeqPacketSocket::pair().unwrap();
        c.send_with_fds(b"c", &[c.as_fd()]).unwrap();
        drop((c, d));
        ev = poll_for(r.as_fd(), PollFlags::POLLIN, QUIET);
    }
    assert!(
        ev.contains(PollFlags::POLLHUP),
        "the cycle was not collected within {SOON:?}: {ev:?}"
    );
    assert_eq!(r.read(&mut [0; 8]).unwrap(), 0);
    eprintln!(
        "cycle collected {:?} after the last close",
        closed.elapsed()
    );
}

/// The limits an unprivileged user meets (checked in a child that drops to
/// an otherwise unused uid when the tests run as root): F_SETPIPE_SZ above
/// /proc/sys/fs/pipe-max-size is EPERM, and fds in flight count against the
/// sender's RLIMIT_NOFILE: with a limit of 64, the 66th fd put in flight is
/// refused with ETOOMANYREFS, and sends work again once the receiver took
/// them.
#[test]
fn unprivileged_pipe_max_size_and_fds_in_flight() {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "ulimit -n 64 && exec \"$0\" \"$@\""])
        .arg(std::env::current_exe().unwrap())
        .args([
            "role_entry",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(common::ROLE_ENV, "unprivileged_limits")
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let (status, out) = exit_and_output(cmd);
    assert!(
        status.success(),
        "child failed: {status:?}; it said {out:?}"
    );
    if out.contains("SKIPPED") {
        eprintln!("skipped: the child kept CAP_SYS_RESOURCE or CAP_SYS_ADMIN");
        return;
    }
    let line = out
        .lines()
        .find(|l| l.starts_with("LIMITS-OK"))
        .expect("report");
    eprintln!("{line}");
}

/// Puts `/dev/null` in flight over `a`, one fd per message, until a send
/// fails or `most` are in flight; returns how many went and the error.
fn fill_in_flight(a: &OwnedFd, most: usize) -> (usize, Option<Errno>) {
    let null = File::open("/dev/null").unwrap();
    for sent in 0..most {
        if let Err(e) = send_fds(a, b"fd", &[null.as_raw_fd()]) {
            return (sent, Some(e));
        }
    }
    (most, None)
}

fn unprivileged_limits() {
    use nix::unistd::{Gid, Uid};
    let nofile = |limits: &str| -> usize {
        limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .unwrap()
            .parse()
            .unwrap()
    };
    let mut root_note = String::new();
    if nix::unistd::geteuid().is_root() {
        // First, as root: CAP_SYS_RESOURCE / CAP_SYS_ADMIN lift the limit.
        let limit = nofile(&std::fs::read_to_string("/proc/self/limits").unwrap());
        let (a, b) = raw_pair(SockType::SeqPacket, SockFlag::empty());
        let (sent, err) = fill_in_flight(&a, limit + 16);
        assert_eq!((sent, err), (limit + 16, None), "root was limited");
        drop((a, b));
        root_note = format!("; as root {sent} in flight were accepted");
        nix::unistd::setgroups(&[]).unwrap();
        // A uid of its own: the kernel counts fds in flight per user, and
        // another process of a shared uid (nobody) could hold some.
        let id = 200_000 + std::process::id();
        nix::unistd::setgid(Gid::from_raw(id)).unwrap();
        nix::unistd::setuid(Uid::from_raw(id)).unwrap();
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap();
    let cap_eff = u64::from_str_radix(cap_eff.trim(), 16).unwrap();
    const CAP_SYS_ADMIN: u64 = 21;
    const CAP_SYS_RESOURCE: u64 = 24;
    if cap_eff & (1 << CAP_SYS_ADMIN | 1 << CAP_SYS_RESOURCE) != 0 {
        println!("SKIPPED");
        return;
    }
    let nofile = nofile(&std::fs::read_to_string("/proc/self/limits").unwrap());
    assert_eq!(nofile, 64, "ulimit -n 64 did not take");

    let max = sysctl("/proc/sys/fs/pipe-max-size");
    let (_r, w) = pipe();
    assert_eq!(
        fcntl(&w, FcntlArg::F_SETPIPE_SZ((2 * max) as i32)),
        Err(Errno::EPERM),
        "above pipe-max-size without privilege"
    );

    let (a, b) = raw_pair(SockType::SeqPacket, SockFlag::empty());
    let (in_flight, refused) = fill_in_flight(&a, nofile + 10);
    assert_eq!(refused, Some(Errno::ETOOMANYREFS), "after {in_flight}");
    assert_eq!(
        in_flight,
        nofile + 1,
        "refused once more than RLIMIT_NOFILE were in flight"
    );
    for _ in 0..in_flight {
        let (_, fds) = recv_fds(&b, MsgFlags::MSG_CMSG_CLOEXEC);
        assert_eq!(fds.len(), 1);
    }
    assert_eq!(
        fill_in_flight(&a, 1),
        (1, None),
        "accepted again once received"
    );
    println!(
        "LIMITS-OK uid {} nofile {nofile}: {in_flight} fds in flight, then ETOOMANYREFS; \
         F_SETPIPE_SZ({}) EPERM{root_note}",
        nix::unistd::geteuid(),
        2 * max
    );
}

// ---- what they share ----------------------------------------------------------

/// Both are files in the same fd table: a pipe is one object with two ends
/// (both fds name the same `pipe:[inode]`), a socketpair two socket
/// objects; poll reports readable data and a gone peer (POLLHUP) on both
/// the same way.
#[test]
fn pipes_and_sockets_are_files_that_poll_alike() {
    use nix::sys::stat::{fstat, SFlag};
    let kind =
        |fd: BorrowedFd<'_>| SFlag::from_bits_truncate(fstat(fd).unwrap().st_mode) & SFlag::S_IFMT;
    let (r, w) = pipe();
    let (a, b) = raw_pair(SockType::SeqPacket, SockFlag::empty());
    assert!(link_of(&r).starts_with("pipe:["), "{}", link_of(&r));
    assert_eq!(link_of(&r), link_of(&w), "one pipe, two ends");
    assert!(link_of(&a).starts_with("socket:["), "{}", link_of(&a));
    assert_ne!(link_of(&a), link_of(&b), "two sockets");
    assert_eq!(
        (kind(r.as_fd()), kind(w.as_fd())),
        (SFlag::S_IFIFO, SFlag::S_IFIFO)
    );
    assert_eq!(
        (kind(a.as_fd()), kind(b.as_fd())),
        (SFlag::S_IFSOCK, SFlag::S_IFSOCK)
    );

    assert!(poll_for(r.as_fd(), PollFlags::POLLIN, Duration::ZERO).is_empty());
    assert!(poll_for(b.as_fd(), PollFlags::POLLIN, Duration::ZERO).is_empty());
    nix::unistd::write(&w, b"x").unwrap();
    send(a.as_raw_fd(), b"x", MsgFlags::MSG_NOSIGNAL).unwrap();
    assert_eq!(
        poll_for(r.as_fd(), PollFlags::POLLIN, SOON),
        PollFlags::POLLIN
    );
    assert_eq!(
        poll_for(b.as_fd(), PollFlags::POLLIN, SOON),
        PollFlags::POLLIN
    );
    drop((w, a));
    let pipe_ev = poll_for(r.as_fd(), PollFlags::POLLIN, SOON);
    let sock_ev = poll_for(b.as_fd(), PollFlags::POLLIN, SOON);
    assert!(
        pipe_ev.contains(PollFlags::POLLIN | PollFlags::POLLHUP),
        "{pipe_ev:?}"
    );
    assert!(
        sock_ev.contains(PollFlags::POLLIN | PollFlags::POLLHUP),
        "{sock_ev:?}"
    );
}
