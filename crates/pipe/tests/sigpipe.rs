//! A pipe whose reader is gone is an error for the sender, never a death by
//! SIGPIPE, whatever the process's SIGPIPE disposition, mask and pending
//! set; and the library leaves a SIGPIPE that was pending before alone.
//!
//! Every check runs in a child (this test binary re-executed in a role),
//! whose SIGPIPE disposition is set for the role (the Rust runtime ignores
//! SIGPIPE before `main`; `SIG_DFL` is put back and verified in
//! /proc/self/status). The control role proves the `SIG_DFL` setup is live:
//! a raw `write(2)` to the same kind of broken pipe kills it.
//!
//! Pending signals are read from /proc/thread-self/status: `SigPnd` is the
//! calling thread's own pending set (where the kernel puts the SIGPIPE of a
//! pipe write), `ShdPnd` the process-wide one (`kill(2)`).

#[path = "../../transport/tests/common/mod.rs"]
mod common;
mod util;

use std::io::{self, ErrorKind};
use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::time::{Duration, Instant};

use common::Guard;
use courier_channel::{Config, Endpoint, SendError, SendTimeoutError, TrySendError};
use courier_transport::{FrameTransport, Wait};
use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal};
use util::{after_ms, queued, send, SOON};

const ROLES: &[(&str, fn())] = &[
    ("control_raw_write", control_raw_write),
    ("dfl_transport", dfl_transport),
    ("dfl_typed", dfl_typed),
    ("ign_transport", ign_transport),
    ("blocked_beforehand", blocked_beforehand),
    ("pending_beforehand", pending_beforehand),
    ("process_pending_beforehand", process_pending_beforehand),
    ("dfl_reader_gone_mid_frame", dfl_reader_gone_mid_frame),
    (
        "dfl_typed_reader_gone_mid_value",
        dfl_typed_reader_gone_mid_value,
    ),
    (
        "blocked_reader_gone_mid_frame",
        blocked_reader_gone_mid_frame,
    ),
];

#[test]
#[ignore = "child role: run by the other tests of this file"]
fn role_entry() {
    common::run_role(ROLES)
}

// ---------------------------------------------------------------- helpers

/// A signal set from a hex mask line of /proc/thread-self/status.
fn status_has_sigpipe(field: &str) -> bool {
    let status = std::fs::read_to_string("/proc/thread-self/status").expect("status");
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} line"));
    let mask = u64::from_str_radix(line[field.len()..].trim(), 16).expect("hex mask");
    mask & (1 << (nix::libc::SIGPIPE - 1)) != 0
}

/// SIGPIPE is pending for this thread only.
fn thread_pending() -> bool {
    status_has_sigpipe("SigPnd:")
}

/// SIGPIPE is pending for the whole process.
fn process_pending() -> bool {
    status_has_sigpipe("ShdPnd:")
}

fn sigpipe_set() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGPIPE);
    set
}

fn sigpipe_blocked() -> bool {
    SigSet::thread_get_mask()
        .expect("mask")
        .contains(Signal::SIGPIPE)
}

/// Installs `handler` for SIGPIPE and checks /proc agrees.
#[allow(unsafe_code)]
fn set_sigpipe(handler: SigHandler) {
    let want_ignored = matches!(handler, SigHandler::SigIgn);
    // SAFETY: SIG_DFL and SIG_IGN install no handler function, so no
    // async-signal-safety rule can be broken; nothing else in this process
    // handles SIGPIPE.
    unsafe { nix::sys::signal::signal(Signal::SIGPIPE, handler) }.expect("set SIGPIPE");
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("SigIgn:")).unwrap();
    let ignored = u64::from_str_radix(line["SigIgn:".len()..].trim(), 16).unwrap()
        & (1 << (nix::libc::SIGPIPE - 1))
        != 0;
    assert_eq!(
        ignored, want_ignored,
        "SIGPIPE disposition not as set: the test would prove nothing"
    );
}

/// A transport whose outgoing pipe has no reader any more.
fn broken_pair() -> courier_pipe::PipeTransport {
    let (a, b) = courier_pipe::pair().expect("pair");
    drop(b);
    a
}

