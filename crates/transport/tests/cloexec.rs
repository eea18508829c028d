//! Every fd courier-transport creates or receives is close-on-exec, checked
//! with fcntl(F_GETFD) and by exec'ing a child and listing what it inherited.

mod common;

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use common::Guard;
use courier_transport::{AbstractName, Address, DatagramSocket, Listener, SeqPacketSocket};

const ROLES: &[(&str, fn())] = &[("list_fds", list_fds)];

#[test]
#[ignore = "child role: run by the other tests of this file"]
fn role_entry() {
    common::run_role(ROLES)
}

/// Fails if this freshly exec'd process holds any fd listed in the
/// environment (the parent's courier fds).
fn list_fds() {
    let forbidden: Vec<i32> = std::env::var("COURIER_TEST_FDS")
        .expect("fd list")
        .split(',')
        .map(|s| s.parse().expect("fd number"))
        .collect();
    let table = common::fd_table();
    for fd in forbidden {
        assert!(
            !table.contains_key(&fd),
            "fd {fd} ({:?}) was inherited across exec",
            table.get(&fd)
        );
    }
}

#[test]
fn every_created_and_received_fd_is_cloexec() {
    let (a, b) = SeqPacketSocket::pair().unwrap();
    let (c, d) = DatagramSocket::pair_nonblocking().unwrap();
    let name = Address::from(AbstractName::random().unwrap());
    let listener = Listener::bind(&name).unwrap();
    let client = SeqPacketSocket::connect(&name).unwrap();
    let server = listener.accept_timeout(Duration::from_secs(5)).unwrap();
    let bound = DatagramSocket::bind(&Address::from(AbstractName::random().unwrap())).unwrap();
    let unbound = DatagramSocket::unbound().unwrap();
    let timed = SeqPacketSocket::connect_timeout(&name, Duration::from_secs(5)).unwrap();
    let tried = SeqPacketSocket::try_connect(&name).unwrap();
    let clone = a.try_clone().unwrap();

    // A pipe made WITHOUT O_CLOEXEC: what the receiver gets must have it anyway.
    let (r, w) = nix::unistd::pipe().unwrap();
    assert!(
        !common::is_cloexec(w.as_fd()),
        "test setup: the sent fd should lack CLOEXEC"
    );
    a.send_with_fds(b"fd", &[w.as_fd(), r.as_fd()]).unwrap();
    let mut received = Vec::new();
    b.recv_with_fds(&mut [0; 4], &mut received, 2).unwrap();
    assert_eq!(received.len(), 2);

    let pidfd = client.peer_pidfd().unwrap();

    let mut all: Vec<(&str, std::os::fd::BorrowedFd<'_>)> = vec![
        ("pair end", a.as_fd()),
        ("pair end", b.as_fd()),
        ("nonblocking pair end", c.as_fd()),
        ("nonblocking pair end", d.as_fd()),
        ("listener", listener.as_fd()),
        ("connected client", client.as_fd()),
        ("accepted socket", server.as_fd()),
        ("bound datagram socket", bound.as_fd()),
        ("unbound datagram socket", unbound.as_fd()),
        ("connect_timeout socket", timed.as_fd()),
        ("try_connect socket", tried.as_fd()),
        ("try_clone copy", clone.as_fd()),
        ("received fd", received[0].as_fd()),
        ("received fd", received[1].as_fd()),
    ];
    if let Some(pidfd) = &pidfd {
        all.push(("peer pidfd", pidfd.as_fd()));
    }
    for (what, fd) in &all {
        common::assert_cloexec(what, fd);
    }

    // And the kernel agrees: a child started now inherits none of them.
    let list: Vec<String> = all
        .iter()
        .map(|(_, fd)| fd.as_raw_fd().to_string())
        .collect();
    let mut cmd = common::role("list_fds");
    cmd.env("COURIER_TEST_FDS", list.join(","));
    Guard::spawn(cmd).wait_success();
    drop((r, w));
}

#[test]
fn converting_into_owned_fd_keeps_cloexec() {
    let (a, _b) = SeqPacketSocket::pair().unwrap();
    let fd = OwnedFd::from(a);
    common::assert_cloexec("converted socket", &fd);
}
