//! `CommandExt::spawn_endpoint` and `from_env` across real processes: a
//! child spawned with a handshaken channel, what the child finds (and
//! what its own children do not), refusals of unusable inheritances,
//! handshake failures at spawn, inheritance that stays race-free while
//! other threads spawn, end of stream that survives a leaked copy of a
//! socket, and the notice of a child's death.
//!
//! Children are this test binary re-executed in a named role (see
//! `common::role`); a role reports failure by panicking (non-zero exit).

#[path = "../crates/transport/tests/common/mod.rs"]
mod common;
mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Guard, CHILD_TIMEOUT};
use courier::transport::{DatagramSocket, SeqPacketSocket};
use courier::{
    from_env, CommandExt, Config, ConnectError, Endpoint, Fd, RecvTimeoutError, Spawned,
    CHANNEL_ENV,
};
use serde::{Deserialize, Serialize};
use support::{
    assert_reaped, collect_lines, fdinfo_flags, lines_of, race_spawns, say, wait_line, wait_within,
    with_stdout_pipe, Race,
};

// ---- messages ---------------------------------------------------------

/// Parent to child.
#[derive(Serialize, Deserialize, Debug)]
enum Request {
    /// Write `text` into `out`, then answer with [`Response::Pid`].
    Write {
        text: String,
        out: Fd<std::io::PipeWriter>,
    },
    /// Answer with [`Response::Pong`] of the same number.
    Ping(u64),
}

/// Child to parent.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Response {
    Pid(u32),
    Pong(u64),
    Ready,
    Seq(u32),
    /// A holder grandchild's pid and the `/proc` link of the socket it
    /// holds a copy of.
    Holder {
        pid: u32,
        link: String,
    },
}

/// The parent's end: sends requests, receives responses.
type ParentEnd = Endpoint<Request, Response>;
/// The child's end.
type ChildEnd = Endpoint<Response, Request>;

const PROTOCOL: &str = "courier-spawn-test";

/// What both ends use, unless a test says otherwise. The handshake timeout
/// is generous: a re-executed test binary can be slow to start under load.
fn config() -> Config {
    Config::new()
        .protocol(PROTOCOL, 1)
        .handshake_timeout(CHILD_TIMEOUT)
}

// ---- roles ------------------------------------------------------------

const ROLES: &[(&str, fn())] = &[
    ("echo_child", echo_child),
    ("env_child", env_child),
    ("refuse", refuse),
    ("mismatch_child", mismatch_child),
    ("exit_at_once", exit_at_once),
    ("eof_child", eof_child),
    ("await_eof", await_eof),
    ("leaky_child", leaky_child),
    ("flood", flood),
];

#[test]
#[ignore = "child role: run by the other tests of this file"]
fn role_entry() {
    common::run_role(ROLES)
}

/// The case a `refuse` child checks.
const CASE_ENV: &str = "COURIER_TEST_CASE";
/// Set (to anything) for an `eof_child` started by a plain spawn: it then
/// checks that it got no channel instead of using one.
const NO_CHANNEL_ENV: &str = "COURIER_TEST_NO_CHANNEL";

/// The socket fds of this process, as (fd, `socket:[inode]`).
fn socket_fds() -> Vec<(i32, String)> {
    common::fd_table()
        .into_iter()
        .map(|(fd, target)| (fd, target.to_string_lossy().into_owned()))
        .filter(|(_, target)| target.starts_with("socket:"))
        .collect()
}

/// The `/proc` link (`socket:[inode]`) of an fd of this process.
fn link_of(fd: impl AsFd) -> String {
    let raw = fd.as_fd().as_raw_fd();
    std::fs::read_link(format!("/proc/self/fd/{raw}"))
        .expect("readlink")
        .to_string_lossy()
        .into_owned()
}

/// The fd number named by [`CHANNEL_ENV`] (`seqpacket:<n>`).
fn channel_fd_from_env() -> i32 {
    let value = std::env::var(CHANNEL_ENV).expect("CHANNEL_ENV is set for a spawned child");
    value
        .strip_prefix("seqpacket:")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{CHANNEL_ENV}={value:?} is not seqpacket:<n>"))
}

const O_CLOEXEC: u32 = 0o2_000_000;

/// In a child: waits (bounded) for the parent's end of stream.
fn expect_disconnected(ep: &ChildEnd) {
    match ep.recv_timeout(CHILD_TIMEOUT) {
        Err(RecvTimeoutError::Disconnected) => {}
        Err(e) => panic!("expected Disconnected, got {e:?}"),
        Ok(v) => panic!("expected Disconnected, got {v:?}"),
    }
}

/// Runs `sh` with `script`, bounded; returns its stdout.
fn run_sh(script: &str, extra: impl FnOnce(&mut Command)) -> String {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    extra(&mut cmd);
    let mut child = Guard::spawn(cmd);
    let out = child.0.stdout.take().expect("stdout");
    let lines = lines_of(out);
    let status = child.wait();
    assert!(status.success(), "sh -c {script:?} failed: {status:?}");
    collect_lines(&lines, CHILD_TIMEOUT).join("\n")
}

/// What an unrelated process sees: the value of [`CHANNEL_ENV`] (or
/// "unset") and the `socket:` fds it holds, listed by `ls` of its own
/// `/proc/self/fd` (the shell execs `ls`, which keeps what the shell
/// inherited).
fn probe_with_sh() -> (String, Vec<String>) {
    let out = run_sh(
        r#"echo "env=${COURIER_CHANNEL-unset}"; exec ls -l /proc/self/fd"#,
        |_| {},
    );
    let env = out
        .lines()
        .find_map(|l| l.strip_prefix("env="))
        .expect("env line")
        .to_owned();
    let sockets = out
        .lines()
        .filter(|l| l.contains("socket:"))
        .map(str::to_owned)
        .collect();
    (env, sockets)
}

