//! `TryFrom<OwnedFd>` for `SeqPacketSocket`, `DatagramSocket` and `Listener`
//! (the fd's family, type and listening state are checked, and a refused fd
//! is handed back intact), and `From<_> for OwnedFd` (the socket file stays).

mod common;

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use courier_transport::{
    AbstractName, Address, DatagramSocket, FromFdError, Listener, SeqPacketSocket, Socket,
    TransportError,
};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::libc;
use nix::sys::socket::{self as nix_socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr};

/// Every bounded wait of this file.
const WAIT: Duration = Duration::from_secs(5);

/// Checks that `result` failed with `want` (matched by `is`) and that the fd
/// handed back is `raw`; returns it.
fn refused<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, FromFdError>,
    raw: i32,
    is: impl Fn(&TransportError) -> bool,
) -> OwnedFd {
    let err = result.expect_err(&format!("{what}: conversion must fail"));
    let inner = TransportError::of(err.error())
        .unwrap_or_else(|| panic!("{what}: expected a TransportError, got {:?}", err.error()));
    assert!(is(inner), "{what}: wrong error {inner:?}");
    assert_eq!(
        err.error().kind(),
        io::ErrorKind::InvalidInput,
        "{what}: wrong kind"
    );
    let fd = err.into_fd();
    assert_eq!(
        fd.as_raw_fd(),
        raw,
        "{what}: a different fd was handed back"
    );
    fd
}

fn wrong_type(found: i32) -> impl Fn(&TransportError) -> bool {
    move |e| matches!(e, TransportError::WrongSocketType { found: f, .. } if *f == found)
}

fn not_unix(e: &TransportError) -> bool {
    matches!(e, TransportError::NotUnixSocket)
}

/// One message from `a` to `b`, checked.
fn roundtrip<K: courier_transport::kind::Kind>(a: &Socket<K>, b: &Socket<K>, what: &str) {
    a.send_timeout(b"across", WAIT)
        .unwrap_or_else(|e| panic!("{what}: send: {e}"));
    let mut buf = [0; 16];
    let n = b
        .recv_timeout(&mut buf, WAIT)
        .unwrap_or_else(|e| panic!("{what}: recv: {e}"));
    assert_eq!(&buf[..n], b"across", "{what}: wrong message");
}

#[test]
fn socket_fds_convert_to_their_own_kind() {
    let (a, b) = SeqPacketSocket::pair().expect("seqpacket pair");
    let a = SeqPacketSocket::try_from(OwnedFd::from(a)).expect("SEQPACKET fd to SeqPacketSocket");
    roundtrip(&a, &b, "converted SeqPacketSocket");
    roundtrip(&b, &a, "converted SeqPacketSocket (reverse)");

    let (a, b) = DatagramSocket::pair().expect("datagram pair");
    let a = DatagramSocket::try_from(OwnedFd::from(a)).expect("DGRAM fd to DatagramSocket");
    roundtrip(&a, &b, "converted DatagramSocket");
    roundtrip(&b, &a, "converted DatagramSocket (reverse)");
}

#[test]
fn wrong_kind_is_refused_and_the_fd_handed_back() {
    let (a, b) = SeqPacketSocket::pair().expect("seqpacket pair");
    let fd = OwnedFd::from(a);
    let raw = fd.as_raw_fd();
    let fd = refused(
        "SEQPACKET as DGRAM",
        DatagramSocket::try_from(fd),
        raw,
        wrong_type(libc::SOCK_SEQPACKET),
    );
    let a = SeqPacketSocket::try_from(fd).expect("handed-back fd is still a SEQPACKET socket");
    roundtrip(&a, &b, "SEQPACKET fd after a refused conversion");

    let (a, b) = DatagramSocket::pair().expect("datagram pair");
    let fd = OwnedFd::from(a);
    let raw = fd.as_raw_fd();
    let fd = refused(
        "DGRAM as SEQPACKET",
        SeqPacketSocket::try_from(fd),
        raw,
        wrong_type(libc::SOCK_DGRAM),
    );
    let fd = refused(
        "DGRAM as Listener",
        Listener::try_from(fd),
        raw,
        wrong_type(libc::SOCK_DGRAM),
    );
    let a = DatagramSocket::try_from(fd).expect("handed-back fd is still a DGRAM socket");
    roundtrip(&b, &a, "DGRAM fd after refused conversions");

    // The io::Error a refusal converts to keeps the courier error.
    let (a, _b) = SeqPacketSocket::pair().expect("seqpacket pair");
    let err = io::Error::from(DatagramSocket::try_from(OwnedFd::from(a)).expect_err("must fail"));
    assert!(
        matches!(
            TransportError::of(&err),
            Some(TransportError::WrongSocketType {
                expected: "SOCK_DGRAM",
                ..
            })
        ),
        "io::Error from FromFdError: {err:?}"
    );
}

#[test]
fn pipes_are_not_unix_sockets() {
    let (reader, mut writer) = std::io::pipe().expect("pipe");
    let fd = OwnedFd::from(reader);
    let raw = fd.as_raw_fd();
    let fd = refused(
        "pipe as SEQPACKET",
        SeqPacketSocket::try_from(fd),
        raw,
        not_unix,
    );
    let fd = refused("pipe as DGRAM", DatagramSocket::try_from(fd), raw, not_unix);
    let fd = refused("pipe as Listener", Listener::try_from(fd), raw, not_unix);

    writer.write_all(b"still a pipe").expect("write to pipe");
    drop(writer);
    let mut out = String::new();
    std::fs::File::from(fd)
        .read_to_string(&mut out)
        .expect("read handed-back pipe");
    assert_eq!(out, "still a pipe");
}

