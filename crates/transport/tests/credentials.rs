//! Credentials: SO_PEERCRED of a connected child process (and of a child
//! that dropped to uid 65534, when the tests run as root), SCM_CREDENTIALS
//! stamped per message, the snapshot semantics of a socketpair, and the
//! peer's pidfd.

mod common;

use std::io::IoSlice;
use std::os::fd::AsFd;
use std::time::Duration;

use common::{Guard, CHILD_TIMEOUT};
use courier_transport::{Credentials, SendMsg, SeqPacketSocket, Wait};
use nix::unistd::{Gid, Uid};

const NOBODY: u32 = 65534;
const ROLES: &[(&str, fn())] = &[
    ("say_hello", say_hello),
    ("hello_when_asked", hello_when_asked),
    ("hello_as_nobody", hello_as_nobody),
];

#[test]
#[ignore = "child role: run by the other tests of this file"]
fn role_entry() {
    common::run_role(ROLES)
}

/// Connects, sends one message, waits for the parent's "bye" (bounded).
fn say_hello() {
    let conn = common::connect_to_parent();
    conn.send(b"hello").unwrap();
    let _ = conn.recv_timeout(&mut [0; 8], CHILD_TIMEOUT);
}

/// Waits for the parent's "go" (sent once it has turned SO_PASSCRED on),
/// then as `say_hello`: a message sent before that would carry no
/// credentials (pid 0 and the overflow ids), which is not what is tested.
fn hello_when_asked() {
    let conn = common::connect_to_parent();
    let mut go = [0; 2];
    conn.recv_timeout(&mut go, CHILD_TIMEOUT).expect("go");
    conn.send(b"hello").unwrap();
    let _ = conn.recv_timeout(&mut [0; 8], CHILD_TIMEOUT);
}

/// Drops to uid/gid 65534 before connecting, then as `hello_when_asked`.
fn hello_as_nobody() {
    nix::unistd::setgroups(&[]).expect("setgroups");
    nix::unistd::setgid(Gid::from_raw(NOBODY)).expect("setgid");
    nix::unistd::setuid(Uid::from_raw(NOBODY)).expect("setuid");
    assert_eq!(nix::unistd::getuid().as_raw(), NOBODY);
    hello_when_asked();
}

/// Accepts the child's connection, turns on SO_PASSCRED, and returns its peer credentials and the
/// credentials stamped on its message.
fn hello_from(role: &str) -> (Guard, Credentials, Credentials) {
    let (listener, _, env) = common::abstract_listener();
    let mut cmd = common::role(role);
    cmd.env(common::ADDR_ENV, env);
    let child = Guard::spawn(cmd);
    let conn = listener
        .accept_timeout(CHILD_TIMEOUT)
        .expect("child connected");
    // Only then does the child send: a message queued before SO_PASSCRED
    // may carry no credentials (this raced: 1 failure in about 30 runs).
    conn.set_pass_cred(true).unwrap();
    conn.send(b"go").unwrap();
    let peer = conn.peer_cred().expect("peer_cred");
    let mut buf = [0; 8];
    let got = conn
        .recv_msg(
            &mut courier_transport::RecvMsg {
                bufs: &mut [std::io::IoSliceMut::new(&mut buf)],
                fds: &mut Vec::new(),
                max_fds: 0,
            },
            Wait::timeout(CHILD_TIMEOUT),
        )
        .expect("hello");
    assert_eq!(&buf[..got.len], b"hello");
    let stamped = got.credentials.expect("message carried no SCM_CREDENTIALS");
    conn.send(b"bye").unwrap();
    (child, peer, stamped)
}

#[test]
fn peer_credentials_name_the_child_process() {
    let (mut child, peer, stamped) = hello_from("hello_when_asked");
    let me = Credentials::current();
    assert_eq!(peer.pid(), child.pid());
    assert_eq!((peer.uid(), peer.gid()), (me.uid(), me.gid()));
    assert_eq!(
        stamped, peer,
        "per-message credentials differ from SO_PEERCRED"
    );
    child.wait_success();
}