/// Test 1's child: writes through the passed pipe, answers with its pid,
/// then waits for the parent's end of stream.
fn echo_child() {
    let ep: ChildEnd = from_env(config()).expect("from_env");
    match ep.recv_timeout(CHILD_TIMEOUT).expect("request") {
        Request::Write { text, mut out } => {
            out.write_all(text.as_bytes()).expect("write to the pipe");
        } // `out` closes here: the parent's reader reaches EOF
        other => panic!("unexpected {other:?}"),
    }
    ep.send(Response::Pid(std::process::id())).expect("answer");
    expect_disconnected(&ep);
}

/// Test 2's child: what a spawned child finds before and after `from_env`,
/// and what its own child finds.
fn env_child() {
    // Before: exactly one socket, the one named by the variable, and it
    // is inheritable (that is how it got here). Any other socket would be
    // a leak from the parent (another thread's spawn, say).
    let n = channel_fd_from_env();
    let before = socket_fds();
    assert_eq!(
        before.iter().map(|(fd, _)| *fd).collect::<Vec<_>>(),
        vec![n],
        "a spawned child must hold exactly its channel socket: {before:?}"
    );
    assert_eq!(
        fdinfo_flags(n).expect("fd open") & O_CLOEXEC,
        0,
        "the inherited socket must have arrived without close-on-exec"
    );

    let ep: ChildEnd = from_env(config()).expect("from_env");

    // The variable is gone, so this process's children do not believe
    // they have a channel.
    assert!(
        std::env::var_os(CHANNEL_ENV).is_none(),
        "from_env must remove {CHANNEL_ENV}"
    );
    // Every socket is close-on-exec again, the adopted one included.
    let after = socket_fds();
    assert!(
        after.iter().any(|(fd, _)| *fd == n),
        "adopted fd {n} vanished"
    );
    for (fd, target) in &after {
        let flags = fdinfo_flags(*fd).expect("open");
        assert_ne!(
            flags & O_CLOEXEC,
            0,
            "socket fd {fd} ({target}) lacks close-on-exec after from_env"
        );
    }
    common::assert_cloexec("the adopted endpoint", &ep);
    assert_eq!(
        link_of(&ep),
        before[0].1,
        "the endpoint is the inherited socket"
    );
    let hello = ep.peer().expect("handshaken");
    assert_eq!((hello.protocol.as_str(), hello.version), (PROTOCOL, 1));

    // A second call finds no channel.
    match from_env::<Response, Request>(config()) {
        Err(ConnectError::NotInherited { reason }) => {
            assert!(reason.contains("not set"), "reason: {reason}")
        }
        other => panic!("second from_env: expected NotInherited, got {other:?}"),
    }
    // Even pointed at the adopted fd again by hand, from_env refuses it
    // (it is close-on-exec now, so it cannot be an inheritance) and leaves
    // it alone: a double adoption would close the endpoint's socket.
    std::env::set_var(CHANNEL_ENV, format!("seqpacket:{n}"));
    match from_env::<Response, Request>(config()) {
        Err(ConnectError::NotInherited { reason }) => {
            assert!(reason.contains("close-on-exec"), "reason: {reason}")
        }
        other => panic!("re-adoption: expected NotInherited, got {other:?}"),
    }
    assert!(std::env::var_os(CHANNEL_ENV).is_none());

    // A grandchild sees neither the variable nor any socket.
    let (env, sockets) = probe_with_sh();
    assert_eq!(env, "unset", "the grandchild sees {CHANNEL_ENV}");
    assert!(
        sockets.is_empty(),
        "the grandchild inherited sockets: {sockets:?}"
    );

    // The endpoint still works after all that.
    match ep.recv_timeout(CHILD_TIMEOUT).expect("ping") {
        Request::Ping(x) => ep.send(Response::Pong(x)).expect("pong"),
        other => panic!("unexpected {other:?}"),
    }
    expect_disconnected(&ep);
}

