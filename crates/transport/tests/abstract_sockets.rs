//! Linux abstract socket names: no filesystem entry and gone on close, exact
//! byte-string names (trailing and embedded NULs included), `AddrInUse` for
//! a taken name, `ConnectionRefused` for a missing one, `local_addr`, and a
//! datagram from another process reporting its sender's abstract address.

mod common;

use std::io::{self, IoSliceMut};
use std::time::Duration;

use courier_transport::{
    AbstractName, Address, DatagramSocket, Listener, RecvMsg, SeqPacketSocket, Wait,
};

/// The child's own abstract name, hex, for the datagram role.
const CHILD_NAME_ENV: &str = "COURIER_TEST_CHILD_NAME";
/// Every bounded wait of this file.
const WAIT: Duration = Duration::from_secs(5);

#[test]
#[ignore = "child role: run by the other tests of this file"]
fn role_entry() {
    common::run_role(&[("dgram_sender", dgram_sender)]);
}

/// Child role: binds its own abstract name, sends a datagram to the parent's
/// and expects a reply addressed to the name the parent saw.
fn dgram_sender() {
    let own = std::env::var(CHILD_NAME_ENV).expect("child name in environment");
    let own = Address::from(AbstractName::new(common::unhex(&own)).expect("child name"));
    let socket = DatagramSocket::bind(&own).expect("child binds its abstract name");
    socket
        .send_to(b"ping from child", &common::parent_addr())
        .expect("send_to parent");
    let mut buf = [0; 32];
    let n = socket
        .recv_timeout(&mut buf, WAIT)
        .expect("reply from parent");
    assert_eq!(&buf[..n], b"pong", "child got the wrong reply");
}

/// A fresh random name with `suffix` appended.
fn random_name(suffix: &[u8]) -> AbstractName {
    let mut bytes = AbstractName::random()
        .expect("random name")
        .as_bytes()
        .to_vec();
    bytes.extend_from_slice(suffix);
    AbstractName::new(bytes).expect("name fits")
}

/// Whether /proc/net/unix lists a socket named `@name` (`name` printable).
fn listed_in_proc(name: &AbstractName) -> bool {
    let want = format!(
        "@{}",
        String::from_utf8(name.as_bytes().to_vec()).expect("ascii name")
    );
    std::fs::read_to_string("/proc/net/unix")
        .expect("read /proc/net/unix")
        .lines()
        .any(|line| line.split_whitespace().nth(7) == Some(want.as_str()))
}

/// Connects to `addr` and checks that `listener` (and no other) gets the
/// connection and its message.
fn connect_and_exchange(listener: &Listener, addr: &Address) {
    let client = SeqPacketSocket::connect_timeout(addr, WAIT).expect("connect");
    client.send_timeout(b"hello", WAIT).expect("send");
    let server = listener.accept_timeout(WAIT).expect("accept");
    let mut buf = [0; 16];
    let n = server.recv_timeout(&mut buf, WAIT).expect("recv");
    assert_eq!(&buf[..n], b"hello", "{addr}: wrong message");
}

fn assert_refused(addr: &Address, what: &str) {
    let err = SeqPacketSocket::connect_timeout(addr, WAIT)
        .expect_err(&format!("{what}: connect to {addr} must fail"));
    assert_eq!(
        err.kind(),
        io::ErrorKind::ConnectionRefused,
        "{what}: connect to {addr}: {err:?}"
    );
}

