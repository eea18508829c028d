//! The waiting forms of every operation: blocking, `try_` (WouldBlock),
//! `_timeout` and `_deadline` (TimedOut, never early), non-blocking sockets,
//! and the listener's accept and connect with a full backlog.

mod common;

use std::io;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use courier_transport::{
    AbstractName, Address, BindOptions, Listener, SeqPacketSocket, Socket, Wait,
};

/// An upper bound that only catches hangs; nothing here asserts speed.
const HANG: Duration = Duration::from_secs(2);
/// How long a wait that must time out waits.
const SHORT: Duration = Duration::from_millis(50);
/// Bounds every fill loop.
const MAX_MESSAGES: usize = 100_000;

/// Asserts that `result` failed with `kind`, naming `what` otherwise.
#[track_caller]
fn assert_kind<T: std::fmt::Debug>(what: &str, result: io::Result<T>, kind: io::ErrorKind) {
    match result {
        Err(e) => assert_eq!(e.kind(), kind, "{what}: wrong error {e:?}"),
        Ok(v) => panic!("{what}: expected {kind:?}, got Ok({v:?})"),
    }
}

/// Runs `op`, asserts it timed out no earlier than `timeout` (and, to catch
/// hangs only, within `HANG`).
#[track_caller]
fn assert_times_out<T: std::fmt::Debug>(
    what: &str,
    timeout: Duration,
    op: impl FnOnce() -> io::Result<T>,
) {
    let start = Instant::now();
    let result = op();
    let elapsed = start.elapsed();
    assert_kind(what, result, io::ErrorKind::TimedOut);
    assert!(
        elapsed >= timeout,
        "{what}: returned after {elapsed:?}, before its {timeout:?} timeout"
    );
    assert!(elapsed < HANG, "{what}: took {elapsed:?}");
}

/// Fills `sock`'s send path with `try_send` until it would block; returns
/// how many messages went in.
fn fill<K: courier_transport::kind::Kind>(sock: &Socket<K>) -> usize {
    let msg = [0x55u8; 4096];
    for sent in 0..MAX_MESSAGES {
        match sock.try_send(&msg) {
            Ok(n) => assert_eq!(n, msg.len(), "whole message sent"),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return sent,
            Err(e) => panic!("try_send while filling: {e:?}"),
        }
    }
    panic!("socket still not full after {MAX_MESSAGES} messages");
}

#[test]
fn try_forms_fail_with_would_block_and_timeouts_wait() {
    let (a, b) = SeqPacketSocket::pair().expect("pair");
    let mut buf = [0u8; 8];
    assert_kind(
        "try_recv on an empty socket",
        b.try_recv(&mut buf),
        io::ErrorKind::WouldBlock,
    );

    let sent = fill(&a);
    assert!(
        sent > 0,
        "at least one message fits before the socket is full"
    );
    assert_kind(
        "try_send on a full socket",
        a.try_send(b"more"),
        io::ErrorKind::WouldBlock,
    );
    assert_times_out("send_timeout on a full socket", SHORT, || {
        a.send_timeout(b"more", SHORT)
    });
    assert_times_out("send_deadline on a full socket", SHORT, || {
        a.send_deadline(b"more", Instant::now() + SHORT)
    });

    // Room again after one receive: the timed send goes through.
    let mut big = [0u8; 4096];
    assert_eq!(b.try_recv(&mut big).expect("queued message"), 4096);
    assert_eq!(a.send_timeout(b"more", HANG).expect("room again"), 4);
}

#[test]
fn recv_timeout_is_never_early() {
    let (_a, b) = SeqPacketSocket::pair().expect("pair");
    let mut buf = [0u8; 8];
    for timeout in [
        Duration::from_micros(1500),
        Duration::from_micros(1),
        Duration::ZERO,
    ] {
        assert_times_out(&format!("recv_timeout({timeout:?})"), timeout, || {
            b.recv_timeout(&mut buf, timeout)
        });
    }
}