#[test]
fn tcp_sockets_are_not_unix_sockets() {
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind TCP on loopback");
    let local = tcp.local_addr().expect("TCP local_addr");
    let fd = OwnedFd::from(tcp);
    let raw = fd.as_raw_fd();
    let fd = refused(
        "TCP as SEQPACKET",
        SeqPacketSocket::try_from(fd),
        raw,
        not_unix,
    );
    let fd = refused("TCP as DGRAM", DatagramSocket::try_from(fd), raw, not_unix);
    let fd = refused("TCP as Listener", Listener::try_from(fd), raw, not_unix);

    let tcp = std::net::TcpListener::from(fd);
    assert_eq!(
        tcp.local_addr().expect("local_addr"),
        local,
        "handed-back TCP listener changed"
    );
    let _client = std::net::TcpStream::connect(local).expect("connect to handed-back TCP listener");
    tcp.set_nonblocking(true).expect("nonblocking");
    tcp.accept()
        .expect("handed-back TCP listener still accepts");
}

#[test]
fn unix_stream_sockets_are_the_wrong_type() {
    let (a, mut b) = std::os::unix::net::UnixStream::pair().expect("stream pair");
    let fd = OwnedFd::from(a);
    let raw = fd.as_raw_fd();
    let stream = wrong_type(libc::SOCK_STREAM);
    let fd = refused(
        "STREAM as SEQPACKET",
        SeqPacketSocket::try_from(fd),
        raw,
        &stream,
    );
    let fd = refused(
        "STREAM as DGRAM",
        DatagramSocket::try_from(fd),
        raw,
        &stream,
    );
    let fd = refused("STREAM as Listener", Listener::try_from(fd), raw, &stream);

    let mut a = std::os::unix::net::UnixStream::from(fd);
    a.write_all(b"stream").expect("write");
    let mut buf = [0; 6];
    b.read_exact(&mut buf).expect("read");
    assert_eq!(&buf, b"stream");
}

#[test]
fn listener_needs_a_listening_seqpacket_socket() {
    // A connected SEQPACKET socket is not listening.
    let (a, b) = SeqPacketSocket::pair().expect("seqpacket pair");
    let fd = OwnedFd::from(a);
    let raw = fd.as_raw_fd();
    let not_listening = |e: &TransportError| matches!(e, TransportError::NotListening);
    let fd = refused(
        "connected SEQPACKET as Listener",
        Listener::try_from(fd),
        raw,
        not_listening,
    );
    let a = SeqPacketSocket::try_from(fd).expect("still a SEQPACKET socket");
    roundtrip(&a, &b, "SEQPACKET fd after a refused Listener conversion");

    // Bound but not listening.
    let name = AbstractName::random().expect("random name");
    let sock = nix_socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("socket");
    let sockaddr = UnixAddr::new_abstract(name.as_bytes()).expect("sockaddr");
    nix_socket::bind(sock.as_raw_fd(), &sockaddr).expect("bind");
    let raw = sock.as_raw_fd();
    let sock = refused(
        "bound SEQPACKET as Listener",
        Listener::try_from(sock),
        raw,
        not_listening,
    );

    // Once listening (blocking, as a service manager might hand it over) it
    // converts, becomes non-blocking, and accepts.
    nix_socket::listen(&sock, Backlog::new(8).expect("backlog")).expect("listen");
    let listener = Listener::try_from(sock).expect("listening SEQPACKET to Listener");
    let flags = OFlag::from_bits_retain(fcntl(&listener, FcntlArg::F_GETFL).expect("F_GETFL"));
    assert!(
        flags.contains(OFlag::O_NONBLOCK),
        "adopted listener was not made non-blocking"
    );
    let addr = Address::from(name);
    assert_eq!(listener.local_addr().expect("local_addr"), addr);
    let err = listener.try_accept().expect_err("nothing to accept yet");
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err:?}");

    let client = SeqPacketSocket::connect_timeout(&addr, WAIT).expect("connect");
    let server = listener
        .accept_timeout(WAIT)
        .expect("adopted listener accepts");
    roundtrip(
        &client,
        &server,
        "connection accepted by an adopted listener",
    );
}

#[test]
fn into_owned_fd_keeps_the_socket_file() {
    let dir = common::temp_dir();
    let path = dir.path().join("kept.sock");
    let addr = Address::from(path.as_path());

    let fd = OwnedFd::from(Listener::bind(&addr).expect("bind"));
    assert!(
        path.exists(),
        "converting a Listener to an OwnedFd removed its socket file"
    );
    let listener = Listener::try_from(fd).expect("back to a Listener");
    let client = SeqPacketSocket::connect_timeout(&addr, WAIT).expect("connect");
    let server = listener.accept_timeout(WAIT).expect("accept");
    roundtrip(&client, &server, "listener converted there and back");
    drop(listener);
    assert!(
        path.exists(),
        "an adopted listener removed a socket file it did not create"
    );
    std::fs::remove_file(&path).expect("clean up");

    let fd = OwnedFd::from(DatagramSocket::bind(&addr).expect("datagram bind"));
    assert!(
        path.exists(),
        "converting a DatagramSocket to an OwnedFd removed its socket file"
    );
    let socket = DatagramSocket::try_from(fd).expect("back to a DatagramSocket");
    let client = DatagramSocket::unbound().expect("unbound");
    client.send_to(b"across", &addr).expect("send_to");
    let mut buf = [0; 16];
    let n = socket.recv_timeout(&mut buf, WAIT).expect("recv");
    assert_eq!(&buf[..n], b"across");
    drop(socket);
    assert!(
        path.exists(),
        "an adopted datagram socket removed a socket file it did not create"
    );
}