/// Test 3's child: `from_env` must refuse what it was given (the case in
/// [`CASE_ENV`]) with `NotInherited`, and leave a refused fd open.
fn refuse() {
    let case = std::env::var(CASE_ENV).expect("case");
    let quick = config().handshake_timeout(Duration::from_secs(2));
    let refusal = |what: &str| -> String {
        let started = Instant::now();
        // A short handshake timeout: a refusal never gets as far as the
        // handshake, and a wrongly accepted fd should fail this fast.
        let got = from_env::<Response, Request>(quick);
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_secs(1),
            "{what}: from_env took {elapsed:?}"
        );
        match got {
            Err(ConnectError::NotInherited { reason }) => reason,
            other => panic!("{what}: expected NotInherited, got {other:?}"),
        }
    };
    match case.as_str() {
        "unset" => {
            assert!(std::env::var_os(CHANNEL_ENV).is_none());
            let reason = refusal("unset");
            assert!(reason.contains("not set"), "reason: {reason}");
        }
        "malformed" => {
            let value = std::env::var(CHANNEL_ENV).expect("value");
            let reason = refusal(&value);
            assert!(
                reason.contains("not of the form seqpacket:<fd>"),
                "reason: {reason}"
            );
        }
        "not_open" => {
            let n = channel_fd_from_env();
            assert!(fdinfo_flags(n).is_none(), "fd {n} is open after all");
            let reason = refusal("not open");
            assert!(
                reason.contains(&format!("fd {n}")) && reason.contains("not open"),
                "reason: {reason}"
            );
        }
        "pipe" | "dgram" => {
            let n = channel_fd_from_env();
            let link_before = std::fs::read_link(format!("/proc/self/fd/{n}")).expect("open");
            let reason = refusal(&case);
            assert!(
                reason.contains(&format!("fd {n}")) && reason.contains("SOCK_SEQPACKET"),
                "reason: {reason}"
            );
            // Left as it was: open, the same object, still inheritable.
            let link_after = std::fs::read_link(format!("/proc/self/fd/{n}"))
                .unwrap_or_else(|e| panic!("fd {n} was closed by the refusal: {e}"));
            assert_eq!(link_before, link_after, "fd {n} was replaced");
            assert_eq!(
                fdinfo_flags(n).expect("open") & O_CLOEXEC,
                0,
                "fd {n}'s flags were changed by the refusal"
            );
            // And it still works.
            if case == "pipe" {
                // Through /proc, non-blocking: the parent closed the write
                // end, so the read gives what it wrote, then EOF.
                use std::os::unix::fs::OpenOptionsExt;
                let mut again = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(nix::libc::O_NONBLOCK)
                    .open(format!("/proc/self/fd/{n}"))
                    .expect("reopen the pipe");
                let mut got = String::new();
                again.read_to_string(&mut got).expect("read the pipe");
                assert_eq!(got, "pipe-still-open");
            } else {
                let flags = nix::sys::socket::MsgFlags::MSG_NOSIGNAL;
                nix::sys::socket::send(n, b"dgram-still-open", flags)
                    .expect("send on the refused DGRAM socket");
            }
        }
        "cloexec" => {
            // A socket this process made itself: close-on-exec, so not an
            // inheritance; from_env must not take it over.
            let (a, b) = SeqPacketSocket::pair().expect("pair");
            std::env::set_var(CHANNEL_ENV, format!("seqpacket:{}", a.as_raw_fd()));
            let reason = refusal("cloexec");
            assert!(reason.contains("close-on-exec"), "reason: {reason}");
            a.send(b"still mine")
                .expect("the refused socket still works");
            let mut buf = [0; 16];
            let len = b.recv_timeout(&mut buf, CHILD_TIMEOUT).expect("recv");
            assert_eq!(&buf[..len], b"still mine");
        }
        "listener" => {
            // A listening SEQPACKET socket is the right type but no
            // channel: from_env must fail, promptly, whatever the error.
            let started = Instant::now();
            let got = from_env::<Response, Request>(quick);
            let elapsed = started.elapsed();
            assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
            match got {
                Err(ConnectError::NotInherited { reason }) => {
                    assert!(reason.contains("not connected"), "reason: {reason}");
                    say(&format!("LISTENER {reason}"));
                }
                other => panic!("from_env on a listening socket: {other:?}"),
            }
        }
        other => panic!("unknown case {other}"),
    }
    // Whatever the refusal, a second call finds nothing more.
    assert!(matches!(
        from_env::<Response, Request>(config()),
        Err(ConnectError::NotInherited { .. })
    ));
}

/// Test 4's child: speaks version 2 of the protocol; exits 0 only when its
/// `from_env` reports the mismatch with both versions.
fn mismatch_child() {
    say(&format!("PID {}", std::process::id()));
    match from_env::<Response, Request>(config().protocol(PROTOCOL, 2)) {
        Err(
            e @ ConnectError::ProtocolMismatch {
                ours_version: 2,
                theirs_version: 1,
                ..
            },
        ) => {
            let text = e.to_string();
            assert!(text.contains("version 2") && text.contains("version 1"));
            say(&format!("MISMATCH {text}"));
        }
        other => panic!("expected a protocol mismatch, got {other:?}"),
    }
}

/// Test 4's child that exits without ever calling `from_env`.
fn exit_at_once() {
    say(&format!("PID {}", std::process::id()));
}

/// Test 5's (and the Command reuse test's) child: checks it holds exactly
/// its own socket, answers one ping, then waits for end of stream.
fn eof_child() {
    if std::env::var_os(NO_CHANNEL_ENV).is_some() {
        // Started by a plain spawn of a Command that spawn_endpoint used.
        assert!(
            std::env::var_os(CHANNEL_ENV).is_none(),
            "a plain spawn after spawn_endpoint still sets {CHANNEL_ENV}"
        );
        let sockets = socket_fds();
        assert!(sockets.is_empty(), "plain spawn inherited {sockets:?}");
        return;
    }
    let n = channel_fd_from_env();
    let sockets = socket_fds();
    assert_eq!(
        sockets.iter().map(|(fd, _)| *fd).collect::<Vec<_>>(),
        vec![n],
        "a courier child must hold only its own socket: {sockets:?}"
    );
    let ep: ChildEnd = from_env(config()).expect("from_env");
    match ep.recv_timeout(CHILD_TIMEOUT).expect("ping") {
        Request::Ping(x) => ep.send(Response::Pong(x)).expect("pong"),
        other => panic!("unexpected {other:?}"),
    }
    expect_disconnected(&ep);
}

