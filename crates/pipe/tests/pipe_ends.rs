//! Pipe ends: capacity (raised by `pair()`, reported by `capacity()`),
//! close-on-exec and release of the fds, `shutdown`, and `check_pipe_end`,
//! which accepts pipe ends of the right direction only.
//!
//! Every test here holds `fd_lock`, so the fd-table comparisons see no
//! other test's fds.

#[path = "../../transport/tests/common/mod.rs"]
mod common;
mod util;

use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;

use courier_pipe::{check_pipe_end, pair, PipeTransport, TARGET_CAPACITY};
use courier_transport::{FrameTransport, Wait};
use nix::fcntl::{fcntl, FcntlArg};

fn pipe_max_size() -> usize {
    std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn f_getpipe_sz(fd: impl AsFd) -> usize {
    fcntl(fd.as_fd(), FcntlArg::F_GETPIPE_SZ).expect("F_GETPIPE_SZ") as usize
}

#[test]
fn pair_raises_both_pipes_and_reports_the_capacity() {
    let _fds = common::fd_lock();
    let max = pipe_max_size();
    let (a, b) = pair().unwrap();
    for (name, t) in [("a", &a), ("b", &b)] {
        let cap = t.capacity().expect("a pipe has a capacity");
        assert!(cap >= 64 << 10, "{name}: capacity {cap} below the default");
        assert!(
            cap <= max,
            "{name}: capacity {cap} above pipe-max-size {max}"
        );
        assert!(
            cap <= TARGET_CAPACITY,
            "{name}: capacity {cap} above the target"
        );
        assert_eq!(cap, f_getpipe_sz(t.writable_fd()), "{name}: F_GETPIPE_SZ");
        // The pipe it reads from was raised as well.
        assert!(f_getpipe_sz(t.readable_fd()) >= 64 << 10);
    }
    // a writes the pipe b reads.
    assert_eq!(f_getpipe_sz(a.writable_fd()), f_getpipe_sz(b.readable_fd()));
}

#[test]
fn new_over_raw_pipes_raises_them_and_never_lowers() {
    let _fds = common::fd_lock();
    let (r1, w1) = util::raw_pipe();
    let (r2, w2) = util::raw_pipe();
    // Make one bigger than the default first: new() must not lower it.
    let big = pipe_max_size().min(TARGET_CAPACITY);
    fcntl(w2.as_fd(), FcntlArg::F_SETPIPE_SZ(big as i32)).unwrap();
    let before = f_getpipe_sz(&w2);
    let t = PipeTransport::new(r1, w2).unwrap();
    assert_eq!(t.capacity(), Some(f_getpipe_sz(t.writable_fd())));
    assert!(t.capacity().unwrap() >= before);
    assert!(f_getpipe_sz(t.readable_fd()) >= 64 << 10);
    drop((r2, w1));
}

/// Over a socket (not a pipe): no capacity, frames still work.
#[test]
fn from_stream_over_a_socket_has_no_capacity_and_carries_frames() {
    let _fds = common::fd_lock();
    let (s1, s2) = UnixStream::pair().unwrap();
    let a = PipeTransport::from_stream(s1).unwrap();
    let b = PipeTransport::from_stream(s2).unwrap();
    assert_eq!(a.capacity(), None);
    let frame = util::pattern(3, 300_000);
    std::thread::scope(|s| {
        s.spawn(|| util::send(&a, &frame, Wait::Block).unwrap());
        assert!(util::recv_soon(&b, 1 << 20) == frame);
    });
    util::send(&b, b"back", util::after_ms(1000)).unwrap();
    assert_eq!(util::recv_soon(&a, 1024), b"back");
    drop(b);
    assert_eq!(util::recv(&a, 1024, util::after_ms(5000)).unwrap(), None);
}

#[test]
fn check_pipe_end_accepts_the_right_ends() {
    let _fds = common::fd_lock();
    let (r, w) = util::raw_pipe();
    check_pipe_end(r.as_fd(), true).unwrap();
    check_pipe_end(w.as_fd(), false).unwrap();
    let (a, _b) = pair().unwrap();
    check_pipe_end(a.readable_fd(), true).unwrap();
    check_pipe_end(a.writable_fd(), false).unwrap();
}

#[test]
fn check_pipe_end_refuses_the_wrong_direction() {
    let _fds = common::fd_lock();
    let (r, w) = util::raw_pipe();
    for (what, fd, reading) in [
        ("read end", r.as_fd(), false),
        ("write end", w.as_fd(), true),
    ] {
        let err = check_pipe_end(fd, reading).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{what}: {err}");
    }
}

#[test]
fn check_pipe_end_refuses_what_is_not_a_pipe() {
    let _fds = common::fd_lock();
    let dir = common::temp_dir();
    let file = std::fs::File::create(dir.path().join("plain")).unwrap();
    let null = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .unwrap();
    let (s1, _s2) = UnixStream::pair().unwrap();
    for (what, fd) in [
        ("a regular file", file.as_fd()),
        ("/dev/null", null.as_fd()),
        ("a socket", s1.as_fd()),
    ] {
        for reading in [true, false] {
            let err = check_pipe_end(fd, reading).unwrap_err();
            assert_eq!(
                err.kind(),
                ErrorKind::InvalidInput,
                "{what} (reading {reading}): {err}"
            );
        }
    }
}

/// A FIFO is a pipe: its read-only and write-only opens are accepted the
/// right way round.
#[test]
fn check_pipe_end_takes_fifo_ends() {
    let _fds = common::fd_lock();
    let dir = common::temp_dir();
    let path = dir.path().join("fifo");
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).unwrap();
    // Non-blocking opens: the read end first, so the write end finds a reader.
    let r = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(&path)
        .unwrap();
    let w = OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(&path)
        .unwrap();
    check_pipe_end(r.as_fd(), true).unwrap();
    check_pipe_end(w.as_fd(), false).unwrap();
    assert_eq!(
        check_pipe_end(r.as_fd(), false).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        check_pipe_end(w.as_fd(), true).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
}

#[test]
fn pair_fds_are_close_on_exec_and_released_on_drop() {
    let _fds = common::fd_lock();
    let before = common::fd_table();
    let (a, b) = pair().unwrap();
    for (name, t) in [("a", &a), ("b", &b)] {
        common::assert_cloexec(&format!("{name} readable"), t.readable_fd());
        common::assert_cloexec(&format!("{name} writable"), t.writable_fd());
    }
    assert_eq!(
        common::fd_table().len(),
        before.len() + 4,
        "pair() opened other than 4 fds"
    );
    drop((a, b));
    assert_eq!(common::fd_table(), before, "fds left open after drop");
}

/// `shutdown(Write)`: the peer receives what was queued, then the end;
/// later sends here are BrokenPipe; the fd numbers stay open (on
/// /dev/null) until the transport is dropped.
#[test]
fn shutdown_write_ends_the_peers_stream_after_the_queued_frames() {
    let _fds = common::fd_lock();
    let before = common::fd_table();
    let (a, b) = pair().unwrap();
    util::send(&a, b"queued", Wait::Block).unwrap();
    a.shutdown(Shutdown::Write).unwrap();
    a.shutdown(Shutdown::Write).unwrap(); // twice is fine
    let err = util::send(&a, b"late", Wait::Block).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BrokenPipe, "{err}");
    assert_eq!(util::recv_soon(&b, 1024), b"queued");
    assert_eq!(util::recv(&b, 1024, util::after_ms(5000)).unwrap(), None);
    // The other direction still works.
    util::send(&b, b"back", Wait::Block).unwrap();
    assert_eq!(util::recv_soon(&a, 1024), b"back");
    assert_eq!(common::fd_table().len(), before.len() + 4);
    drop((a, b));
    assert_eq!(common::fd_table(), before);
}