#[test]
fn a_child_that_dropped_to_nobody_is_seen_as_nobody() {
    if !common::is_root() {
        eprintln!("skipped: not root, so a child cannot drop to uid {NOBODY}");
        return;
    }
    let (mut child, peer, stamped) = hello_from("hello_as_nobody");
    assert_eq!(
        (peer.pid(), peer.uid(), peer.gid()),
        (child.pid(), NOBODY, NOBODY)
    );
    assert_eq!(stamped, peer);
    child.wait_success();
}

#[test]
fn a_pair_snapshot_names_the_process_that_made_it() {
    let (a, b) = SeqPacketSocket::pair().unwrap();
    assert_eq!(a.peer_cred().unwrap(), Credentials::current());
    assert_eq!(b.peer_cred().unwrap(), Credentials::current());
}

#[test]
fn messages_are_stamped_only_when_asked() {
    let (a, b) = SeqPacketSocket::pair().unwrap();
    let mut buf = [0; 8];
    a.send(b"before").unwrap();
    b.set_pass_cred(true).unwrap();
    a.send(b"after").unwrap();
    let explicit = [IoSlice::new(b"explicit")];
    a.send_msg(
        &SendMsg::new(&explicit).with_credentials(Credentials::current()),
        Wait::Block,
    )
    .unwrap();
    let recv = |buf: &mut [u8]| {
        b.recv_msg(
            &mut courier_transport::RecvMsg {
                bufs: &mut [std::io::IoSliceMut::new(buf)],
                fds: &mut Vec::new(),
                max_fds: 0,
            },
            Wait::timeout(Duration::from_secs(5)),
        )
        .unwrap()
    };
    // Stamped at send time: the message sent before SO_PASSCRED carries no
    // sender, and the kernel reports that as pid 0 with the overflow ids.
    let overflow = |f: &str| {
        std::fs::read_to_string(f)
            .unwrap()
            .trim()
            .parse::<u32>()
            .unwrap()
    };
    let unknown = Credentials::new(
        0,
        overflow("/proc/sys/kernel/overflowuid"),
        overflow("/proc/sys/kernel/overflowgid"),
    );
    assert_eq!(recv(&mut buf).credentials, Some(unknown));
    assert_eq!(recv(&mut buf).credentials, Some(Credentials::current()));
    assert_eq!(recv(&mut buf).credentials, Some(Credentials::current()));
    assert!(b.pass_cred().unwrap());
}

#[test]
fn the_peer_pidfd_names_the_child_and_reports_its_exit() {
    let (listener, _, env) = common::abstract_listener();
    let mut cmd = common::role("say_hello");
    cmd.env(common::ADDR_ENV, env);
    let mut child = Guard::spawn(cmd);
    let conn = listener.accept_timeout(CHILD_TIMEOUT).unwrap();
    let Some(pidfd) = conn.peer_pidfd().expect("peer_pidfd") else {
        eprintln!("skipped: this kernel has no SO_PEERPIDFD (Linux 6.5+)");
        return;
    };
    common::assert_cloexec("peer pidfd", &pidfd);
    let fdinfo = std::fs::read_to_string(format!(
        "/proc/self/fdinfo/{}",
        std::os::fd::AsRawFd::as_raw_fd(&pidfd)
    ))
    .unwrap();
    assert!(
        fdinfo
            .lines()
            .any(|l| l == format!("Pid:\t{}", child.pid())),
        "pidfd names another process:\n{fdinfo}"
    );
    conn.recv_timeout(&mut [0; 8], CHILD_TIMEOUT).unwrap();
    conn.send(b"bye").unwrap();
    child.wait_success();
    // A pidfd polls readable once its process has exited.
    let mut fds = [nix::poll::PollFd::new(
        pidfd.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    let ready = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(5000u16)).unwrap();
    assert_eq!(ready, 1, "pidfd not readable after the child exited");
}
