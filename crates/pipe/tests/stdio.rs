//! Frames over a child's stdio: the child takes over its stdin and stdout
//! with `PipeTransport::stdio()`, the parent uses
//! `PipeTransport::from_child`. Stray prints after the take-over (the
//! child's own `println!`, a grandchild inheriting stdio) land on stderr,
//! never in the frame stream; the child's death is the clean end after its
//! queued frames.
//!
//! The child is this test binary in a role, and the test harness prints a
//! line to stdout before any test runs ("running 1 test"). So each role
//! first prints [`MARKER`], and the parent reads the child's stdout raw up
//! to it before handing the pipe to `from_child`: everything after the
//! marker must be frames.

#[path = "../../transport/tests/common/mod.rs"]
mod common;
mod util;

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{Guard, CHILD_TIMEOUT};
use courier_pipe::PipeTransport;
use courier_transport::{FrameTransport, Wait};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use util::{pattern, queued, recv, send};

const MARKER: &[u8] = b"<<courier-pipe stdio test: frames follow>>";
const QUEUED: u64 = 5;
const QUEUED_LEN: usize = 1000;

const ROLES: &[(&str, fn())] = &[
    ("echo", echo),
    ("send_then_linger", send_then_linger),
    ("send_then_exit", send_then_exit),
];

#[test]
#[ignore = "child role: run by the other tests of this file"]
fn role_entry() {
    common::run_role(ROLES)
}

/// In a child: the marker, then stdio taken over.
fn take_over_stdio() -> PipeTransport {
    let mut out = std::io::stdout();
    out.write_all(MARKER).unwrap();
    out.flush().unwrap();
    PipeTransport::stdio().expect("stdio transport")
}

/// Echoes each frame back with "echo:" in front, until end of stream.
fn echo() {
    let t = take_over_stdio();
    common::assert_cloexec("the transport's read fd", t.readable_fd());
    common::assert_cloexec("the transport's write fd", t.writable_fd());
    assert_eq!(
        std::fs::read_link("/proc/self/fd/0").unwrap(),
        std::path::Path::new("/dev/null"),
        "fd 0 after the take-over"
    );
    assert_eq!(
        std::fs::read_link("/proc/self/fd/1").unwrap(),
        std::fs::read_link("/proc/self/fd/2").unwrap(),
        "fd 1 is not stderr after the take-over"
    );
    // Stray output after the take-over: on stderr, not in the frames.
    println!("stray");
    print!("stray without newline ");
    std::io::stdout().flush().unwrap();
    let status = Command::new("sh")
        .args(["-c", "echo grandchild-stray"])
        .status()
        .expect("run sh");
    assert!(status.success());
    // stdin is /dev/null now.
    let mut rest = Vec::new();
    assert_eq!(std::io::stdin().read_to_end(&mut rest).unwrap(), 0);

    let mut buf = Vec::new();
    loop {
        match t.recv_frame(&mut buf, 8 << 20, &mut Vec::new(), 0, Wait::Block) {
            Ok(Some(len)) => {
                let mut back = b"echo:".to_vec();
                back.extend_from_slice(&buf[..len]);
                send(&t, &back, Wait::Block).unwrap();
            }
            Ok(None) => break,
            Err(e) => panic!("child recv: {e}"),
        }
    }
    eprintln!("echo: end of stream");
}

fn send_queued(t: &PipeTransport) {
    for i in 0..QUEUED {
        send(t, &pattern(i, QUEUED_LEN), Wait::Block).unwrap();
    }
}

/// Sends a few frames, then waits to be killed (bounded).
fn send_then_linger() {
    let t = take_over_stdio();
    send_queued(&t);
    thread::sleep(CHILD_TIMEOUT);
}

/// Sends a few frames and exits.
fn send_then_exit() {
    let t = take_over_stdio();
    send_queued(&t);
}

/// Reads the child's stdout raw, one byte at a time, up to and including
/// the marker (bounded), so nothing after it is consumed.
fn skip_to_marker(child: &mut Child) {
    let out = child.stdout.as_mut().expect("stdout piped");
    let deadline = Instant::now() + CHILD_TIMEOUT;
    let mut seen = Vec::new();
    while !seen.ends_with(MARKER) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no marker from the child; got {seen:?}");
        let mut fds = [PollFd::new(out.as_fd(), PollFlags::POLLIN)];
        let ms = PollTimeout::try_from(left.as_millis().min(10_000) as i32).unwrap();
        if nix::poll::poll(&mut fds, ms).unwrap() == 0 {
            continue;
        }
        let mut byte = [0u8];
        let n = out.read(&mut byte).unwrap();
        assert_eq!(n, 1, "the child's stdout ended before the marker: {seen:?}");
        seen.push(byte[0]);
    }
}

