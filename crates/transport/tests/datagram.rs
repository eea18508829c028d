//! SOCK_DGRAM behaviour, and where it differs from SOCK_SEQPACKET: no end of
//! stream when the peer closes (ECONNREFUSED then ENOTCONN on send), sender
//! addresses reported by `recv_from`, empty datagrams, fds sent to an
//! address, and `shutdown` being local only.

mod common;

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use courier_transport::{
    AbstractName, Address, DatagramSocket, RecvMsg, SendMsg, SeqPacketSocket, TransportError, Wait,
};
use nix::poll::{PollFd, PollFlags, PollTimeout};

/// How long a receive that must time out waits.
const SHORT: Duration = Duration::from_millis(50);
/// How long a receive that must succeed may wait at most.
const LONG: Duration = Duration::from_secs(5);

/// The events `poll` reports for `fd` right now (without waiting).
fn poll_now(fd: impl AsFd, events: PollFlags) -> PollFlags {
    let mut fds = [PollFd::new(fd.as_fd(), events)];
    nix::poll::poll(&mut fds, PollTimeout::ZERO).expect("poll");
    fds[0].revents().expect("revents")
}

/// Asserts that `result` failed with `kind`, naming `what` otherwise.
#[track_caller]
fn assert_kind<T: std::fmt::Debug>(what: &str, result: io::Result<T>, kind: io::ErrorKind) {
    match result {
        Err(e) => assert_eq!(e.kind(), kind, "{what}: wrong error {e:?}"),
        Ok(v) => panic!("{what}: expected {kind:?}, got Ok({v:?})"),
    }
}

#[test]
fn dgram_peer_close_gives_no_end_of_stream() {
    let (a, b) = DatagramSocket::pair().expect("dgram pair");
    drop(b);

    let mut buf = [0u8; 16];
    assert_kind(
        "recv_timeout after the DGRAM peer closed",
        a.recv_timeout(&mut buf, SHORT),
        io::ErrorKind::TimedOut,
    );
    let revents = poll_now(&a, PollFlags::POLLIN | PollFlags::POLLOUT);
    assert!(
        !revents.contains(PollFlags::POLLHUP),
        "a DGRAM socket whose peer closed must not report POLLHUP: {revents:?}"
    );
    assert!(
        !revents.contains(PollFlags::POLLIN),
        "nothing is readable after the DGRAM peer closed: {revents:?}"
    );

    assert_kind(
        "first send to a closed DGRAM peer",
        a.send(b"anyone?"),
        io::ErrorKind::ConnectionRefused,
    );
    assert_kind(
        "second send to a closed DGRAM peer",
        a.send(b"anyone?"),
        io::ErrorKind::NotConnected,
    );
    // Still no end of stream after the sends either.
    assert_kind(
        "recv_timeout after the failed sends",
        a.recv_timeout(&mut buf, SHORT),
        io::ErrorKind::TimedOut,
    );
}

#[test]
fn seqpacket_peer_close_gives_end_of_stream_and_epipe() {
    let (a, b) = SeqPacketSocket::pair().expect("seqpacket pair");
    drop(b);

    let mut buf = [0u8; 16];
    let got = a
        .recv_timeout(&mut buf, LONG)
        .expect("end of stream, not an error");
    assert_eq!(got, 0, "SEQPACKET peer close reads as end of stream (0)");
    let revents = poll_now(&a, PollFlags::POLLIN);
    assert!(
        revents.contains(PollFlags::POLLHUP),
        "a SEQPACKET socket whose peer closed reports POLLHUP: {revents:?}"
    );
    assert_kind(
        "send to a closed SEQPACKET peer",
        a.send(b"anyone?"),
        io::ErrorKind::BrokenPipe,
    );
    assert_kind(
        "second send to a closed SEQPACKET peer",
        a.send(b"anyone?"),
        io::ErrorKind::BrokenPipe,
    );
}