/// Test 6a's child: says it is ready, then must see end of stream although
/// a holder process keeps a copy of the parent's socket; and its sends must
/// then fail (the parent's receiver is gone) instead of queueing for the
/// holder. The parent's drop shuts reading down before writing, so the
/// very first send after the end of stream must fail: none may slip
/// through into a socket no one reads (this caught the opposite order).
fn await_eof() {
    let ep: ChildEnd = from_env(config()).expect("from_env");
    ep.send(Response::Ready).expect("ready");
    expect_disconnected(&ep);
    match ep.send_timeout(Response::Ready, Duration::from_secs(5)) {
        Err(courier::SendTimeoutError::Disconnected(_)) => {}
        Ok(()) => panic!("a send after the end of stream went through to no reader"),
        Err(e) => panic!("send after the parent's drop: expected Disconnected, got {e:?}"),
    }
    say("SLIPPED 0");
}

/// Test 6c's child: gives a copy of its own socket to a holder grandchild,
/// reports it, drops its endpoint, and stays alive (with the holder) until
/// the parent closes its stdin.
fn leaky_child() {
    let ep: ChildEnd = from_env(config()).expect("from_env");
    let copy = ep
        .as_fd()
        .try_clone_to_owned()
        .expect("dup (close-on-exec)");
    let link = link_of(&copy);
    let mut holder_cmd = Command::new("sleep");
    holder_cmd.arg("30").stdin(Stdio::null());
    let passed = courier::transport::inherit(&mut holder_cmd, copy).expect("inherit");
    let holder = Guard::spawn(holder_cmd);
    drop(passed);
    ep.send(Response::Holder {
        pid: holder.0.id(),
        link,
    })
    .expect("report the holder");
    drop(ep); // shutdown: the parent must see end of stream despite the holder
              // Wait (bounded) for the parent to close our stdin, holder alive.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        let _ = tx.send(());
    });
    rx.recv_timeout(CHILD_TIMEOUT)
        .expect("the parent closes stdin");
    drop(holder); // killed and reaped
}

/// Test 7's child: sends 100 messages, says READY on stdout, then sleeps
/// until killed.
fn flood() {
    let ep: ChildEnd = from_env(config()).expect("from_env");
    for i in 0..DEATH_MESSAGES {
        ep.send_timeout(Response::Seq(i), Duration::from_secs(10))
            .expect("queued without the parent reading");
    }
    say("READY");
    std::thread::sleep(Duration::from_secs(30));
    panic!("flood: not killed within 30 s");
}

// ---- parent-side helpers ----------------------------------------------

/// Receives the next response, or explains the child's failure.
fn recv_from(ep: &ParentEnd, child: &mut Guard) -> Response {
    match ep.recv_timeout(CHILD_TIMEOUT) {
        Ok(r) => r,
        Err(e) => {
            let status = wait_within(child, Duration::from_secs(5));
            panic!("no response ({e:?}); child status {status:?}")
        }
    }
}

/// A spawned child's parts, the child guarded.
fn parts(spawned: Spawned<Request, Response>) -> (Guard, ParentEnd, Option<courier::PidFd>) {
    let Spawned {
        child,
        endpoint,
        pidfd,
        ..
    } = spawned;
    (Guard(child), endpoint, pidfd)
}

// ---- 1. basic ----------------------------------------------------------

/// Catches: a child that cannot find or adopt its channel, a request whose
/// fd does not arrive usable, a `Spawned::child` or `pidfd` that names
/// another process, and an endpoint whose drop does not end the child's
/// stream (the child would hang and time out).
#[test]
fn spawned_child_writes_through_a_passed_pipe_and_answers_with_its_pid() {
    let mut cmd = common::role("echo_child");
    let spawned = cmd
        .spawn_endpoint::<Request, Response>(config())
        .expect("spawn_endpoint");
    let (mut child, endpoint, pidfd) = parts(spawned);
    let hello = endpoint.peer().expect("a handshaken endpoint");
    assert_eq!((hello.protocol.as_str(), hello.version), (PROTOCOL, 1));

    let (reader, writer) = std::io::pipe().expect("pipe");
    let text = "through a pipe the parent passed to its spawned child";
    endpoint
        .send(Request::Write {
            text: text.into(),
            out: Fd::new(writer),
        })
        .expect("send");
    assert_eq!(
        recv_from(&endpoint, &mut child),
        Response::Pid(child.0.id()),
        "the answering child is Spawned::child"
    );

    if let Some(pidfd) = &pidfd {
        assert!(
            !pidfd.has_exited().expect("poll pidfd"),
            "the pidfd says exited while the child waits for us"
        );
    } else {
        eprintln!("no pidfd on this kernel: pidfd checks skipped");
    }
    drop(endpoint); // the child's recv sees end of stream and it exits 0
    if let Some(pidfd) = &pidfd {
        assert!(
            pidfd.wait_timeout(CHILD_TIMEOUT).expect("poll pidfd"),
            "the pidfd never reported the child's exit"
        );
    }
    child.wait_success();
    if let Some(pidfd) = &pidfd {
        assert!(pidfd.has_exited().expect("poll pidfd"));
    }
    // The child held the only copy of the write end: EOF now (bounded).
    let got = collect_lines(&lines_of(reader), Duration::from_secs(5));
    assert_eq!(got, [text]);
}

// ---- 2. the child's side ------------------------------------------------