/// Sends in all three waits to a reader that is gone: each is BrokenPipe.
fn send_all_ways_broken(a: &courier_pipe::PipeTransport) {
    for wait in [Wait::Block, Wait::Never, after_ms(200)] {
        let err = send(a, b"anyone?", wait).expect_err("send to a gone reader");
        assert_eq!(err.kind(), ErrorKind::BrokenPipe, "{wait:?}: {err}");
    }
    // Larger than the pipe: the deadline path that starts at once.
    let big = vec![0u8; (4 << 20) + 1];
    for wait in [Wait::Block, Wait::Never, after_ms(200)] {
        let err = send(a, &big, wait).expect_err("big send to a gone reader");
        assert_eq!(err.kind(), ErrorKind::BrokenPipe, "{wait:?}: {err}");
    }
}

/// Starts a child role once per way a write avoids SIGPIPE — the kernel's
/// `RWF_NOSIGNAL` (Linux 6.18+) and the signal-mask path of older kernels,
/// forced by `NOSIGNAL_ENV=off` — and returns its exit status, the same
/// for both (bounded waits).
fn run(name: &str) -> std::process::ExitStatus {
    run_both(name, common::role)
}

fn run_both(name: &str, make: impl Fn(&str) -> std::process::Command) -> std::process::ExitStatus {
    let statuses = [false, true].map(|old_path| {
        let mut cmd = make(name);
        if old_path {
            cmd.env(courier_transport::pipe::NOSIGNAL_ENV, "off");
        }
        Guard::spawn(cmd).wait()
    });
    assert_eq!(
        statuses[0].signal(),
        statuses[1].signal(),
        "role {name}: the two write paths ended differently: {statuses:?}"
    );
    statuses[0]
}

fn assert_lived(name: &str, status: std::process::ExitStatus) {
    assert_eq!(
        status.signal(),
        None,
        "role {name}: the child was killed by signal {:?}",
        status.signal()
    );
    assert!(status.success(), "role {name}: child failed: {status:?}");
}

/// A sender blocked in the middle of a frame larger than the pipe when its
/// reader goes away: fills the pipe with `send`, then drops the reading
/// transport, and returns what the send returned.
fn reader_gone_mid_frame<T: Send + 'static>(
    send: impl FnOnce(courier_pipe::PipeTransport) -> T + Send + 'static,
) -> T {
    let (a, b) = courier_pipe::pair().expect("pair");
    let capacity = a.capacity().expect("a pipe");
    let sender = std::thread::spawn(move || send(a));
    // The pipe full means the sender's write has copied a capacity's
    // worth and waits for room: its write has already returned bytes.
    let start = Instant::now();
    while queued(b.readable_fd()) < capacity {
        assert!(start.elapsed() < SOON, "the sender never filled the pipe");
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(20));
    drop(b);
    sender.join().expect("sender thread")
}

// ---------------------------------------------------------------- roles

/// The control: a raw write to a pipe without a reader, SIGPIPE at default:
/// this process must die of SIGPIPE (the parent expects signal 13).
fn control_raw_write() {
    set_sigpipe(SigHandler::SigDfl);
    let (r, w) = util::raw_pipe();
    drop(r);
    let _ = nix::unistd::write(w.as_fd(), b"anyone?");
    eprintln!("control survived a write to a broken pipe");
}

fn dfl_transport() {
    set_sigpipe(SigHandler::SigDfl);
    assert!(!sigpipe_blocked());
    let a = broken_pair();
    send_all_ways_broken(&a);
    assert!(!sigpipe_blocked(), "the library left SIGPIPE blocked");
    assert!(!thread_pending() && !process_pending());
}

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct Note {
    text: String,
    bulk: courier_channel::Bytes,
}

fn dfl_typed() {
    set_sigpipe(SigHandler::SigDfl);
    let ep = Endpoint::<Note, Note>::with_transport(Box::new(broken_pair()), Config::new());
    let note = || Note {
        text: "anyone?".into(),
        bulk: vec![1; 100].into(),
    };
    match ep.send(note()) {
        Err(SendError::Disconnected(v)) => assert_eq!(v, note()),
        other => panic!("send: expected Disconnected, got {other:?}"),
    }
    match ep.try_send(note()) {
        Err(TrySendError::Disconnected(v)) => assert_eq!(v, note()),
        other => panic!("try_send: expected Disconnected, got {other:?}"),
    }
    match ep.send_timeout(note(), Duration::from_millis(200)) {
        Err(SendTimeoutError::Disconnected(v)) => assert_eq!(v, note()),
        other => panic!("send_timeout: expected Disconnected, got {other:?}"),
    }
    assert!(!thread_pending() && !process_pending());
}

