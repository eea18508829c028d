//! The handshake every courier connection starts with, against well-behaved
//! and hostile peers: protocol and wire-version mismatches (both ends see
//! both sides' values), peers that do not speak courier or send malformed
//! hellos, stall, or attach fds; what the handshake negotiates afterwards
//! (a peer that refuses fds, the receiver's limit); and `Endpoint::peer`.
//!
//! Hostile peers are raw transport sockets writing hellos and frames by
//! hand (layouts in `src/handshake.rs` and `src/wire.rs`). Every test holds
//! the fd lock, so that the ones comparing fd tables see only their own fds.

mod common;

use std::fs::File;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    assert_fds_back, body_of, devnull, fd_lock, fd_table, inline_frame, send_empty, send_raw,
    RECV_TIMEOUT,
};
use courier_channel::{
    ChannelError, Config, ConnectError, Endpoint, Fd, Listener, RecvTimeoutError, SendError,
    WIRE_VERSION,
};
use courier_transport::{
    AbstractName, Address, BindOptions, DatagramSocket, SendMsg, SeqPacketSocket, Wait,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A short wait for something that must NOT arrive.
const NOTHING: Duration = Duration::from_millis(100);

/// The largest encoded value a peer that refuses fds can be sent (all of
/// it inline, in one frame of at most `MAX_INLINE_FRAME` bytes).
const INLINE_MAX: usize = Config::MAX_INLINE_THRESHOLD;

// ---------------------------------------------------------------- helpers

fn abstract_addr() -> Address {
    Address::from(AbstractName::random().expect("random abstract name"))
}

/// A listener on a fresh abstract name, and that name.
fn listen<S: Serialize, R: DeserializeOwned>(config: Config) -> (Listener<S, R>, Address) {
    let addr = abstract_addr();
    let listener = Listener::bind(&addr, config).expect("bind listener");
    (listener, addr)
}

/// Server and client endpoints, connected through a listener and
/// handshaken with their configs.
fn connected<A, B>(server: Config, client: Config) -> (Endpoint<A, B>, Endpoint<B, A>)
where
    A: Serialize + DeserializeOwned + Send + 'static,
    B: Serialize + DeserializeOwned + Send + 'static,
{
    let (listener, addr) = listen::<A, B>(server);
    let connecting = thread::spawn(move || Endpoint::<B, A>::connect(&addr, client));
    let server = listener.accept_timeout(RECV_TIMEOUT).expect("accept");
    let client = connecting.join().expect("client thread").expect("connect");
    (server, client)
}

/// A hello field by field, so that a test can get any of them wrong.
#[derive(Clone, Debug)]
struct RawHello {
    magic: [u8; 4],
    wire: u8,
    flags: u8,
    reserved: [u8; 2],
    version: u32,
    limit: u64,
    name_len: u8,
    name: Vec<u8>,
}

impl RawHello {
    /// A valid hello for protocol `name` version `version`, accepting fds.
    fn valid(name: &str, version: u32) -> Self {
        RawHello {
            magic: *b"CRHS",
            wire: WIRE_VERSION,
            flags: 1,
            reserved: [0, 0],
            version,
            limit: Config::DEFAULT_LIMIT as u64,
            name_len: name.len() as u8,
            name: name.as_bytes().to_vec(),
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = self.magic.to_vec();
        out.push(self.wire);
        out.push(self.flags);
        out.extend_from_slice(&self.reserved);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.limit.to_le_bytes());
        out.push(self.name_len);
        out.extend_from_slice(&self.name);
        out
    }
}

/// The protocol the hostile-peer tests' listeners speak.
const PROTO: &str = "handshake-test";

fn proto_config() -> Config {
    Config::new().protocol(PROTO, 1)
}

/// A raw socket connected to `addr` that has sent `frame` (queued before
/// anyone accepts: the backlog holds the connection).
fn raw_sending(addr: &Address, frame: &[u8]) -> SeqPacketSocket {
    let raw = SeqPacketSocket::connect(addr).expect("raw connect");
    if frame.is_empty() {
        send_empty(&raw, &[]);
    } else {
        send_raw(&raw, frame, &[]);
    }
    raw
}

/// The listener's next accept, which must fail.
fn accept_error<S: Serialize, R: DeserializeOwned>(
    listener: &Listener<S, R>,
    what: &str,
) -> ConnectError {
    match listener.accept_timeout(RECV_TIMEOUT) {
        Ok(_) => panic!("{what}: the peer was accepted"),
        Err(e) => e,
    }
}

/// On a raw peer the listener dropped: the listener's hello (which it sends
/// before reading anything), then end of stream.
fn hello_then_eof(raw: &SeqPacketSocket, what: &str) -> Vec<u8> {
    let mut buf = [0; 512];
    let n = raw
        .recv_timeout(&mut buf, RECV_TIMEOUT)
        .unwrap_or_else(|e| panic!("{what}: the listener's hello: {e}"));
    let hello = buf[..n].to_vec();
    assert!(
        hello.starts_with(b"CRHS") && hello[4] == WIRE_VERSION,
        "{what}: not a hello: {hello:?}"
    );
    match raw.recv_timeout(&mut buf, RECV_TIMEOUT) {
        Ok(0) => {}
        other => panic!("{what}: expected end of stream, got {other:?}"),
    }
    hello
}

/// The listener still serves a well-behaved client with `client` config.
fn still_serves(listener: &Listener<u32, u32>, addr: &Address, client: Config) {
    let addr = addr.clone();
    let connecting = thread::spawn(move || {
        let ep = Endpoint::<u32, u32>::connect(&addr, client).expect("connect");
        ep.send(41).expect("send");
        ep.recv_timeout(RECV_TIMEOUT).expect("answer")
    });
    let ep = listener
        .accept_timeout(RECV_TIMEOUT)
        .expect("a good client after the bad ones");
    let n = ep.recv_timeout(RECV_TIMEOUT).expect("request");
    ep.send(n + 1).expect("answer");
    assert_eq!(connecting.join().expect("client thread"), 42);
}

/// Whether this kernel has `SO_PASSRIGHTS` (Linux 6.16+).
fn kernel_refuses_fds() -> bool {
    let (a, _b) = SeqPacketSocket::pair().expect("socketpair");
    a.set_pass_rights(false).expect("SO_PASSRIGHTS")
}

/// Values with and without fds, for the accept_fds tests.
#[derive(Serialize, Deserialize, Debug)]
enum Msg {
    Text(String),
    Blob(Vec<u8>),
    File(Fd<File>),
    Raw(#[serde(with = "courier_channel::as_fd")] OwnedFd),
}

/// [`Msg`] with raw fd indices: the same postcard encoding.
#[derive(Serialize)]
enum MsgShape {
    Text(String),
    #[allow(dead_code)]
    Blob(Vec<u8>),
    File(u32),
}

/// The encoded size of a `Msg::Blob` of `n` bytes.
fn blob_size(n: usize) -> usize {
    postcard::to_allocvec(&Msg::Blob(vec![0; n]))
        .expect("encode")
        .len()
}

fn assert_devnull(file: &File, what: &str) {
    let kind = file
        .metadata()
        .unwrap_or_else(|e| panic!("{what}: the fd handed back is not open: {e}"))
        .file_type();
    assert!(kind.is_char_device(), "{what}: not /dev/null any more");
}

// --------------------------------------------------------- 1. protocols

#[test]
fn a_protocol_mismatch_fails_both_ends_and_shows_both_sides() {
    let _lock = fd_lock();
    for (client_name, client_version) in [("chat", 3), ("calc", 3)] {
        let (listener, addr) = listen::<u32, u32>(Config::new().protocol("calc", 2));
        let client_addr = addr.clone();
        let connecting = thread::spawn(move || {
            Endpoint::<u32, u32>::connect(
                &client_addr,
                Config::new().protocol(client_name, client_version),
            )
        });
        let server = accept_error(&listener, "mismatched protocol");
        let client = match connecting.join().expect("client thread") {
            Ok(_) => panic!("the client connected to a listener of another protocol"),
            Err(e) => e,
        };
        for (side, err, ours, theirs) in [
            (
                "server",
                &server,
                ("calc", 2),
                (client_name, client_version),
            ),
            (
                "client",
                &client,
                (client_name, client_version),
                ("calc", 2),
            ),
        ] {
            match err {
                ConnectError::ProtocolMismatch {
                    ours: o,
                    ours_version: ov,
                    theirs: t,
                    theirs_version: tv,
                } => {
                    assert_eq!((o.as_str(), *ov), ours, "{side}: ours");
                    assert_eq!((t.as_str(), *tv), theirs, "{side}: theirs");
                }
                other => panic!("{side}: expected ProtocolMismatch, got {other:?}"),
            }
            let text = err.to_string();
            for part in [
                format!("{:?} version {}", ours.0, ours.1),
                format!("{:?} version {}", theirs.0, theirs.1),
            ] {
                assert!(text.contains(&part), "{side}: {text:?} lacks {part:?}");
            }
        }
        assert_eq!((listener.rejected(), listener.failed()), (0, 1));
        still_serves(&listener, &addr, Config::new().protocol("calc", 2));
    }
}

#[test]
fn a_protocol_name_longer_than_255_bytes_is_refused_before_sending() {
    let _lock = fd_lock();
    const LONG: &str = concat!(
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    );
    let (a, b) = SeqPacketSocket::pair().expect("socketpair");
    match Endpoint::<u32, u32>::handshake(a, Config::new().protocol(LONG, 1)) {
        Err(ConnectError::ProtocolNameTooLong { len: 256 }) => {}
        other => panic!("expected ProtocolNameTooLong, got {:?}", other.map(|_| ())),
    }
    // Nothing was sent; the other end sees the first end gone.
    let mut buf = [0; 64];
    assert_eq!(b.recv_timeout(&mut buf, RECV_TIMEOUT).expect("recv"), 0);

    // 255 bytes fit, end to end.
    const MAX: &str = LONG.split_at(255).0;
    let (server, client) = connected::<u32, u32>(
        Config::new().protocol(MAX, 9),
        Config::new().protocol(MAX, 9),
    );
    assert_eq!(server.peer().expect("hello").protocol, MAX);
    assert_eq!(client.peer().expect("hello").protocol.len(), 255);
}

// ------------------------------------------------------ 2. hostile hellos

#[test]
fn a_peer_that_does_not_speak_courier_is_dropped() {
    let _lock = fd_lock();
    let (listener, addr) = listen::<u32, u32>(proto_config());
    for (i, frame) in [&b"hello"[..], b"", b"CRH", b"GET / HTTP/1.1\r\n\r\n"]
        .into_iter()
        .enumerate()
    {
        let what = format!("frame {frame:?}");
        let raw = raw_sending(&addr, frame);
        match accept_error(&listener, &what) {
            ConnectError::NotCourier => {}
            other => panic!("{what}: expected NotCourier, got {other:?}"),
        }
        assert_eq!(listener.failed(), i as u64 + 1, "{what}: failed()");
        hello_then_eof(&raw, &what);
    }
    assert_eq!(listener.rejected(), 0);
    still_serves(&listener, &addr, proto_config());
}

#[test]
fn a_hello_of_another_wire_version_is_a_wire_version_error() {
    let _lock = fd_lock();
    let (listener, addr) = listen::<u32, u32>(proto_config());
    for theirs in [0, WIRE_VERSION + 1, 255] {
        let hello = RawHello {
            wire: theirs,
            ..RawHello::valid(PROTO, 1)
        };
        let raw = raw_sending(&addr, &hello.bytes());
        let err = accept_error(&listener, "another wire version");
        match err {
            ConnectError::WireVersion { ours, theirs: t } => {
                assert_eq!((ours, t), (WIRE_VERSION, theirs));
            }
            ref other => panic!("expected WireVersion, got {other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.contains(&format!("version {WIRE_VERSION}"))
                && text.contains(&format!("version {theirs}")),
            "{text:?}"
        );
        hello_then_eof(&raw, "another wire version");
    }
    assert_eq!(listener.failed(), 3);
    still_serves(&listener, &addr, proto_config());
}

#[test]
fn malformed_hellos_are_refused_without_a_panic() {
    let _lock = fd_lock();
    let (listener, addr) = listen::<u32, u32>(proto_config());
    let valid = RawHello::valid(PROTO, 1);
    let good = valid.bytes();
    const SHORT: &str = "shorter than its fixed part";
    const RESERVED: &str = "reserved bits set";
    const LENGTH: &str = "length does not match its protocol name";
    const UTF8: &str = "protocol name is not UTF-8";
    const LONG: &str = "longer than any hello";

    let mut cases: Vec<(String, Vec<u8>, &str)> = Vec::new();
    // Every truncation that keeps the magic.
    for cut in 4..good.len() {
        let reason = if cut < 21 { SHORT } else { LENGTH };
        cases.push((format!("cut at {cut}"), good[..cut].to_vec(), reason));
    }
    for bit in 1..8 {
        let hello = RawHello {
            flags: 1 | 1 << bit,
            ..valid.clone()
        };
        cases.push((format!("flag bit {bit}"), hello.bytes(), RESERVED));
    }
    for reserved in [[1, 0], [0, 0x80]] {
        let hello = RawHello {
            reserved,
            ..valid.clone()
        };
        cases.push((format!("reserved {reserved:?}"), hello.bytes(), RESERVED));
    }
    let not_utf8 = RawHello {
        name_len: 4,
        name: vec![b'a', 0xff, 0xfe, b'z'],
        ..valid.clone()
    };
    cases.push(("non-UTF-8 name".into(), not_utf8.bytes(), UTF8));
    for name_len in [0, valid.name_len - 1, valid.name_len + 1, 255] {
        let hello = RawHello {
            name_len,
            ..valid.clone()
        };
        cases.push((format!("name length {name_len}"), hello.bytes(), LENGTH));
    }
    // A hello with bytes after the name: 1 more, and up to exactly the
    // 277 bytes the receiver's buffer holds.
    for extra in [1, 277 - good.len()] {
        let mut bytes = good.clone();
        bytes.resize(good.len() + extra, b'x');
        cases.push((format!("{extra} bytes after the name"), bytes, LENGTH));
    }
    for len in [278, 300, 4096] {
        let mut bytes = good.clone();
        bytes.resize(len, b'x');
        cases.push((format!("{len}-byte frame"), bytes, LONG));
    }

    for (i, (what, frame, reason)) in cases.iter().enumerate() {
        let raw = raw_sending(&addr, frame);
        match accept_error(&listener, what) {
            ConnectError::Malformed { reason: r } => {
                assert_eq!(r, *reason, "{what}: wrong reason");
            }
            other => panic!("{what}: expected Malformed, got {other:?}"),
        }
        assert_eq!(listener.failed(), i as u64 + 1, "{what}: failed()");
        hello_then_eof(&raw, what);
    }
    assert_eq!(listener.rejected(), 0);
    still_serves(&listener, &addr, proto_config());
}

// ------------------------------------------------------------- 3. stalls

#[test]
fn a_stalled_peer_times_out_and_the_listener_serves_the_next() {
    let _lock = fd_lock();
    let timeout = Duration::from_millis(200);
    let config = proto_config().handshake_timeout(timeout);
    let (listener, addr) = listen::<u32, u32>(config);
    let raw = SeqPacketSocket::connect(&addr).expect("raw connect");
    let started = Instant::now();
    let err = accept_error(&listener, "a stalled peer");
    let took = started.elapsed();
    match err {
        ConnectError::Timeout { after } => assert_eq!(after, timeout),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(
        took >= timeout,
        "gave up after {took:?}, before the timeout"
    );
    assert!(took < Duration::from_secs(2), "gave up only after {took:?}");
    assert_eq!(listener.failed(), 1);
    hello_then_eof(&raw, "a stalled peer");
    still_serves(&listener, &addr, config);
}

#[test]
fn connecting_to_a_listener_that_never_answers_times_out() {
    let _lock = fd_lock();
    let timeout = Duration::from_millis(200);
    let addr = abstract_addr();
    // A transport listener that never accepts: the connection waits in its
    // backlog, our hello unread, no hello coming.
    let _silent = courier_transport::Listener::bind(&addr).expect("bind");
    let started = Instant::now();
    let got = Endpoint::<u32, u32>::connect(&addr, Config::new().handshake_timeout(timeout));
    let took = started.elapsed();
    match got {
        Err(ConnectError::Timeout { after }) => assert_eq!(after, timeout),
        other => panic!("expected Timeout, got {:?}", other.map(|_| ())),
    }
    assert!(
        took >= timeout,
        "gave up after {took:?}, before the timeout"
    );
    assert!(took < Duration::from_secs(2), "gave up only after {took:?}");
}

#[test]
fn the_handshake_timeout_includes_the_connect() {
    let _lock = fd_lock();
    let timeout = Duration::from_millis(200);
    let addr = abstract_addr();
    // Backlog 1, never accepting: fill it with raw connections until the
    // kernel would make a connect wait (bounded).
    let _full = courier_transport::Listener::bind_with(&addr, &BindOptions::new().backlog(1))
        .expect("bind");
    let mut queued = Vec::new();
    loop {
        match SeqPacketSocket::try_connect(&addr) {
            Ok(s) => queued.push(s),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("filling the backlog: {e}"),
        }
        assert!(queued.len() < 64, "the backlog never filled");
    }
    let started = Instant::now();
    let got = Endpoint::<u32, u32>::connect(&addr, Config::new().handshake_timeout(timeout));
    let took = started.elapsed();
    match got {
        Err(ConnectError::Timeout { after }) => assert_eq!(after, timeout),
        other => panic!("expected Timeout, got {:?}", other.map(|_| ())),
    }
    assert!(
        took >= timeout,
        "gave up after {took:?}, before the timeout"
    );
    assert!(took < Duration::from_secs(2), "gave up only after {took:?}");
}

#[test]
fn accept_timeout_bounds_only_the_wait_for_a_peer() {
    let _lock = fd_lock();
    let (listener, addr) = listen::<u32, u32>(proto_config());
    // Nobody connects: Io(TimedOut), nothing counted.
    match listener.accept_timeout(Duration::from_millis(50)) {
        Err(ConnectError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::TimedOut),
        other => panic!("expected Io(TimedOut), got {:?}", other.map(|_| ())),
    }
    assert_eq!((listener.rejected(), listener.failed()), (0, 0));
    // A peer that connected in time has the whole handshake timeout (5 s
    // by default) for its hello, not what is left of the accept's 50 ms.
    let raw = SeqPacketSocket::connect(&addr).expect("raw connect");
    let late = thread::spawn(move || {
        thread::sleep(Duration::from_millis(300));
        send_raw(&raw, &RawHello::valid(PROTO, 1).bytes(), &[]);
        raw
    });
    let ep = listener
        .accept_timeout(Duration::from_millis(50))
        .expect("a peer whose hello comes after the accept's timeout");
    assert_eq!(ep.peer().expect("hello").protocol, PROTO);
    drop(late.join().expect("peer thread"));
}

#[test]
fn frames_sent_right_after_the_hello_are_kept_for_the_endpoint() {
    let _lock = fd_lock();
    let (listener, addr) = listen::<Msg, Msg>(proto_config());
    let raw = raw_sending(&addr, &RawHello::valid(PROTO, 1).bytes());
    for text in ["first", "second"] {
        send_raw(
            &raw,
            &inline_frame(0, &body_of(&MsgShape::Text(text.into()))),
            &[],
        );
    }
    let server = listener.accept_timeout(RECV_TIMEOUT).expect("accept");
    for text in ["first", "second"] {
        match server.recv_timeout(RECV_TIMEOUT) {
            Ok(Msg::Text(t)) => assert_eq!(t, text),
            other => panic!("expected {text:?}, got {other:?}"),
        }
    }
}

#[test]
fn connecting_where_nothing_listens_is_an_io_error() {
    let _lock = fd_lock();
    match Endpoint::<u32, u32>::connect(&abstract_addr(), Config::new()) {
        Err(ConnectError::Io(e)) => {
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}")
        }
        other => panic!(
            "expected Io(ConnectionRefused), got {:?}",
            other.map(|_| ())
        ),
    }
}

// ------------------------------------------------------ 4. fds in a hello

#[test]
fn a_hello_carrying_fds_is_malformed_and_leaks_no_fd() {
    let _lock = fd_lock();
    for accept_fds in [true, false] {
        let what = format!("listener with accept_fds({accept_fds})");
        let (listener, addr) = listen::<u32, u32>(proto_config().accept_fds(accept_fds));
        let files = [devnull(), devnull(), devnull()];
        let raw = SeqPacketSocket::connect(&addr).expect("raw connect");
        let baseline = fd_table();
        let fds: Vec<_> = files.iter().map(AsFd::as_fd).collect();
        // Queued before the accept, so before the listener's end could
        // refuse fds: they do reach it.
        send_raw(&raw, &RawHello::valid(PROTO, 1).bytes(), &fds);
        match accept_error(&listener, &what) {
            ConnectError::Malformed { reason } => {
                assert!(reason.contains("file descriptors"), "{what}: {reason}");
            }
            other => panic!("{what}: expected Malformed, got {other:?}"),
        }
        assert_fds_back(&baseline, &what);
        assert_eq!(listener.failed(), 1, "{what}");
        hello_then_eof(&raw, &what);
        for f in &files {
            assert_devnull(f, &what);
        }
        still_serves(&listener, &addr, proto_config());
    }
}

#[test]
fn a_client_given_a_hello_with_fds_fails_and_leaks_no_fd() {
    let _lock = fd_lock();
    let addr = abstract_addr();
    let raw_listener = courier_transport::Listener::bind(&addr).expect("bind");
    let file = devnull();
    let baseline = fd_table();
    let hello = RawHello::valid(PROTO, 1).bytes();
    let server = thread::spawn(move || {
        let conn = raw_listener.accept_timeout(RECV_TIMEOUT).expect("accept");
        send_raw(&conn, &hello, &[file.as_fd()]);
        // Hold the connection until the client has judged the hello.
        let mut buf = [0; 512];
        let mut frames = 0;
        while let Ok(n) = conn.recv_timeout(&mut buf, RECV_TIMEOUT) {
            if n == 0 {
                break;
            }
            frames += 1;
        }
        frames
    });
    match Endpoint::<u32, u32>::connect(&addr, proto_config()) {
        Err(ConnectError::Malformed { reason }) => {
            assert!(reason.contains("file descriptors"), "{reason}")
        }
        other => panic!("expected Malformed, got {:?}", other.map(|_| ())),
    }
    assert_eq!(
        server.join().expect("server thread"),
        1,
        "the client's hello"
    );
    // The server thread closed the listener and the file it sent; nothing
    // else may have appeared.
    let leaked: Vec<_> = fd_table()
        .into_iter()
        .filter(|(fd, _)| !baseline.contains_key(fd))
        .collect();
    assert!(leaked.is_empty(), "fds leaked into the client: {leaked:?}");
}

// ------------------------------------------- 5. an end that refuses fds

#[test]
fn a_peer_that_refuses_fds_is_told_and_sends_with_fds_fail_at_once() {
    let _lock = fd_lock();
    let (server, client) = connected::<Msg, Msg>(proto_config().accept_fds(false), proto_config());
    assert!(!client.peer().expect("hello").accepts_fds);
    assert!(server.peer().expect("hello").accepts_fds);

    let file = devnull();
    let raw = file.as_raw_fd();
    match client.send(Msg::File(Fd::new(file))) {
        Err(SendError::Failed(Msg::File(file), ChannelError::FdsRefused { count: 1 })) => {
            assert_eq!(file.as_raw_fd(), raw, "another fd came back");
            assert_devnull(&file, "Fd<File>");
        }
        other => panic!("expected Failed(FdsRefused), got {other:?}"),
    }
    let owned: OwnedFd = devnull().into();
    let raw = owned.as_raw_fd();
    match client.send(Msg::Raw(owned)) {
        Err(SendError::Failed(Msg::Raw(fd), ChannelError::FdsRefused { count: 1 })) => {
            assert_eq!(fd.as_raw_fd(), raw, "another fd came back");
            assert_devnull(&File::from(fd), "as_fd OwnedFd");
        }
        other => panic!("expected Failed(FdsRefused), got {other:?}"),
    }
    match server.recv_timeout(NOTHING) {
        Err(RecvTimeoutError::Timeout) => {}
        other => panic!("the refused sends reached the receiver: {other:?}"),
    }
    client.send(Msg::Text("after".into())).expect("send text");
    match server.recv_timeout(RECV_TIMEOUT) {
        Ok(Msg::Text(t)) => assert_eq!(t, "after"),
        other => panic!("expected the text, got {other:?}"),
    }
    // The end that refuses fds may still send them to one that takes them.
    server
        .send(Msg::File(Fd::new(devnull())))
        .expect("send an fd to an end that accepts fds");
    match client.recv_timeout(RECV_TIMEOUT) {
        Ok(Msg::File(f)) => assert_devnull(&f, "fd received by the accepting end"),
        other => panic!("expected the file, got {other:?}"),
    }
}

#[test]
fn set_pass_rights_makes_the_kernel_refuse_fds() {
    let _lock = fd_lock();
    let (a, b) = SeqPacketSocket::pair().expect("socketpair");
    if !b.set_pass_rights(false).expect("SO_PASSRIGHTS") {
        println!("skipped: this kernel lacks SO_PASSRIGHTS (Linux 6.16+)");
        return;
    }
    let file = devnull();
    let baseline = fd_table();
    match a.send_with_fds(b"with an fd", &[file.as_fd()]) {
        Err(e) => assert_eq!(e.raw_os_error(), Some(nix::libc::EPERM), "{e}"),
        Ok(n) => panic!("the kernel took {n} bytes with an fd for a socket refusing fds"),
    }
    a.send(b"plain").expect("a message without fds still goes");
    let mut buf = [0; 16];
    let mut fds = Vec::new();
    let got = b.recv_with_fds(&mut buf, &mut fds, 4).expect("recv");
    assert_eq!((&buf[..got.len], fds.len()), (&b"plain"[..], 0));
    assert_fds_back(&baseline, "refused fds");
    // Turned on again, fds pass.
    assert!(b.set_pass_rights(true).expect("SO_PASSRIGHTS"));
    a.send_with_fds(b"fd", &[file.as_fd()])
        .expect("send with an fd");
    let got = b.recv_with_fds(&mut buf, &mut fds, 4).expect("recv");
    assert_eq!(got.fds, 1);
    drop(fds);

    // DGRAM too.
    let (a, b) = DatagramSocket::pair().expect("socketpair");
    assert!(b.set_pass_rights(false).expect("SO_PASSRIGHTS"));
    match a.send_with_fds(b"with an fd", &[file.as_fd()]) {
        Err(e) => assert_eq!(e.raw_os_error(), Some(nix::libc::EPERM), "{e}"),
        Ok(n) => panic!("the kernel took {n} DGRAM bytes with an fd for a socket refusing fds"),
    }
}

/// `Config::accept_fds(false)` says "the socket asks the kernel to refuse
/// them": a channel made with that config must not take a value with fds
/// from its sender and then drop it at the receiver.
#[test]
fn a_channel_made_with_accept_fds_false_refuses_fds_at_send() {
    let _lock = fd_lock();
    let config = Config::new().accept_fds(false);
    let (tx, rx) = config.channel::<Msg>().expect("channel");
    let file = devnull();
    let raw = file.as_raw_fd();
    let sent = tx.send(Msg::File(Fd::new(file)));
    // Whatever happened, no fd may linger at the receiver.
    let received = rx.recv_timeout(NOTHING);
    match sent {
        Err(SendError::Failed(Msg::File(file), _)) => {
            assert_eq!(file.as_raw_fd(), raw);
            assert_devnull(&file, "the fd handed back");
        }
        other => panic!(
            "Config::new().accept_fds(false).channel(): the send of a value with an fd \
             returned {other:?} (the fd is gone from the sender) and the receiver got \
             {received:?}: the value was lost instead of refused at send"
        ),
    }
}

#[test]
fn large_values_travel_inline_to_a_peer_that_refuses_fds() {
    let _lock = fd_lock();
    let (server, client) = connected::<Msg, Msg>(proto_config().accept_fds(false), proto_config());
    assert_eq!(
        client.peer().expect("hello").limit,
        INLINE_MAX as u64,
        "the announced limit of an end that refuses fds"
    );
    let exact = INLINE_MAX - (blob_size(INLINE_MAX) - INLINE_MAX);
    assert_eq!(blob_size(exact), INLINE_MAX);
    // 100 KiB (above the 64 KiB inline threshold), and the largest value
    // that fits in one inline frame: both arrive (the receiver takes no
    // fd, so no memfd either).
    for len in [100 << 10, exact] {
        let blob: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        client.send(Msg::Blob(blob.clone())).expect("send blob");
        match server.recv_timeout(RECV_TIMEOUT) {
            Ok(Msg::Blob(got)) => assert!(got == blob, "the {len}-byte blob changed"),
            other => panic!("{len}-byte blob: got {other:?}"),
        }
    }
    // One byte more does not fit.
    let len = exact + 1;
    match client.send(Msg::Blob(vec![3; len])) {
        Err(SendError::Failed(Msg::Blob(v), ChannelError::TooLarge { size, limit })) => {
            assert_eq!(v.len(), len, "the value handed back changed");
            assert_eq!((size, limit), (INLINE_MAX + 1, INLINE_MAX));
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    match server.recv_timeout(NOTHING) {
        Err(RecvTimeoutError::Timeout) => {}
        other => panic!("the refused send reached the receiver: {other:?}"),
    }
}

#[test]
fn a_raw_peer_bypassing_the_check_gets_eperm_and_no_fd_leaks() {
    let _lock = fd_lock();
    let (listener, addr) = listen::<Msg, Msg>(proto_config().accept_fds(false));
    let raw = raw_sending(&addr, &RawHello::valid(PROTO, 1).bytes());
    let server = listener.accept_timeout(RECV_TIMEOUT).expect("accept");
    let mut buf = [0; 512];
    let n = raw
        .recv_timeout(&mut buf, RECV_TIMEOUT)
        .expect("the listener's hello");
    let hello = &buf[..n];
    assert_eq!(hello[5] & 1, 0, "the hello says fds are accepted");
    assert_eq!(
        u64::from_le_bytes(hello[12..20].try_into().unwrap()),
        INLINE_MAX as u64,
        "the announced limit"
    );

    let file = devnull();
    let baseline = fd_table();
    let frame = inline_frame(1, &body_of(&MsgShape::File(0)));
    let bufs = [IoSlice::new(&frame)];
    let sent = raw.send_msg(
        &SendMsg::new(&bufs).with_fds(&[file.as_fd()]),
        Wait::timeout(RECV_TIMEOUT),
    );
    match sent {
        Err(e) if e.raw_os_error() == Some(nix::libc::EPERM) => {
            match server.recv_timeout(NOTHING) {
                Err(RecvTimeoutError::Timeout) => {}
                other => panic!("after EPERM, something arrived: {other:?}"),
            }
        }
        Ok(_) => {
            assert!(
                !kernel_refuses_fds(),
                "this kernel has SO_PASSRIGHTS, yet it took fds for an end that refuses them"
            );
            match server.recv_timeout(RECV_TIMEOUT) {
                Err(RecvTimeoutError::Failed(ChannelError::FdsNotAccepted)) => {}
                other => panic!("expected FdsNotAccepted, got {other:?}"),
            }
        }
        Err(e) => panic!("unexpected send error: {e}"),
    }
    assert_fds_back(&baseline, "fds sent to an end that refuses them");
    assert_devnull(&file, "the sender's copy");

    send_raw(
        &raw,
        &inline_frame(0, &body_of(&MsgShape::Text("after".into()))),
        &[],
    );
    match server.recv_timeout(RECV_TIMEOUT) {
        Ok(Msg::Text(t)) => assert_eq!(t, "after"),
        other => panic!("the channel is not usable any more: {other:?}"),
    }
}

#[test]
fn fds_queued_before_the_handshake_are_closed_on_arrival() {
    let _lock = fd_lock();
    let (listener, addr) = listen::<Msg, Msg>(proto_config().accept_fds(false));
    let files = [devnull(), devnull()];
    let raw = raw_sending(&addr, &RawHello::valid(PROTO, 1).bytes());
    let baseline = fd_table();
    // Sent before the listener's end refuses fds (it does so once
    // accepted), so the kernel takes them: the receive path must close
    // them.
    let fds: Vec<_> = files.iter().map(AsFd::as_fd).collect();
    send_raw(
        &raw,
        &inline_frame(1, &body_of(&MsgShape::File(0))),
        &fds[..1],
    );
    send_raw(&raw, &inline_frame(2, &body_of(&MsgShape::File(0))), &fds);
    let server = listener.accept_timeout(RECV_TIMEOUT).expect("accept");
    for what in ["one fd", "two fds"] {
        match server.recv_timeout(RECV_TIMEOUT) {
            Err(RecvTimeoutError::Failed(ChannelError::FdsNotAccepted)) => {}
            other => panic!("{what}: expected FdsNotAccepted, got {other:?}"),
        }
    }
    drop(server);
    drop(listener);
    drop(raw);
    let mut after = fd_table();
    // The endpoint, listener and raw peer are gone; nothing else may be new.
    after.retain(|fd, _| !baseline.contains_key(fd));
    assert!(after.is_empty(), "fds leaked into the receiver: {after:?}");
    for f in &files {
        assert_devnull(f, "the sender's copy");
    }
}

// ------------------------------------------------ 6. the negotiated limit

#[test]
fn the_receivers_limit_is_negotiated_and_checked_by_the_sender() {
    let _lock = fd_lock();
    let (server, client) = connected::<Msg, Msg>(proto_config().limit(1000), proto_config());
    assert_eq!(client.peer().expect("hello").limit, 1000);
    let size = blob_size(2000);
    match client.send(Msg::Blob(vec![9; 2000])) {
        Err(SendError::Failed(Msg::Blob(v), ChannelError::TooLarge { size: s, limit })) => {
            assert_eq!(v, vec![9; 2000], "the value handed back changed");
            assert_eq!((s, limit), (size, 1000));
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    match server.recv_timeout(NOTHING) {
        Err(RecvTimeoutError::Timeout) => {}
        other => panic!("the receiver saw the refused value: {other:?}"),
    }
    client
        .send(Msg::Blob(vec![8; 900]))
        .expect("a value below the limit");
    match server.recv_timeout(RECV_TIMEOUT) {
        Ok(Msg::Blob(v)) => assert_eq!(v, vec![8; 900]),
        other => panic!("expected the 900-byte blob, got {other:?}"),
    }
}

// ------------------------------------------------------- 7. peer()

#[test]
fn peer_returns_what_the_other_end_announced() {
    let _lock = fd_lock();
    let server_config = Config::new().protocol("svc", 7).limit(1 << 20);
    let client_config = Config::new()
        .protocol("svc", 7)
        .limit(5000)
        .accept_fds(false);
    let (server, client) = connected::<u32, u32>(server_config, client_config);
    let theirs = server.peer().expect("the client's hello");
    assert_eq!(theirs.wire_version, WIRE_VERSION);
    assert_eq!((theirs.protocol.as_str(), theirs.version), ("svc", 7));
    assert!(!theirs.accepts_fds);
    assert_eq!(theirs.limit, 5000);
    let theirs = client.peer().expect("the server's hello");
    assert_eq!(theirs.wire_version, WIRE_VERSION);
    assert_eq!((theirs.protocol.as_str(), theirs.version), ("svc", 7));
    assert!(theirs.accepts_fds);
    assert_eq!(theirs.limit, 1 << 20);

    // An end refusing fds announces at most what fits inline.
    let (server, _client) = connected::<u32, u32>(
        Config::new(),
        Config::new().accept_fds(false).limit(1 << 20),
    );
    assert_eq!(server.peer().expect("hello").limit, INLINE_MAX as u64);
    assert_eq!(server.peer().expect("hello").protocol, "");

    // Over a pair, with Endpoint::handshake on both ends.
    let (a, b) = SeqPacketSocket::pair().expect("socketpair");
    let other = thread::spawn(move || {
        Endpoint::<u32, u32>::handshake(b, Config::new().protocol("pair", 1).limit(77))
    });
    let ours =
        Endpoint::<u32, u32>::handshake(a, Config::new().protocol("pair", 1)).expect("handshake");
    let theirs = other.join().expect("thread").expect("handshake");
    assert_eq!(ours.peer().expect("hello").limit, 77);
    assert_eq!(
        theirs.peer().expect("hello").limit,
        Config::DEFAULT_LIMIT as u64
    );

    // A pair made by Config: each end knows the pair's own settings.
    let (a, _b) = Config::new()
        .limit(500)
        .endpoints::<u32, u32>()
        .expect("endpoints");
    assert_eq!(a.peer().expect("pair terms").limit, 500);

    // No handshake, no hello.
    let (x, _y) = SeqPacketSocket::pair().expect("pair");
    assert!(Endpoint::<u32, u32>::from_socket(x, Config::new())
        .peer()
        .is_none());
}