/// Sends one datagram from `from` to `to_addr` and returns the address
/// `to` reports as its sender.
fn sender_seen_by(from: &DatagramSocket, to: &DatagramSocket, to_addr: &Address) -> Address {
    let sent = from.send_to(b"who am i", to_addr).expect("send_to");
    assert_eq!(sent, 8, "send_to sends the whole datagram");
    let mut buf = [0u8; 16];
    let mut fds = Vec::new();
    let mut msg = RecvMsg {
        bufs: &mut [IoSliceMut::new(&mut buf)],
        fds: &mut fds,
        max_fds: 0,
    };
    let (got, addr) = to
        .recv_msg_from_addr(&mut msg, Wait::timeout(LONG))
        .expect("recv_msg_from_addr");
    assert_eq!(got.len, 8, "datagram length");
    assert_eq!(&buf[..8], b"who am i", "datagram bytes");
    addr
}

#[test]
fn recv_from_reports_the_senders_address() {
    let server_addr = Address::from(AbstractName::random().expect("random name"));
    let server = DatagramSocket::bind(&server_addr).expect("bind server");

    // Unbound sender: no name.
    let unbound = DatagramSocket::unbound().expect("unbound");
    assert_eq!(
        sender_seen_by(&unbound, &server, &server_addr),
        Address::Unnamed
    );

    // Sender bound to an abstract name: exactly that name.
    let abs_addr = Address::from(AbstractName::random().expect("random name"));
    let abs = DatagramSocket::bind(&abs_addr).expect("bind abstract sender");
    assert_eq!(sender_seen_by(&abs, &server, &server_addr), abs_addr);

    // Sender bound to a path: exactly that path.
    let dir = common::temp_dir();
    let path_addr = Address::from(dir.path().join("sender.sock"));
    let by_path = DatagramSocket::bind(&path_addr).expect("bind path sender");
    assert_eq!(sender_seen_by(&by_path, &server, &server_addr), path_addr);

    // recv_from (the short form) reports the same.
    by_path.send_to(b"again", &server_addr).expect("send_to");
    let mut buf = [0u8; 16];
    let (n, from) = server.recv_from(&mut buf).expect("recv_from");
    assert_eq!((&buf[..n], from), (&b"again"[..], path_addr));
}

#[test]
fn empty_datagram_is_delivered_but_empty_seqpacket_is_refused() {
    let (a, b) = DatagramSocket::pair().expect("dgram pair");
    assert_eq!(a.send(&[]).expect("empty DGRAM send"), 0);
    a.send(b"after").expect("send after the empty one");
    let mut buf = [0u8; 16];
    assert_eq!(
        b.peek_len(Wait::Never).expect("peek"),
        0,
        "empty datagram queued"
    );
    assert_eq!(b.recv_timeout(&mut buf, LONG).expect("empty datagram"), 0);
    assert_eq!(b.recv_timeout(&mut buf, LONG).expect("next datagram"), 5);
    assert_eq!(&buf[..5], b"after");

    // An empty datagram to an address works too.
    let addr = Address::from(AbstractName::random().expect("random name"));
    let server = DatagramSocket::bind(&addr).expect("bind");
    let client = DatagramSocket::unbound().expect("unbound");
    assert_eq!(client.send_to(&[], &addr).expect("empty send_to"), 0);
    let (n, from) = server.recv_from(&mut buf).expect("recv_from");
    assert_eq!((n, from), (0, Address::Unnamed));

    let (s, t) = SeqPacketSocket::pair().expect("seqpacket pair");
    let err = s
        .send(&[])
        .expect_err("empty SEQPACKET message must be refused");
    assert!(
        matches!(TransportError::of(&err), Some(TransportError::EmptyMessage)),
        "expected EmptyMessage, got {err:?}"
    );
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert_kind(
        "nothing was sent",
        t.try_recv(&mut buf),
        io::ErrorKind::WouldBlock,
    );
}