#[test]
fn past_deadline_still_takes_what_is_queued() {
    let (a, b) = SeqPacketSocket::pair().expect("pair");
    let past = Instant::now();
    let mut buf = [0u8; 8];
    a.send(b"ready").expect("send");
    let n = b
        .recv_deadline(&mut buf, past)
        .expect("a queued message is returned whatever the deadline");
    assert_eq!(&buf[..n], b"ready");
    assert_kind(
        "recv_deadline in the past, nothing queued",
        b.recv_deadline(&mut buf, past),
        io::ErrorKind::TimedOut,
    );
    assert_kind(
        "peek_len in the past, nothing queued",
        b.peek_len(Wait::Until(past)),
        io::ErrorKind::TimedOut,
    );
}

#[test]
fn blocking_recv_is_woken_by_a_send_from_another_thread() {
    let (a, b) = SeqPacketSocket::pair().expect("pair");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 16];
        let got = b.recv(&mut buf).map(|n| buf[..n].to_vec());
        tx.send(got).expect("report");
    });
    // An assertion, not synchronisation: nothing may arrive before we send.
    assert!(
        matches!(
            rx.recv_timeout(Duration::from_millis(20)),
            Err(mpsc::RecvTimeoutError::Timeout)
        ),
        "blocking recv returned before anything was sent"
    );
    a.send(b"wake up").expect("send");
    let got = rx
        .recv_timeout(HANG)
        .expect("the blocked recv was woken within 2 s");
    assert_eq!(got.expect("recv"), b"wake up");
    reader.join().expect("reader thread");
}

#[test]
fn nonblocking_sockets_fail_blocking_forms_but_keep_timeouts() {
    let (a, b) = SeqPacketSocket::pair_nonblocking().expect("nonblocking pair");
    let mut buf = [0u8; 8];
    assert_kind(
        "recv on pair_nonblocking",
        b.recv(&mut buf),
        io::ErrorKind::WouldBlock,
    );
    assert_times_out("recv_timeout on pair_nonblocking", SHORT, || {
        b.recv_timeout(&mut buf, SHORT)
    });
    a.send(b"hi").expect("send");
    assert_eq!(b.recv(&mut buf).expect("queued message"), 2);

    let (c, d) = SeqPacketSocket::pair().expect("blocking pair");
    d.set_nonblocking(true).expect("set_nonblocking(true)");
    assert_kind(
        "recv after set_nonblocking(true)",
        d.recv(&mut buf),
        io::ErrorKind::WouldBlock,
    );
    assert_times_out("recv_timeout after set_nonblocking(true)", SHORT, || {
        d.recv_timeout(&mut buf, SHORT)
    });
    fill(&c);
    c.set_nonblocking(true).expect("set_nonblocking(true)");
    assert_kind(
        "send on a full non-blocking socket",
        c.send(b"x"),
        io::ErrorKind::WouldBlock,
    );
    assert_times_out("send_timeout on a full non-blocking socket", SHORT, || {
        c.send_timeout(b"x", SHORT)
    });
}

#[test]
fn listener_accept_forms() {
    let addr = Address::from(AbstractName::random().expect("random name"));
    let listener = Listener::bind(&addr).expect("bind");
    assert_kind(
        "try_accept with no client",
        listener.try_accept(),
        io::ErrorKind::WouldBlock,
    );
    assert_times_out("accept_timeout with no client", SHORT, || {
        listener.accept_timeout(SHORT)
    });
    assert_times_out("accept_deadline with no client", SHORT, || {
        listener.accept_deadline(Instant::now() + SHORT)
    });

    let client = SeqPacketSocket::connect(&addr).expect("connect");
    let server = listener.accept().expect("accept with a client queued");
    client.send(b"hello").expect("send");
    let mut buf = [0u8; 8];
    assert_eq!(server.recv_timeout(&mut buf, HANG).expect("recv"), 5);

    let clients: Vec<_> = (0..3u8)
        .map(|i| {
            let c = SeqPacketSocket::connect(&addr).expect("connect");
            c.send(&[i]).expect("send");
            c
        })
        .collect();
    for (i, conn) in listener.incoming().take(clients.len()).enumerate() {
        let conn = conn.expect("incoming connection");
        assert_eq!(conn.recv_timeout(&mut buf, HANG).expect("recv"), 1);
        assert_eq!(buf[0], i as u8, "connections come in order");
    }
    assert_kind(
        "all connections taken",
        listener.try_accept(),
        io::ErrorKind::WouldBlock,
    );
}