fn spawn_role(name: &str, stderr: Stdio) -> (Guard, PipeTransport) {
    let mut cmd = common::role(name);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr);
    let mut child = Guard::spawn(cmd);
    skip_to_marker(&mut child.0);
    let t = PipeTransport::from_child(&mut child.0).expect("from_child");
    assert!(child.0.stdin.is_none() && child.0.stdout.is_none());
    (child, t)
}

#[test]
fn a_child_on_its_stdio_echoes_frames_and_strays_go_to_stderr() {
    let (mut child, t) = spawn_role("echo", Stdio::piped());
    let mut stderr = child.0.stderr.take().unwrap();
    let frames: Vec<Vec<u8>> = [1usize, 5, 4096, 70_000, 3 << 20, 17]
        .iter()
        .enumerate()
        .map(|(i, &n)| pattern(100 + i as u64, n))
        .collect();
    thread::scope(|s| {
        s.spawn(|| {
            for f in &frames {
                send(&t, f, Wait::Block).unwrap();
            }
        });
        for (i, f) in frames.iter().enumerate() {
            let got = recv(&t, 8 << 20, Wait::Until(Instant::now() + CHILD_TIMEOUT))
                .unwrap_or_else(|e| panic!("echo {i}: {e}"))
                .unwrap_or_else(|| panic!("echo {i}: end of stream"));
            assert!(got.starts_with(b"echo:"), "echo {i}: not an echo");
            assert!(got[5..] == f[..], "echo {i}: contents differ");
        }
    });
    // Closing our ends is the child's end of stream: it exits.
    drop(t);
    child.wait_success();
    let mut text = String::new();
    stderr.read_to_string(&mut text).unwrap();
    assert!(
        text.contains("stray\n"),
        "the stray println is not on stderr: {text:?}"
    );
    assert!(text.contains("stray without newline"), "{text:?}");
    assert!(
        text.contains("grandchild-stray"),
        "the grandchild's output: {text:?}"
    );
    assert!(text.contains("echo: end of stream"), "{text:?}");
}

/// The child is killed with frames still queued: they are all received,
/// then the clean end.
#[test]
fn a_killed_child_frames_are_drained_then_the_end() {
    let (mut child, t) = spawn_role("send_then_linger", Stdio::inherit());
    let want = QUEUED as usize * (QUEUED_LEN + courier_pipe::PREFIX_LEN);
    let start = Instant::now();
    while queued(t.readable_fd()) < want {
        assert!(
            start.elapsed() < CHILD_TIMEOUT,
            "the child never sent its frames"
        );
        thread::sleep(Duration::from_millis(2));
    }
    child.0.kill().unwrap();
    let status = child.wait();
    assert!(!status.success());
    for i in 0..QUEUED {
        let got = util::recv_soon(&t, 1 << 20);
        assert!(got == pattern(i, QUEUED_LEN), "frame {i}");
    }
    assert_eq!(recv(&t, 1 << 20, util::after_ms(10_000)).unwrap(), None);
    assert_eq!(recv(&t, 1 << 20, Wait::Never).unwrap(), None);
    // Sending to it now is an error, not a death.
    let err = send(&t, b"anyone?", Wait::Block).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BrokenPipe, "{err}");
}

/// The child exits on its own after sending.
#[test]
fn an_exited_child_frames_are_drained_then_the_end() {
    let (mut child, t) = spawn_role("send_then_exit", Stdio::inherit());
    child.wait_success();
    for i in 0..QUEUED {
        let got = util::recv_soon(&t, 1 << 20);
        assert!(got == pattern(i, QUEUED_LEN), "frame {i}");
    }
    assert_eq!(recv(&t, 1 << 20, util::after_ms(10_000)).unwrap(), None);
}

/// from_child needs both pipes, and hands back what it took when one is
/// missing.
#[test]
fn from_child_needs_stdin_and_stdout_piped() {
    let mut child = Guard::spawn({
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "exit 0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null());
        cmd
    });
    let err = PipeTransport::from_child(&mut child.0).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(child.0.stdin.is_some(), "stdin was taken and lost");
    child.wait_success();

    let mut child = Guard::spawn({
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "exit 0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        cmd
    });
    let err = PipeTransport::from_child(&mut child.0).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    child.wait_success();
}