#[test]
fn abstract_listener_creates_no_file_and_vanishes_on_close() {
    let name = AbstractName::random().expect("random name");
    let addr = Address::from(name.clone());
    assert!(!listed_in_proc(&name), "fresh random name already bound");

    let listener = Listener::bind(&addr).expect("bind");
    assert!(
        listed_in_proc(&name),
        "/proc/net/unix does not list {name} while bound"
    );
    // (The kernel lists path sockets by path, abstract ones as `@name`.)
    let as_file = String::from_utf8(name.as_bytes().to_vec()).expect("ascii");
    assert!(
        !std::path::Path::new(&as_file).exists(),
        "bind created a file named like the name in the cwd"
    );
    connect_and_exchange(&listener, &addr);

    drop(listener);
    // Other tests of this binary spawn children: between their fork and
    // exec a child holds a copy of every fd (close-on-exec acts only at
    // exec), so the socket, and its name, may outlive our drop by that
    // window. Wait for it, bounded.
    let deadline = std::time::Instant::now() + WAIT;
    while listed_in_proc(&name) {
        assert!(
            std::time::Instant::now() < deadline,
            "/proc/net/unix still lists {name} {WAIT:?} after drop"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_refused(&addr, "after drop");
}

#[test]
fn connecting_to_a_missing_name_is_refused() {
    let addr = Address::from(AbstractName::random().expect("random name"));
    assert_refused(&addr, "missing name");
    let err = SeqPacketSocket::try_connect(&addr).expect_err("try_connect must fail");
    assert_eq!(
        err.kind(),
        io::ErrorKind::ConnectionRefused,
        "try_connect: {err:?}"
    );
    let client = DatagramSocket::unbound().expect("unbound");
    let err = client
        .send_to(b"x", &addr)
        .expect_err("send_to a missing name must fail");
    assert_eq!(
        err.kind(),
        io::ErrorKind::ConnectionRefused,
        "send_to: {err:?}"
    );
}

#[test]
fn names_are_exact_byte_strings() {
    let base = random_name(b"");
    let mut with_nul = base.as_bytes().to_vec();
    with_nul.push(0);
    let with_nul = AbstractName::new(with_nul).expect("name");
    let (base, with_nul) = (Address::from(base), Address::from(with_nul));

    let nul_listener = Listener::bind(&with_nul).expect("bind name with trailing NUL");
    assert_refused(&base, "name without the trailing NUL");
    connect_and_exchange(&nul_listener, &with_nul);

    // The shorter name is a different name: binding it is not AddrInUse.
    let base_listener = Listener::bind(&base).expect("bind the name without the NUL");
    connect_and_exchange(&base_listener, &base);
    let err = nul_listener
        .try_accept()
        .expect_err("the other listener got a connection");
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err:?}");

    drop(nul_listener);
    common::wait_until_refused::<courier_transport::kind::SeqPacket>(&with_nul);
    assert_refused(&with_nul, "trailing-NUL name after its listener dropped");
    connect_and_exchange(&base_listener, &base);
}

#[test]
fn names_with_embedded_nuls_work() {
    let name = random_name(b"\0mid\0\0end");
    let addr = Address::from(name.clone());
    let listener = Listener::bind(&addr).expect("bind name with embedded NULs");
    assert_eq!(
        listener.local_addr().expect("local_addr"),
        addr,
        "local_addr lost bytes"
    );
    connect_and_exchange(&listener, &addr);

    // Every prefix is another name, nobody listens there.
    let bytes = name.as_bytes();
    for cut in [bytes.len() - 4, bytes.len() - 9] {
        let prefix = Address::from(AbstractName::new(&bytes[..cut]).expect("prefix"));
        assert_refused(&prefix, "prefix of a name with NULs");
    }

    // A name starting with NUL, and the longest name there is.
    for name in [
        AbstractName::new([b"\0".as_slice(), random_name(b"").as_bytes()].concat()).expect("name"),
        random_name(&[b'x'; AbstractName::MAX_LEN - 40]),
    ] {
        let addr = Address::from(name);
        let listener = Listener::bind(&addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        assert_eq!(listener.local_addr().expect("local_addr"), addr);
        connect_and_exchange(&listener, &addr);
    }
}

#[test]
fn binding_a_taken_name_is_addr_in_use() {
    let addr = Address::from(AbstractName::random().expect("random name"));
    let listener = Listener::bind(&addr).expect("first bind");
    let err = Listener::bind(&addr).expect_err("second bind of the same name must fail");
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err:?}");
    // No probe for abstract names: the first listener has nothing queued.
    let err = listener
        .try_accept()
        .expect_err("failed bind queued a connection");
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err:?}");
    connect_and_exchange(&listener, &addr);

    let dgram = Address::from(AbstractName::random().expect("random name"));
    let _first = DatagramSocket::bind(&dgram).expect("first datagram bind");
    let err = DatagramSocket::bind(&dgram).expect_err("second datagram bind must fail");
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "datagram: {err:?}");
}

#[test]
fn local_addr_returns_the_abstract_name() {
    let addr = Address::from(AbstractName::random().expect("random name"));
    let listener = Listener::bind(&addr).expect("bind");
    let local = listener.local_addr().expect("local_addr");
    assert_eq!(local, addr, "listener local_addr");
    assert!(local.as_abstract().is_some() && local.as_path().is_none());

    let client = SeqPacketSocket::connect_timeout(&addr, WAIT).expect("connect");
    let server = listener.accept_timeout(WAIT).expect("accept");
    assert_eq!(
        client.peer_addr().expect("peer_addr"),
        addr,
        "client's peer_addr"
    );
    assert_eq!(
        server.local_addr().expect("local_addr"),
        addr,
        "accepted socket's local_addr"
    );
    assert!(
        client.local_addr().expect("local_addr").is_unnamed(),
        "client bound a name"
    );

    let dgram_addr = Address::from(AbstractName::random().expect("random name"));
    let dgram = DatagramSocket::bind(&dgram_addr).expect("datagram bind");
    assert_eq!(
        dgram.local_addr().expect("local_addr"),
        dgram_addr,
        "datagram local_addr"
    );
}

#[test]
fn datagram_from_another_process_reports_its_sender() {
    let own = AbstractName::random().expect("random name");
    let child_name = AbstractName::random().expect("random name");
    let own_addr = Address::from(own.clone());
    let child_addr = Address::from(child_name.clone());
    let socket = DatagramSocket::bind(&own_addr).expect("bind");

    let mut cmd = common::role("dgram_sender");
    cmd.env(common::ADDR_ENV, common::hex(own.as_bytes()))
        .env(CHILD_NAME_ENV, common::hex(child_name.as_bytes()));
    let mut child = common::Guard::spawn(cmd);

    let mut buf = [0; 32];
    let mut fds = Vec::new();
    let mut msg = RecvMsg {
        bufs: &mut [IoSliceMut::new(&mut buf)],
        fds: &mut fds,
        max_fds: 0,
    };
    let (got, from) = socket
        .recv_msg_from_addr(&mut msg, Wait::timeout(WAIT))
        .expect("datagram from the child");
    assert_eq!(&buf[..got.len], b"ping from child", "wrong datagram");
    assert_eq!(from, child_addr, "recv_from reported the wrong sender");

    socket
        .send_to(b"pong", &from)
        .expect("reply to the reported sender");
    child.wait_success();
}
