//! Writing to a closed peer returns an error and never kills the process,
//! even with SIGPIPE at its default disposition (checked in a child, whose
//! disposition is reset to SIG_DFL and verified in /proc/self/status).
//!
//! Measured on Linux 6.18: the kernel raises SIGPIPE for SOCK_STREAM sends
//! to a closed peer but not for SOCK_SEQPACKET or SOCK_DGRAM ones, so the
//! `MSG_NOSIGNAL` courier always passes is what protects it on kernels and
//! platforms that do. The control role proves the child's SIG_DFL setup is
//! live: the same setup dies on a stream write.

mod common;

use std::io::ErrorKind;
use std::os::unix::process::ExitStatusExt;

use common::Guard;
use courier_transport::{DatagramSocket, SeqPacketSocket};

const ROLES: &[(&str, fn())] = &[
    ("send_to_closed_peers", send_to_closed_peers),
    ("control_stream_write", control_stream_write),
];

#[test]
#[ignore = "child role: run by the other tests of this file"]
fn role_entry() {
    common::run_role(ROLES)
}

/// Whether SIGPIPE is ignored in this process, from /proc/self/status.
fn sigpipe_ignored() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("SigIgn:"))
        .expect("SigIgn line");
    let mask = u64::from_str_radix(line["SigIgn:".len()..].trim(), 16).unwrap();
    mask & (1 << (nix::libc::SIGPIPE - 1)) != 0
}

/// The Rust runtime ignores SIGPIPE at start-up; put the default back.
#[allow(unsafe_code)]
fn default_sigpipe() {
    // SAFETY: SIG_DFL installs no handler, so no handler can break any
    // async-signal-safety rule; nothing else in this process handles SIGPIPE.
    unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        )
    }
    .expect("reset SIGPIPE");
    assert!(
        !sigpipe_ignored(),
        "SIGPIPE still ignored: the test would prove nothing"
    );
}

/// The control: a stream write to a closed peer with SIGPIPE at default
/// must kill this process (the parent expects signal 13).
fn control_stream_write() {
    default_sigpipe();
    // A plain write(2): std's UnixStream would pass MSG_NOSIGNAL itself.
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    drop(b);
    let _ = nix::unistd::write(&a, b"anyone?");
}

fn send_to_closed_peers() {
    default_sigpipe();

    let (a, b) = SeqPacketSocket::pair().unwrap();
    drop(b);
    let err = a.send(b"anyone?").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BrokenPipe, "{err}");
    let err = a
        .send_with_fds(b"anyone?", &[std::os::fd::AsFd::as_fd(&a)])
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BrokenPipe, "{err}");

    let (c, d) = DatagramSocket::pair().unwrap();
    drop(d);
    assert_eq!(
        c.send(b"anyone?").unwrap_err().kind(),
        ErrorKind::ConnectionRefused
    );
    assert_eq!(
        c.send(b"anyone?").unwrap_err().kind(),
        ErrorKind::NotConnected
    );
}

#[test]
fn a_closed_peer_gives_an_error_not_sigpipe() {
    let status = Guard::spawn(common::role("send_to_closed_peers")).wait();
    assert_eq!(
        status.signal(),
        None,
        "the child was killed by signal {:?}",
        status.signal()
    );
    assert!(status.success(), "child failed: {status:?}");
}

#[test]
fn control_the_child_setup_does_die_of_sigpipe_on_a_stream() {
    let status = Guard::spawn(common::role("control_stream_write")).wait();
    assert_eq!(
        status.signal(),
        Some(nix::libc::SIGPIPE),
        "control did not die of SIGPIPE: {status:?}"
    );
}