#[test]
fn fds_travel_with_send_msg_to_addr() {
    let addr = Address::from(AbstractName::random().expect("random name"));
    let server = DatagramSocket::bind(&addr).expect("bind");
    let client_addr = Address::from(AbstractName::random().expect("random name"));
    let client = DatagramSocket::bind(&client_addr).expect("bind client");

    let (mut reader, writer) = io::pipe().expect("pipe");
    let bufs = [IoSlice::new(b"take "), IoSlice::new(b"this")];
    let fds = [writer.as_fd()];
    let sent = client
        .send_msg_to_addr(
            &SendMsg::new(&bufs).with_fds(&fds),
            &addr,
            Wait::timeout(LONG),
        )
        .expect("send_msg_to_addr");
    assert_eq!(sent, 9);
    drop(writer);

    let mut buf = [0u8; 32];
    let mut got_fds: Vec<OwnedFd> = Vec::new();
    let mut msg = RecvMsg {
        bufs: &mut [IoSliceMut::new(&mut buf)],
        fds: &mut got_fds,
        max_fds: 4,
    };
    let (got, from) = server
        .recv_msg_from_addr(&mut msg, Wait::timeout(LONG))
        .expect("recv_msg_from_addr");
    assert_eq!(got.len, 9);
    assert_eq!(got.fds, 1, "one fd arrived");
    assert_eq!(&buf[..9], b"take this");
    assert_eq!(from, client_addr);
    assert_eq!(got_fds.len(), 1);
    common::assert_cloexec("fd received on DGRAM", &got_fds[0]);

    // The fd is the pipe's write end: what we write comes out of the reader.
    let mut pipe = std::fs::File::from(got_fds.pop().expect("fd"));
    pipe.write_all(b"through the passed fd")
        .expect("write to passed fd");
    drop(pipe);
    let mut out = String::new();
    reader.read_to_string(&mut out).expect("read pipe");
    assert_eq!(out, "through the passed fd");
}

#[test]
fn dgram_shutdown_write_is_local() {
    let (a, b) = DatagramSocket::pair().expect("dgram pair");
    a.shutdown(Shutdown::Write).expect("shutdown(Write)");

    let mut buf = [0u8; 16];
    assert_kind(
        "peer of a DGRAM shutdown(Write) sees no end of stream",
        b.recv_timeout(&mut buf, SHORT),
        io::ErrorKind::TimedOut,
    );
    let revents = poll_now(&b, PollFlags::POLLIN);
    assert!(
        !revents.contains(PollFlags::POLLHUP) && !revents.contains(PollFlags::POLLIN),
        "the peer is not told about a DGRAM shutdown: {revents:?}"
    );
    // Locally, writing is shut down ...
    assert_kind(
        "send after own shutdown(Write)",
        a.send(b"x"),
        io::ErrorKind::BrokenPipe,
    );
    // ... but the other direction still works.
    b.send(b"still here").expect("peer can still send");
    assert_eq!(a.recv_timeout(&mut buf, LONG).expect("recv"), 10);
    assert_eq!(&buf[..10], b"still here");
}

/// A deadline send to a bound receiver whose queue is full must wait, not
/// spin: POLLOUT on the unconnected sender says nothing about the
/// receiver's queue, so ready-then-EAGAIN repeats until the deadline.
#[test]
fn a_deadline_send_to_a_full_receiver_waits_without_spinning() {
    let addr = Address::from(AbstractName::random().expect("name"));
    let _receiver = DatagramSocket::bind(&addr).expect("bind");
    let sender = DatagramSocket::unbound().expect("unbound");
    let msg = [IoSlice::new(b"x")];
    let mut queued = 0;
    while sender
        .send_msg_to_addr(&SendMsg::new(&msg), &addr, Wait::Never)
        .is_ok()
    {
        queued += 1;
        assert!(queued < 100_000, "the receiver's queue never filled");
    }
    let cpu = || {
        let t = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_THREAD)
            .expect("getrusage");
        let micros =
            |tv: nix::sys::time::TimeVal| tv.tv_sec() as u64 * 1_000_000 + tv.tv_usec() as u64;
        std::time::Duration::from_micros(micros(t.user_time()) + micros(t.system_time()))
    };
    let before = cpu();
    let err = sender
        .send_msg_to_addr(
            &SendMsg::new(&msg),
            &addr,
            Wait::timeout(std::time::Duration::from_millis(500)),
        )
        .expect_err("the queue is full");
    assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err:?}");
    let burnt = cpu() - before;
    eprintln!("a 500 ms deadline send to a full receiver used {burnt:?} of CPU");
    // A spinning wait burns most of the 500 ms even on a shared core.
    assert!(
        burnt < std::time::Duration::from_millis(100),
        "waiting 500 ms burnt {burnt:?} of CPU"
    );
}