/// Catches: a variable left set after `from_env`, an adopted socket left
/// inheritable (the grandchild would hold it), extra sockets leaking into
/// the child, a second adoption of the same fd, and a grandchild that sees
/// the channel. The checks run in the child (`env_child`).
#[test]
fn from_env_cleans_up_so_grandchildren_inherit_nothing() {
    let mut cmd = common::role("env_child");
    let spawned = cmd
        .spawn_endpoint::<Request, Response>(config())
        .expect("spawn_endpoint");
    let (mut child, endpoint, _) = parts(spawned);
    endpoint.send(Request::Ping(42)).expect("ping");
    assert_eq!(recv_from(&endpoint, &mut child), Response::Pong(42));
    drop(endpoint);
    child.wait_success();
}

// ---- 3. refusals ----------------------------------------------------------

/// Starts a `refuse` child for `case` (set up by `setup`) and asserts it
/// exits 0, i.e. that its checks passed.
fn run_refusal(case: &str, setup: impl FnOnce(&mut Command)) -> Guard {
    let mut cmd = common::role("refuse");
    cmd.env(CASE_ENV, case).env_remove(CHANNEL_ENV);
    setup(&mut cmd);
    Guard::spawn(cmd)
}

/// Catches: `from_env` accepting a missing or malformed variable, a closed
/// fd, or an fd of the wrong kind (pipe, DGRAM socket, one that is
/// close-on-exec so not inherited, a listener); and a refusal that closes
/// or alters the fd it was pointed at.
#[test]
fn from_env_refuses_what_is_not_an_inherited_seqpacket_socket() {
    run_refusal("unset", |_| {}).wait_success();

    for value in [
        "seqpacket:abc",
        "seqpacket:",
        "stream:5",
        "5",
        "seqpacket:2",
        "seqpacket:-1",
        "seqpacket:+7",
        "seqpacket: 7",
        "seqpacket:99999999999",
        "SEQPACKET:5",
    ] {
        let mut child = run_refusal("malformed", |cmd| {
            cmd.env(CHANNEL_ENV, value);
        });
        let status = child.wait();
        assert!(status.success(), "malformed {value:?}: child {status:?}");
    }

    run_refusal("not_open", |cmd| {
        cmd.env(CHANNEL_ENV, "seqpacket:777");
    })
    .wait_success();

    // A pipe: the child must refuse it, then still read what we wrote.
    let (reader, mut writer) = std::io::pipe().expect("pipe");
    writer.write_all(b"pipe-still-open").expect("write");
    drop(writer);
    let mut cmd = common::role("refuse");
    cmd.env(CASE_ENV, "pipe");
    let passed = courier::transport::inherit(&mut cmd, OwnedFd::from(reader)).expect("inherit");
    cmd.env(CHANNEL_ENV, format!("seqpacket:{}", passed.number()));
    let mut child = Guard::spawn(cmd);
    drop(passed);
    child.wait_success();

    // A DGRAM socket: refused, then still usable by the child.
    let (ours, theirs) = DatagramSocket::pair().expect("dgram pair");
    let mut cmd = common::role("refuse");
    cmd.env(CASE_ENV, "dgram");
    let passed = courier::transport::inherit(&mut cmd, OwnedFd::from(theirs)).expect("inherit");
    cmd.env(CHANNEL_ENV, format!("seqpacket:{}", passed.number()));
    let mut child = Guard::spawn(cmd);
    drop(passed);
    child.wait_success();
    let mut buf = [0; 64];
    let len = ours
        .recv_timeout(&mut buf, Duration::from_secs(5))
        .expect("the refused DGRAM socket still works in the child");
    assert_eq!(&buf[..len], b"dgram-still-open");

    run_refusal("cloexec", |_| {}).wait_success();

    // A listening SEQPACKET socket, inherited: the right type, no peer.
    let (listener, _, _) = common::abstract_listener();
    let mut cmd = common::role("refuse");
    cmd.env(CASE_ENV, "listener").stdout(Stdio::piped());
    let passed = courier::transport::inherit(&mut cmd, OwnedFd::from(listener)).expect("inherit");
    cmd.env(CHANNEL_ENV, format!("seqpacket:{}", passed.number()));
    let mut child = Guard::spawn(cmd);
    drop(passed);
    let lines = lines_of(child.0.stdout.take().expect("stdout"));
    child.wait_success();
    if let Some(err) = wait_line(&lines, "LISTENER ", Duration::from_secs(5)) {
        eprintln!("from_env on an inherited listening socket: {err}");
    }
}

// ---- 4. handshake failures at spawn --------------------------------------

/// Catches: a mismatch that goes unnoticed or loses the versions from its
/// message, and a failed child left running or unreaped.
#[test]
fn spawn_reports_a_protocol_mismatch_and_reaps_the_child() {
    let mut cmd = common::role("mismatch_child");
    let lines = with_stdout_pipe(&mut cmd);
    let got = cmd.spawn_endpoint::<Request, Response>(config().protocol("p", 1));
    drop(cmd); // its copy of the stdout pipe's write end
    let err = got.expect_err("versions 1 and 2 must not connect");
    let text = err.to_string();
    match &err {
        ConnectError::ProtocolMismatch {
            ours,
            ours_version: 1,
            theirs,
            theirs_version: 2,
        } => {
            assert_eq!(ours, "p");
            assert_eq!(theirs, PROTOCOL);
        }
        other => panic!("expected ProtocolMismatch 1 vs 2, got {other:?}"),
    }
    assert!(
        text.contains("version 1") && text.contains("version 2"),
        "the message must show both versions: {text}"
    );
    let out = collect_lines(&lines, CHILD_TIMEOUT);
    let pid: u32 = out
        .iter()
        .find_map(|l| l.strip_prefix("PID "))
        .expect("the child printed its pid before its handshake")
        .parse()
        .expect("pid");
    assert_reaped(pid);
    // spawn_endpoint kills the child at once, so it may or may not have
    // reported its own view first; if it did, it saw the mismatch too.
    match out.iter().find_map(|l| l.strip_prefix("MISMATCH ")) {
        Some(child_view) => eprintln!("child saw: {child_view}"),
        None => eprintln!("child was killed before reporting its side"),
    }
}