#[test]
fn connect_to_a_full_backlog() {
    let addr = Address::from(AbstractName::random().expect("random name"));
    let listener = Listener::bind_with(&addr, &BindOptions::new().backlog(1)).expect("bind");

    // AF_UNIX counts a backlog of n as full once MORE than n connections
    // are queued (`skb_queue_len > sk_max_ack_backlog`), so backlog(1)
    // queues two before try_connect would block.
    let mut queued = Vec::new();
    loop {
        match SeqPacketSocket::try_connect(&addr) {
            Ok(c) => queued.push(c),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("try_connect: {e:?}"),
        }
        assert!(queued.len() <= 16, "backlog(1) never filled");
    }
    assert_eq!(queued.len(), 2, "backlog(1) holds backlog + 1 connections");

    // The bounded connect waits in the kernel (SO_SNDTIMEO, counted in
    // jiffies and rounded up): measured never early, but coarse (a 1 ms
    // timeout took about 8 ms with HZ=250).
    assert_times_out("connect_timeout to a full backlog", SHORT, || {
        SeqPacketSocket::connect_timeout(&addr, SHORT)
    });
    assert_times_out("connect_deadline to a full backlog", SHORT, || {
        SeqPacketSocket::connect_deadline(&addr, Instant::now() + SHORT)
    });

    for (i, client) in queued.iter().enumerate() {
        let server = listener
            .accept_timeout(HANG)
            .expect("accept a queued connection");
        client
            .send(&[i as u8])
            .expect("send on a queued connection");
        let mut buf = [0u8; 1];
        assert_eq!(server.recv_timeout(&mut buf, HANG).expect("recv"), 1);
        assert_eq!(buf[0], i as u8);
    }
    let late = SeqPacketSocket::connect_timeout(&addr, HANG).expect("connect once there is room");
    let server = listener.accept_timeout(HANG).expect("accept");
    late.send(b"late").expect("send");
    let mut buf = [0u8; 8];
    assert_eq!(server.recv_timeout(&mut buf, HANG).expect("recv"), 4);
    // The socket connect_timeout returned is blocking: recv_timeout waits.
    assert_times_out("recv_timeout on a connected socket", SHORT, || {
        late.recv_timeout(&mut buf, SHORT)
    });
}

#[test]
fn a_connect_deadline_in_the_past_still_connects_when_there_is_room() {
    let name = Address::from(AbstractName::random().expect("name"));
    let listener = Listener::bind(&name).expect("bind");
    let past = Instant::now() - Duration::from_millis(1);
    let a = SeqPacketSocket::connect_deadline(&name, past).expect("room in the backlog");
    let b = SeqPacketSocket::connect_timeout(&name, Duration::ZERO).expect("zero timeout, room");
    for client in [a, b] {
        let server = listener.accept_timeout(HANG).expect("accept");
        client.send(b"blocking?").expect("send");
        server.recv_timeout(&mut [0; 16], HANG).expect("recv");
    }
}

#[test]
fn huge_timeout_is_block() {
    assert_eq!(Wait::timeout(Duration::MAX), Wait::Block);
    assert!(matches!(
        Wait::timeout(Duration::from_secs(1)),
        Wait::Until(_)
    ));
}