fn ign_transport() {
    set_sigpipe(SigHandler::SigIgn);
    let a = broken_pair();
    send_all_ways_broken(&a);
}

/// SIGPIPE blocked by the caller: the library raises and consumes its
/// own, and leaves the mask blocked.
fn blocked_beforehand() {
    set_sigpipe(SigHandler::SigDfl);
    sigpipe_set().thread_block().expect("block");
    let a = broken_pair();
    send_all_ways_broken(&a);
    assert!(
        sigpipe_blocked(),
        "the library unblocked the caller's SIGPIPE"
    );
    assert!(
        !thread_pending() && !process_pending(),
        "a SIGPIPE the library raised was left pending"
    );
    // Nothing pending: unblocking is harmless.
    sigpipe_set().thread_unblock().expect("unblock");
}

/// A SIGPIPE pending (raised to this thread while blocked) before the
/// sends: still pending after them, and only that one (signals do not
/// queue, so one sigwait empties the set).
fn pending_beforehand() {
    set_sigpipe(SigHandler::SigDfl);
    sigpipe_set().thread_block().expect("block");
    nix::sys::signal::raise(Signal::SIGPIPE).expect("raise");
    assert!(thread_pending(), "the raised SIGPIPE is not pending");
    let a = broken_pair();
    send_all_ways_broken(&a);
    assert!(
        sigpipe_blocked(),
        "the library unblocked the caller's SIGPIPE"
    );
    assert!(
        thread_pending(),
        "the library consumed a SIGPIPE that was pending before its write"
    );
    assert_eq!(sigpipe_set().wait().expect("sigwait"), Signal::SIGPIPE);
    assert!(!thread_pending() && !process_pending());
    sigpipe_set().thread_unblock().expect("unblock");
}

/// A SIGPIPE pending for the process (`kill`, every thread blocking it:
/// the parent starts this role with SIGPIPE blocked) before the send: the
/// library must leave that one and consume the one its own write raised
/// for this thread.
fn process_pending_beforehand() {
    assert!(
        sigpipe_blocked(),
        "started without SIGPIPE blocked: the test would prove nothing"
    );
    set_sigpipe(SigHandler::SigDfl);
    nix::sys::signal::kill(nix::unistd::getpid(), Signal::SIGPIPE).expect("kill");
    assert!(process_pending(), "the SIGPIPE sent is not pending");
    assert!(!thread_pending());
    let a = broken_pair();
    let err = send(&a, b"anyone?", Wait::Block).expect_err("send to a gone reader");
    assert_eq!(err.kind(), ErrorKind::BrokenPipe, "{err}");
    assert!(process_pending(), "the pre-existing SIGPIPE was consumed");
    assert!(
        !thread_pending(),
        "the SIGPIPE the library's own write raised was left pending in the \
         writing thread (a process-wide SIGPIPE was pending before the write)"
    );
}

/// The reader goes away while a blocking send is inside a frame larger
/// than the pipe: the write has returned part of the frame when the
/// kernel raises SIGPIPE. The send must fail with BrokenPipe and this
/// process live.
fn dfl_reader_gone_mid_frame() {
    set_sigpipe(SigHandler::SigDfl);
    let result = reader_gone_mid_frame(|a| send(&a, &vec![5u8; 4 << 20], Wait::Block));
    let err = result.expect_err("send to a reader that went away");
    assert_eq!(err.kind(), ErrorKind::BrokenPipe, "{err}");
    assert!(!thread_pending() && !process_pending());
}