/// The child's side of a mismatch, deterministically: the parent runs the
/// handshake by hand over an inherited socket and does not kill the child,
/// which exits 0 only when its `from_env` reports the mismatch with both
/// versions. Catches a `from_env` that accepts a mismatched peer.
#[test]
fn from_env_reports_a_protocol_mismatch_to_the_child() {
    let (ours, theirs) = SeqPacketSocket::pair().expect("pair");
    let mut cmd = common::role("mismatch_child");
    let passed = courier::transport::inherit(&mut cmd, OwnedFd::from(theirs)).expect("inherit");
    cmd.env(CHANNEL_ENV, format!("seqpacket:{}", passed.number()));
    let mut child = Guard::spawn(cmd);
    drop(passed);
    match Endpoint::<Request, Response>::handshake(ours, config()) {
        Err(ConnectError::ProtocolMismatch {
            ours_version: 1,
            theirs_version: 2,
            ..
        }) => {}
        other => panic!("expected a mismatch, got {other:?}"),
    }
    child.wait_success();
}

/// Catches: a handshake that waits past its timeout for a child that
/// never speaks, and a timed-out child left running or unreaped.
#[test]
fn spawn_times_out_on_a_silent_child_and_reaps_it() {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("echo PID $$; exec sleep 30")
        .stdin(Stdio::null());
    let lines = with_stdout_pipe(&mut cmd);
    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let got = cmd.spawn_endpoint::<Request, Response>(config().handshake_timeout(timeout));
    let elapsed = started.elapsed();
    drop(cmd);
    match got {
        Err(ConnectError::Timeout { after }) => assert_eq!(after, timeout),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(elapsed >= timeout, "gave up after {elapsed:?}");
    assert!(
        elapsed < Duration::from_secs(5),
        "a 300 ms handshake timeout took {elapsed:?}"
    );
    // The pipe reaches EOF only once the child (sleep) is dead.
    let out = collect_lines(&lines, Duration::from_secs(5));
    match out.iter().find_map(|l| l.strip_prefix("PID ")) {
        Some(pid) => assert_reaped(pid.parse().expect("pid")),
        None => eprintln!("the shell was killed before printing its pid"),
    }
}

/// Catches: a child that exits before its handshake reported as a timeout
/// (after the whole handshake timeout) or as success.
#[test]
fn spawn_reports_closed_when_the_child_exits_first() {
    let mut cmd = common::role("exit_at_once");
    let lines = with_stdout_pipe(&mut cmd);
    let started = Instant::now();
    let got = cmd.spawn_endpoint::<Request, Response>(config());
    let elapsed = started.elapsed();
    drop(cmd);
    match got {
        Err(ConnectError::Closed) => {}
        other => panic!("expected Closed, got {other:?}"),
    }
    assert!(
        elapsed < CHILD_TIMEOUT / 2,
        "Closed came after {elapsed:?}, as if waiting for the timeout"
    );
    let out = collect_lines(&lines, CHILD_TIMEOUT);
    let pid = out
        .iter()
        .find_map(|l| l.strip_prefix("PID "))
        .expect("pid line");
    assert_reaped(pid.parse().expect("pid"));
}

/// Catches: a spawn failure reported as something else, and a variable or
/// hook left on the Command.
#[test]
fn spawn_failure_is_an_io_error_and_leaves_the_command_clean() {
    let mut cmd = Command::new("/nonexistent/courier-test-program");
    match cmd.spawn_endpoint::<Request, Response>(config()) {
        Err(ConnectError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
        other => panic!("expected Io(NotFound), got {other:?}"),
    }
    let channel_env: Vec<_> = cmd
        .get_envs()
        .filter(|(k, _)| *k == CHANNEL_ENV)
        .map(|(_, v)| v.map(|v| v.to_owned()))
        .collect();
    assert_eq!(channel_env, vec![None], "{CHANNEL_ENV} must be removed");
}

/// Catches: hooks that accumulate on a reused Command and pass a stale or
/// second fd, and a plain spawn after spawn_endpoint that still passes a
/// socket or the variable.
#[test]
fn a_command_can_be_reused_for_several_spawns() {
    let mut cmd = common::role("eof_child");
    for round in 0..3 {
        let spawned = cmd
            .spawn_endpoint::<Request, Response>(config())
            .expect("spawn_endpoint");
        let (mut child, endpoint, _) = parts(spawned);
        endpoint.send(Request::Ping(round)).expect("ping");
        assert_eq!(recv_from(&endpoint, &mut child), Response::Pong(round));
        drop(endpoint);
        child.wait_success();
    }
    cmd.env(NO_CHANNEL_ENV, "1");
    Guard::spawn(cmd).wait_success();
}

// ---- 5. race-free inheritance under concurrency --------------------------

const COURIER_THREADS: u64 = 4;
const SPAWNS_PER_THREAD: u64 = 25;

/// One spawn, round trip, end of stream both ways.
fn round_trip(tag: u64) {
    let mut cmd = common::role("eof_child");
    let spawned = cmd
        .spawn_endpoint::<Request, Response>(config())
        .unwrap_or_else(|e| panic!("spawn {tag}: {e}"));
    let (mut child, endpoint, _) = parts(spawned);
    endpoint.send(Request::Ping(tag)).expect("ping");
    assert_eq!(recv_from(&endpoint, &mut child), Response::Pong(tag));
    let (tx, rx) = endpoint.split();
    drop(tx); // shutdown(SHUT_WR): the child's recv ends, it exits 0
    match rx.recv_timeout(CHILD_TIMEOUT) {
        Err(RecvTimeoutError::Disconnected) => {}
        other => panic!("spawn {tag}: expected Disconnected, got {other:?}"),
    }
    let status = wait_within(&mut child, CHILD_TIMEOUT).expect("child exits");
    assert!(status.success(), "spawn {tag}: child {status:?}");
}

/// Catches: a channel socket that any process but its own child inherits
/// (the parent's copy not close-on-exec, or the hook running in the wrong
/// child), a child holding a sibling's socket, and the variable set
/// process-wide instead of per Command.
#[test]
fn inheritance_is_race_free_while_other_threads_spawn() {
    let started = Instant::now();
    let Race {
        spawns,
        probes,
        leaks,
        failures,
    } = race_spawns(
        COURIER_THREADS,
        SPAWNS_PER_THREAD,
        Duration::from_secs(120),
        round_trip,
        || {
            let (env, sockets) = probe_with_sh();
            (env != "unset" || !sockets.is_empty())
                .then(|| format!("env={env} sockets={sockets:?}"))
        },
    );
    eprintln!(
        "race test: {spawns} spawn_endpoint round trips, {probes} unrelated processes \
         ({} saw a channel), {} failed threads, {:?}",
        leaks.len(),
        failures.len(),
        started.elapsed()
    );
    assert!(
        leaks.is_empty(),
        "unrelated processes saw a channel: {leaks:#?}"
    );
    assert!(failures.is_empty(), "threads failed: {failures:#?}");
    assert_eq!(
        spawns,
        COURIER_THREADS * SPAWNS_PER_THREAD,
        "ran out of time"
    );
    assert!(probes > 0, "no unrelated process ran");
}

// ---- 6. end of stream despite a leaked copy --------------------------------

/// Starts `sleep 30` holding a copy of `fd`; checks in `/proc` that it does.
fn holder_of(fd: OwnedFd) -> Guard {
    let link = link_of(&fd);
    let mut cmd = Command::new("sleep");
    cmd.arg("30").stdin(Stdio::null());
    let passed = courier::transport::inherit(&mut cmd, fd).expect("inherit");
    let number = passed.number();
    let holder = Guard::spawn(cmd);
    drop(passed);
    assert_holds(holder.0.id(), number, &link);
    holder
}

/// Asserts (bounded) that process `pid` holds `link` in its fd table,
/// at `number` when given.
fn assert_holds(pid: u32, number: impl Into<Option<i32>>, link: &str) {
    let number = number.into();
    let deadline = Instant::now() + CHILD_TIMEOUT;
    loop {
        let held: BTreeSet<(i32, String)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .filter_map(|e| {
                        let fd = e.file_name().to_string_lossy().parse().ok()?;
                        let target = std::fs::read_link(e.path()).ok()?;
                        Some((fd, target.to_string_lossy().into_owned()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        if held
            .iter()
            .any(|(fd, t)| t == link && number.is_none_or(|n| n == *fd))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "holder {pid} does not hold {link}: {held:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// 6a. Catches: an endpoint drop that only closes (no `SHUT_WR`): the child
/// would wait for the holder's `sleep 30` and time out; and one without
/// `SHUT_RD`: the child's sends would keep succeeding into a socket only the
/// holder keeps, until its queue fills.
#[test]
fn child_sees_eof_although_the_parent_socket_leaked_to_a_holder() {
    let mut cmd = common::role("await_eof");
    cmd.stdout(Stdio::piped());
    let spawned = cmd
        .spawn_endpoint::<Request, Response>(config())
        .expect("spawn_endpoint");
    let (mut child, endpoint, _) = parts(spawned);
    let lines = lines_of(child.0.stdout.take().expect("stdout"));
    // A close-on-exec dup (not nix::unistd::dup, which would make every
    // process spawned meanwhile by another test thread inherit it too).
    let leaked = endpoint.as_fd().try_clone_to_owned().expect("dup");
    let mut holder = holder_of(leaked);
    assert_eq!(recv_from(&endpoint, &mut child), Response::Ready);

    let dropped = Instant::now();
    drop(endpoint);
    let status = wait_within(&mut child, Duration::from_secs(10))
        .expect("the child did not finish within 10 s of the drop");
    assert!(status.success(), "child {status:?}");
    let slipped = wait_line(&lines, "SLIPPED ", Duration::from_secs(5)).expect("report");
    eprintln!(
        "6a: child saw EOF, then Disconnected on send ({slipped} sends slipped through \
         first), and exited {:?} after the parent's drop",
        dropped.elapsed()
    );
    assert!(
        holder.0.try_wait().expect("try_wait").is_none(),
        "the holder must still hold its copy"
    );
}

/// 6b. The control: the same leak with raw sockets and a plain close gives
/// the peer no end of stream while the holder lives, which shows the leak
/// in 6a and 6c is real; killing the holder then delivers it.
#[test]
fn control_a_plain_close_with_a_leaked_copy_gives_no_eof() {
    let (a, b) = SeqPacketSocket::pair().expect("pair");
    let holder = holder_of(OwnedFd::from(a.try_clone().expect("dup")));
    drop(a); // a plain close, no shutdown
    let mut buf = [0; 16];
    match b.recv_timeout(&mut buf, Duration::from_millis(500)) {
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
        other => panic!("expected no EOF while the holder lives, got {other:?}"),
    }
    drop(holder); // killed and reaped: the last copy goes
    let n = b
        .recv_timeout(&mut buf, Duration::from_secs(5))
        .expect("EOF once the holder is gone");
    assert_eq!(n, 0, "expected end of stream");
}

/// 6c. The mirror of 6a: the child leaks a copy of its socket to a holder
/// grandchild and drops its endpoint while staying alive. Catches a drop
/// that does not shut down on the child's side (and shows that the
/// parent's Disconnected is not the child's death).
#[test]
fn parent_sees_eof_although_the_child_socket_leaked_to_a_holder() {
    let mut cmd = common::role("leaky_child");
    cmd.stdin(Stdio::piped());
    let spawned = cmd
        .spawn_endpoint::<Request, Response>(config())
        .expect("spawn_endpoint");
    let (mut child, endpoint, _) = parts(spawned);
    let stdin = child.0.stdin.take().expect("stdin");
    let Response::Holder { pid, link } = recv_from(&endpoint, &mut child) else {
        panic!("expected the holder's pid");
    };
    assert_holds(pid, None, &link);
    let started = Instant::now();
    match endpoint.recv_timeout(Duration::from_secs(5)) {
        Err(RecvTimeoutError::Disconnected) => {}
        other => panic!("expected Disconnected within 5 s, got {other:?}"),
    }
    eprintln!(
        "6c: parent saw EOF {:?} after the holder report",
        started.elapsed()
    );
    assert!(
        child.0.try_wait().expect("try_wait").is_none(),
        "the child must still be alive: EOF came from its drop, not its death"
    );
    assert_holds(pid, None, &link);
    drop(stdin); // the child kills its holder and exits 0
    child.wait_success();
}

// ---- 7. death notice ---------------------------------------------------------

const DEATH_MESSAGES: u32 = 100;
const DEATH_TRIALS: usize = 20;

/// Catches: messages lost when the sender dies (all 100 were queued before
/// the kill), a death that is never reported (recv would time out), and a
/// reset (the child died with our message unread: ECONNRESET) reported as
/// an error instead of draining. Prints the latency from the pidfd's exit
/// report (or the kill) to Disconnected, draining included.
#[test]
fn a_killed_child_s_messages_arrive_then_disconnected() {
    let mut latencies = Vec::new();
    let mut after_drain = Vec::new();
    let mut had_pidfd = true;
    for trial in 0..DEATH_TRIALS {
        let mut cmd = common::role("flood");
        cmd.stdout(Stdio::piped());
        let spawned = cmd
            .spawn_endpoint::<Request, Response>(config())
            .expect("spawn_endpoint");
        let (mut child, endpoint, pidfd) = parts(spawned);
        let lines = lines_of(child.0.stdout.take().expect("stdout"));
        let unread = trial % 2 == 1;
        if unread {
            // Never read by the child: its death resets the connection.
            endpoint.send(Request::Ping(0)).expect("ping");
        }
        if wait_line(&lines, "READY", CHILD_TIMEOUT).is_none() {
            let status = wait_within(&mut child, Duration::from_secs(1));
            panic!("trial {trial}: the child never got ready ({status:?})");
        }
        let killed = Instant::now();
        child.0.kill().expect("SIGKILL");
        let exited = match &pidfd {
            Some(pidfd) => {
                assert!(
                    pidfd.wait_timeout(Duration::from_secs(5)).expect("poll"),
                    "trial {trial}: the pidfd did not report the death within 5 s"
                );
                Instant::now()
            }
            None => {
                had_pidfd = false;
                killed
            }
        };
        for i in 0..DEATH_MESSAGES {
            match endpoint.recv_timeout(Duration::from_secs(5)) {
                Ok(Response::Seq(n)) => assert_eq!(n, i, "trial {trial}: out of order"),
                other => panic!("trial {trial} (unread={unread}): message {i}: got {other:?}"),
            }
        }
        let drained = Instant::now();
        match endpoint.recv_timeout(Duration::from_secs(5)) {
            Err(RecvTimeoutError::Disconnected) => {}
            other => {
                panic!("trial {trial} (unread={unread}): expected Disconnected, got {other:?}")
            }
        }
        let latency = exited.elapsed();
        assert!(
            latency < Duration::from_secs(5),
            "trial {trial}: {latency:?}"
        );
        latencies.push(latency);
        after_drain.push(drained.elapsed());
        let status = wait_within(&mut child, Duration::from_secs(5)).expect("reaped");
        assert_eq!(status.signal(), Some(9), "trial {trial}: {status:?}");
    }
    latencies.sort();
    after_drain.sort();
    eprintln!(
        "death notice over {DEATH_TRIALS} trials, from {} to Disconnected (draining \
         {DEATH_MESSAGES} queued messages included): median {:?}, max {:?}; \
         from the last message to Disconnected: median {:?}, max {:?}",
        if had_pidfd {
            "the pidfd's exit report"
        } else {
            "kill()"
        },
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
        after_drain[after_drain.len() / 2],
        after_drain[after_drain.len() - 1],
    );
}