/// `shutdown(Read)`: the peer's sends fail with BrokenPipe, receives here
/// end at once.
#[test]
fn shutdown_read_makes_the_peers_sends_broken_pipe() {
    let _fds = common::fd_lock();
    let (a, b) = pair().unwrap();
    b.shutdown(Shutdown::Read).unwrap();
    assert_eq!(util::recv(&b, 1024, Wait::Never).unwrap(), None);
    let err = util::send(&a, b"anyone?", Wait::Block).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BrokenPipe, "{err}");
    // b still sends to a.
    util::send(&b, b"from b", Wait::Block).unwrap();
    assert_eq!(util::recv_soon(&a, 1024), b"from b");
}

#[test]
fn shutdown_read_wakes_a_sender_blocked_on_a_full_pipe() {
    let _fds = common::fd_lock();
    let (a, b) = pair().unwrap();
    let frame = vec![1u8; 100_000];
    // Filled with frames of one page: `try_` refuses one only when no page
    // is free, so the pipe is then really full.
    let page = vec![2u8; 4000];
    while util::send(&a, &page, Wait::Never).is_ok() {}
    std::thread::scope(|s| {
        let blocked = s.spawn(|| util::send(&a, &frame, Wait::Block));
        std::thread::sleep(std::time::Duration::from_millis(50));
        b.shutdown(Shutdown::Read).unwrap();
        let start = std::time::Instant::now();
        while !blocked.is_finished() {
            assert!(
                start.elapsed() < util::SOON,
                "the blocked sender was not woken"
            );
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let err = blocked.join().unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BrokenPipe, "{err}");
    });
}