/// The same through a typed channel: a 4 MiB value (pipes carry every
/// value inline) to a peer that goes away mid-value is `Disconnected`.
fn dfl_typed_reader_gone_mid_value() {
    set_sigpipe(SigHandler::SigDfl);
    let result = reader_gone_mid_frame(|a| {
        let ep = Endpoint::<Note, Note>::with_transport(Box::new(a), Config::new());
        ep.send(Note {
            text: "big".into(),
            bulk: vec![9; 4 << 20].into(),
        })
    });
    match result {
        Err(SendError::Disconnected(v)) => assert_eq!(v.bulk.len(), 4 << 20),
        other => panic!("expected Disconnected, got {other:?}"),
    }
}

/// The same with SIGPIPE blocked by the caller: the process cannot die,
/// but the SIGPIPE the library's write raised must not be left pending.
fn blocked_reader_gone_mid_frame() {
    set_sigpipe(SigHandler::SigDfl);
    // Blocked in this thread, which the sending thread inherits.
    sigpipe_set().thread_block().expect("block");
    let result = reader_gone_mid_frame(|a| {
        let r = send(&a, &vec![5u8; 4 << 20], Wait::Block);
        let left_pending = thread_pending();
        let still_blocked = sigpipe_blocked();
        (r, left_pending, still_blocked)
    });
    let (r, left_pending, still_blocked) = result;
    let err = r.expect_err("send to a reader that went away");
    assert_eq!(err.kind(), ErrorKind::BrokenPipe, "{err}");
    assert!(still_blocked, "the library unblocked the caller's SIGPIPE");
    assert!(
        !left_pending,
        "a SIGPIPE raised by the library's write was left pending in the sending thread"
    );
}

// ---------------------------------------------------------------- tests

#[test]
fn control_a_raw_write_to_a_broken_pipe_dies_of_sigpipe() {
    let status = run("control_raw_write");
    assert_eq!(
        status.signal(),
        Some(nix::libc::SIGPIPE),
        "control did not die of SIGPIPE: {status:?}"
    );
}

#[test]
fn sig_dfl_a_gone_reader_is_broken_pipe_and_the_sender_lives() {
    assert_lived("dfl_transport", run("dfl_transport"));
}

#[test]
fn sig_dfl_a_typed_send_to_a_gone_reader_is_disconnected() {
    assert_lived("dfl_typed", run("dfl_typed"));
}

#[test]
fn sig_ign_a_gone_reader_is_broken_pipe() {
    assert_lived("ign_transport", run("ign_transport"));
}

#[test]
fn sigpipe_blocked_beforehand_stays_blocked_and_nothing_is_left_pending() {
    assert_lived("blocked_beforehand", run("blocked_beforehand"));
}

#[test]
fn a_sigpipe_pending_before_the_send_stays_pending() {
    assert_lived("pending_beforehand", run("pending_beforehand"));
}

#[test]
#[allow(unsafe_code)]
fn a_process_wide_pending_sigpipe_does_not_keep_the_librarys_own_pending() {
    let status = run_both("process_pending_beforehand", |name| {
        let mut cmd = common::role(name);
        // SAFETY: the closure runs in the child between fork and exec and
        // only calls pthread_sigmask, which is async-signal-safe; it
        // allocates nothing and takes no lock. (std clears the mask before
        // it.)
        unsafe {
            cmd.pre_exec(|| {
                sigpipe_set()
                    .thread_swap_mask(SigmaskHow::SIG_BLOCK)
                    .map(drop)
                    .map_err(io::Error::from)
            })
        };
        cmd
    });
    assert_lived("process_pending_beforehand", status);
}

#[test]
fn sig_dfl_reader_gone_in_the_middle_of_a_frame_is_broken_pipe_not_death() {
    assert_lived(
        "dfl_reader_gone_mid_frame",
        run("dfl_reader_gone_mid_frame"),
    );
}

#[test]
fn sig_dfl_typed_peer_gone_in_the_middle_of_a_large_value_is_disconnected() {
    assert_lived(
        "dfl_typed_reader_gone_mid_value",
        run("dfl_typed_reader_gone_mid_value"),
    );
}

#[test]
fn sigpipe_blocked_reader_gone_in_the_middle_of_a_frame_leaves_nothing_pending() {
    assert_lived(
        "blocked_reader_gone_mid_frame",
        run("blocked_reader_gone_mid_frame"),
    );
}
