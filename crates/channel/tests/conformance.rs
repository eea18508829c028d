//! Channel-semantics conformance suite: every check is written once, generic
//! over a [`Flavor`] (how to make a connected pair, plus the transport's
//! [`Caps`]), and instantiated by `conformance!` for SEQPACKET, DGRAM, and
//! SEQPACKET through `Box<dyn FrameTransport>` (`with_transport`). A new
//! transport plugs in with one `Flavor` impl and one `conformance!` line.
//!
//! Covered: ordering; cloned senders on several threads; empty, full,
//! timeout and deadline cases of the receive and send forms; disconnection
//! after the queue drains (DGRAM: a timeout instead); clones keeping a
//! channel alive; a dropped receiver handing values back; `iter`/`try_iter`;
//! `Endpoint` request/response and `split`; fds in values, handed back open
//! by a failed send and closed in the sender by a successful one.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use courier_channel::{
    channel, endpoints, Bytes, ChannelError, Config, Endpoint, Fd, Receiver, RecvError,
    RecvTimeoutError, SendError, SendTimeoutError, Sender, TryRecvError, TrySendError,
};
use courier_transport::{FrameTransport, SeqPacketSocket};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The longest any single wait may take before the test calls it a hang.
const HANG: Duration = Duration::from_secs(10);
/// A wait that is expected to time out.
const SHORT: Duration = Duration::from_millis(50);

/// Asserts that `$value` matches `$pattern`, printing what it got.
macro_rules! assert_matches {
    ($value:expr, $pattern:pat, $what:literal) => {{
        let got = $value;
        assert!(matches!(got, $pattern), "{}: got {:?}", $what, got);
    }};
}

/// What a transport promises beyond the common semantics.
#[derive(Clone, Copy, Debug)]
struct Caps {
    /// The receiver sees `Disconnected` once every sender is gone and the
    /// queue is drained (false for DGRAM: no end of stream).
    eof_on_drop: bool,
    /// Values holding fds can be sent.
    carries_fds: bool,
}

/// What every message type here is.
trait Msg: Serialize + DeserializeOwned {}
impl<T: Serialize + DeserializeOwned> Msg for T {}

/// Two connected endpoints.
type Endpoints<A, B> = (Endpoint<A, B>, Endpoint<B, A>);

/// A transport under test.
trait Flavor {
    const CAPS: Caps;
    fn channel<T: Msg>() -> (Sender<T>, Receiver<T>);
    /// Connected endpoints, or `None` when the transport cannot make them.
    fn endpoints<A: Msg, B: Msg>() -> Option<Endpoints<A, B>>;
}

/// The capabilities of the socket transports.
const SOCKET: Caps = Caps {
    eof_on_drop: true,
    carries_fds: true,
};

struct SeqPacket;
impl Flavor for SeqPacket {
    const CAPS: Caps = SOCKET;
    fn channel<T: Msg>() -> (Sender<T>, Receiver<T>) {
        channel().expect("SEQPACKET socketpair")
    }
    fn endpoints<A: Msg, B: Msg>() -> Option<Endpoints<A, B>> {
        Some(endpoints().expect("SEQPACKET socketpair"))
    }
}

struct Dgram;
impl Flavor for Dgram {
    const CAPS: Caps = Caps {
        eof_on_drop: false,
        ..SOCKET
    };
    fn channel<T: Msg>() -> (Sender<T>, Receiver<T>) {
        let config = Config::new().datagram(true);
        config.channel().expect("DGRAM socketpair")
    }
    fn endpoints<A: Msg, B: Msg>() -> Option<Endpoints<A, B>> {
        let config = Config::new().datagram(true);
        Some(config.endpoints().expect("DGRAM socketpair"))
    }
}

/// SEQPACKET through `Box<dyn FrameTransport>`: the path of other transports.
struct BoxedSeqPacket;
impl Flavor for BoxedSeqPacket {
    const CAPS: Caps = SOCKET;
    fn channel<T: Msg>() -> (Sender<T>, Receiver<T>) {
        let (a, b) = SeqPacketSocket::pair().expect("SEQPACKET socketpair");
        let (a, b): (Box<dyn FrameTransport>, Box<dyn FrameTransport>) = (Box::new(a), Box::new(b));
        let config = Config::new();
        (
            Sender::with_transport(a, config),
            Receiver::with_transport(b, config),
        )
    }
    fn endpoints<A: Msg, B: Msg>() -> Option<Endpoints<A, B>> {
        let (a, b) = SeqPacketSocket::pair().expect("SEQPACKET socketpair");
        let config = Config::new();
        Some((
            Endpoint::with_transport(Box::new(a), config),
            Endpoint::with_transport(Box::new(b), config),
        ))
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Item {
    seq: u64,
    name: String,
    values: Vec<u32>,
    flag: Option<bool>,
}

fn item(seq: u64) -> Item {
    Item {
        seq,
        name: format!("item-{seq}"),
        values: (0..(seq % 7) as u32).collect(),
        flag: (!seq.is_multiple_of(3)).then_some(seq.is_multiple_of(2)),
    }
}

/// A sequence number and 1 KiB of payload, to fill a channel fast.
type Blob = (u64, Bytes);

fn blob(seq: u64) -> Blob {
    (seq, Bytes::from(vec![seq as u8; 1024]))
}

#[derive(Serialize, Deserialize, Debug)]
struct WithFile {
    tag: u32,
    file: Fd<File>,
}

/// A pipe's read end, and a value holding its write end as an `Fd<File>`.
fn with_file(tag: u32) -> (std::io::PipeReader, WithFile) {
    let (reader, writer) = std::io::pipe().expect("pipe");
    let file = Fd::new(File::from(OwnedFd::from(writer)));
    (reader, WithFile { tag, file })
}

/// Runs `f` on a thread and returns its result, failing if it takes longer
/// than [`HANG`] (for the calls that block without a timeout).
fn within<R: Send + 'static>(what: &str, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (done_tx, done_rx) = mpsc::channel();
    let worker = thread::spawn(move || drop(done_tx.send(f())));
    match done_rx.recv_timeout(HANG) {
        Ok(r) => r,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: still blocked after {HANG:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the worker sends before it returns"),
        },
    }
}

/// Reads `reader` to end of file; fails if no EOF comes within [`HANG`]
/// (some copy of the write end is still open).
fn read_to_eof(mut reader: std::io::PipeReader) -> String {
    let deadline = Instant::now() + HANG;
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        assert!(Instant::now() < deadline, "no EOF: a write end is open");
        let mut fds = [PollFd::new(reader.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(100u16)).expect("poll") == 0 {
            continue;
        }
        match reader.read(&mut buf).expect("read the pipe") {
            0 => return String::from_utf8(out).expect("utf-8"),
            n => out.extend_from_slice(&buf[..n]),
        }
    }
}

fn ordering<F: Flavor>() {
    let (tx, rx) = F::channel::<Item>();
    let producer = thread::spawn(move || {
        for seq in 0..1000 {
            tx.send(item(seq)).expect("send");
        }
    });
    for seq in 0..1000 {
        let got = rx.recv_timeout(HANG).expect("recv");
        assert_eq!(got, item(seq), "value {seq} out of order or corrupted");
    }
    producer.join().expect("producer panicked");
}

fn many_senders<F: Flavor>() {
    const SENDERS: usize = 4;
    const PER: u64 = 250;
    let (tx, rx) = F::channel::<(usize, u64)>();
    let producers: Vec<_> = (0..SENDERS)
        .map(|id| {
            let tx = tx.clone();
            thread::spawn(move || {
                for seq in 0..PER {
                    tx.send((id, seq)).expect("send");
                }
            })
        })
        .collect();
    drop(tx);
    let mut next = [0u64; SENDERS];
    for _ in 0..SENDERS as u64 * PER {
        let (id, seq) = rx.recv_timeout(HANG).expect("recv");
        assert!(id < SENDERS, "unknown sender {id}");
        assert_eq!(seq, next[id], "sender {id}: out of order");
        next[id] += 1;
    }
    assert_eq!(next, [PER; SENDERS], "not every value arrived");
    for p in producers {
        p.join().expect("producer panicked");
    }
}

fn try_recv_empty<F: Flavor>() {
    let (_tx, rx) = F::channel::<u64>();
    assert_matches!(rx.try_recv(), Err(TryRecvError::Empty), "try_recv on empty");
}

fn recv_timeout_empty<F: Flavor>() {
    let (_tx, rx) = F::channel::<u64>();
    for timeout in [Duration::from_millis(1), SHORT] {
        let start = Instant::now();
        let got = rx.recv_timeout(timeout);
        let elapsed = start.elapsed();
        assert_matches!(got, Err(RecvTimeoutError::Timeout), "recv_timeout");
        assert!(elapsed >= timeout, "early: {elapsed:?} < {timeout:?}");
        assert!(elapsed < HANG, "hung: {elapsed:?}");
    }
}

fn recv_deadline_past<F: Flavor>() {
    let (tx, rx) = F::channel::<u64>();
    let past = Instant::now();
    let got = rx.recv_deadline(past);
    assert_matches!(got, Err(RecvTimeoutError::Timeout), "empty");
    tx.send(7).expect("send");
    assert_matches!(rx.recv_deadline(past), Ok(7), "queued, past deadline");
}

fn full_channel<F: Flavor>() {
    const MAX_FILL: u64 = 100_000;
    let (tx, rx) = F::channel::<Blob>();
    let mut sent = 0;
    let refused = loop {
        assert!(sent < MAX_FILL, "not full after {MAX_FILL} values");
        match tx.try_send(blob(sent)) {
            Ok(()) => sent += 1,
            Err(TrySendError::Full(v)) => break v,
            Err(e) => panic!("try_send {sent}: {e:?}"),
        }
    };
    assert!(sent > 0, "full before the first value");
    assert_eq!(refused, blob(sent), "Full handed back a different value");

    let timeout = Duration::from_millis(20);
    let start = Instant::now();
    match tx.send_timeout(blob(sent), timeout) {
        Err(SendTimeoutError::Timeout(v)) => assert_eq!(v, blob(sent), "Timeout value"),
        other => panic!("send_timeout on a full channel: {other:?}"),
    }
    let elapsed = start.elapsed();
    assert!(elapsed >= timeout, "early: {elapsed:?} < {timeout:?}");
    assert!(elapsed < HANG, "hung: {elapsed:?}");

    for seq in 0..sent {
        let got = rx.recv_timeout(HANG).expect("drain");
        assert_eq!(got, blob(seq), "drained value {seq}");
    }
    assert_matches!(rx.try_recv(), Err(TryRecvError::Empty), "drained");
    tx.try_send(blob(sent)).expect("room again after draining");
    assert_eq!(rx.recv_timeout(HANG).expect("recv after drain"), blob(sent));
}

fn disconnect_after_drain<F: Flavor>() {
    let (tx, rx) = F::channel::<u64>();
    let clones: Vec<_> = (0..3).map(|_| tx.clone()).collect();
    for i in 0..10u64 {
        clones[i as usize % 3].send(i).expect("send");
    }
    drop(tx);
    drop(clones);
    if F::CAPS.eof_on_drop {
        let (rx, got, end) = within("recv after senders dropped", move || {
            let got: Vec<_> = (0..10).map(|_| rx.recv()).collect();
            let end = rx.recv();
            (rx, got, end)
        });
        for (i, r) in got.into_iter().enumerate() {
            assert_eq!(r.expect("a queued value before Disconnected"), i as u64);
        }
        assert_matches!(end, Err(RecvError::Disconnected), "after the queue");
        assert_matches!(rx.try_recv(), Err(TryRecvError::Disconnected), "try_recv");
        let got = rx.recv_timeout(HANG);
        assert_matches!(got, Err(RecvTimeoutError::Disconnected), "recv_timeout");
    } else {
        for i in 0..10 {
            assert_eq!(rx.recv_timeout(HANG).expect("queued value"), i);
        }
        let got = rx.recv_timeout(SHORT);
        assert_matches!(got, Err(RecvTimeoutError::Timeout), "no EOF expected");
    }
}

fn clone_keeps_connected<F: Flavor>() {
    let (tx, rx) = F::channel::<u64>();
    let kept = tx.clone();
    drop(tx);
    assert_matches!(rx.try_recv(), Err(TryRecvError::Empty), "a clone is alive");
    let got = rx.recv_timeout(SHORT);
    assert_matches!(got, Err(RecvTimeoutError::Timeout), "a clone is alive");
    thread::spawn(move || kept.send(42).expect("send through the clone"))
        .join()
        .expect("clone thread panicked");
    assert_eq!(rx.recv_timeout(HANG).expect("value from the clone"), 42);
    if F::CAPS.eof_on_drop {
        let got = rx.recv_timeout(HANG);
        assert_matches!(got, Err(RecvTimeoutError::Disconnected), "clone gone");
    }
}

fn receiver_dropped<F: Flavor>() {
    let (tx, rx) = F::channel::<Item>();
    for seq in 0..3 {
        tx.send(item(seq)).expect("send before the drop");
    }
    drop(rx);
    match tx.send(item(5)) {
        Err(SendError::Disconnected(v)) => assert_eq!(v, item(5), "send handed back"),
        other => panic!("send after the receiver dropped: {other:?}"),
    }
    match tx.try_send(item(6)) {
        Err(TrySendError::Disconnected(v)) => assert_eq!(v, item(6), "try_send handed back"),
        other => panic!("try_send after the receiver dropped: {other:?}"),
    }
    match tx.send_timeout(item(7), HANG) {
        Err(SendTimeoutError::Disconnected(v)) => assert_eq!(v, item(7), "send_timeout value"),
        other => panic!("send_timeout after the receiver dropped: {other:?}"),
    }
}

fn iter_until_disconnect<F: Flavor>() {
    const N: u64 = 100;
    let (tx, rx) = F::channel::<u64>();
    let producer = thread::spawn(move || (0..N).for_each(|i| tx.send(i).expect("send")));
    let eof = F::CAPS.eof_on_drop;
    let (rx, got) = within("iter()", move || {
        let it = rx.iter().map(|r| r.expect("iter item"));
        let got: Vec<u64> = if eof {
            it.collect()
        } else {
            it.take(N as usize).collect()
        };
        (rx, got)
    });
    assert_eq!(got, (0..N).collect::<Vec<_>>(), "iter() values");
    producer.join().expect("producer panicked");
    if !eof {
        let got = rx.recv_timeout(SHORT);
        assert_matches!(got, Err(RecvTimeoutError::Timeout), "no EOF expected");
    }
}

fn try_iter_queued<F: Flavor>() {
    let (tx, rx) = F::channel::<u64>();
    (0..5).for_each(|i| tx.send(i).expect("send"));
    let queued = |rx: &Receiver<u64>| -> Vec<u64> {
        let it = rx.try_iter().take(100);
        it.map(|r| r.expect("try_iter item")).collect()
    };
    assert_eq!(queued(&rx), [0, 1, 2, 3, 4], "try_iter() yields the queue");
    assert!(rx.try_iter().next().is_none(), "try_iter() when empty");
    tx.send(5).expect("send");
    drop(tx);
    assert_eq!(queued(&rx), [5], "try_iter() after the senders are gone");
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Request {
    Add(i64, i64),
    Concat(String, String),
    Quit,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Response {
    Sum(i64),
    Text(String),
}

fn endpoint_request_response<F: Flavor>() {
    let Some((client, server)) = F::endpoints::<Request, Response>() else {
        return eprintln!("skipped: this transport has no endpoints");
    };
    let server = thread::spawn(move || {
        let mut handled = 0;
        loop {
            let response = match server.recv_timeout(HANG) {
                Ok(Request::Add(a, b)) => Response::Sum(a + b),
                Ok(Request::Concat(a, b)) => Response::Text(a + &b),
                Ok(Request::Quit) | Err(RecvTimeoutError::Disconnected) => return handled,
                Err(e) => panic!("server recv: {e:?}"),
            };
            server.send(response).expect("server send");
            handled += 1;
        }
    });
    for i in 0..50 {
        client.send(Request::Add(i, 2 * i)).expect("client send");
        let response = client.recv_timeout(HANG).expect("response");
        assert_eq!(response, Response::Sum(3 * i));
    }
    let request = Request::Concat("cour".into(), "ier".into());
    client.send(request).expect("client send");
    let response = client.recv_timeout(HANG).expect("response");
    assert_eq!(response, Response::Text("courier".into()));
    if F::CAPS.eof_on_drop {
        drop(client); // the server must see Disconnected
    } else {
        client.send(Request::Quit).expect("client send");
    }
    let handled = server.join().expect("server panicked");
    assert_eq!(handled, 51, "requests handled");
}

fn endpoint_split<F: Flavor>() {
    const N: u64 = 200;
    let Some((client, server)) = F::endpoints::<u64, u64>() else {
        return eprintln!("skipped: this transport has no endpoints");
    };
    let (client_tx, client_rx) = client.split();
    let (server_tx, server_rx) = server.split();
    let echo = thread::spawn(move || {
        for _ in 0..N {
            let x = server_rx.recv_timeout(HANG).expect("server recv");
            server_tx.send(x * 2).expect("server send");
        }
    });
    let requests = thread::spawn(move || (0..N).for_each(|i| client_tx.send(i).expect("send")));
    for i in 0..N {
        assert_eq!(client_rx.recv_timeout(HANG).expect("response"), 2 * i);
    }
    requests.join().expect("request thread panicked");
    echo.join().expect("echo thread panicked");
}

fn fd_handed_back_open<F: Flavor>() {
    let (tx, rx) = F::channel::<WithFile>();
    drop(rx);
    let (reader, value) = with_file(9);
    let mut back = match tx.send(value) {
        Err(SendError::Disconnected(v)) => v,
        Err(SendError::Failed(v, ChannelError::FdsUnsupported { .. })) if !F::CAPS.carries_fds => v,
        other => panic!("send after the receiver dropped: {other:?}"),
    };
    assert_eq!(back.tag, 9, "handed back intact");
    let written = back.file.write_all(b"still open");
    written.expect("the handed-back fd must be usable");
    drop(back);
    assert_eq!(read_to_eof(reader), "still open", "via the handed-back fd");
}

fn fd_closed_in_sender<F: Flavor>() {
    if !F::CAPS.carries_fds {
        return eprintln!("skipped: this transport carries no fds");
    }
    let (tx, rx) = F::channel::<WithFile>();
    let (reader, value) = with_file(1);
    tx.send(value).expect("send an fd");
    let mut got = rx.recv_timeout(HANG).expect("recv the fd");
    assert_eq!(got.tag, 1);
    let written = got.file.write_all(b"via the receiver");
    written.expect("write through the received fd");
    drop(got);
    // EOF proves no copy of the write end survived in the sender (or anywhere).
    assert_eq!(read_to_eof(reader), "via the receiver");
}

macro_rules! conformance {
    ($module:ident: $flavor:ident) => {
        conformance!(@tests $module: $flavor; ordering, many_senders, try_recv_empty,
            recv_timeout_empty, recv_deadline_past, full_channel, disconnect_after_drain,
            clone_keeps_connected, receiver_dropped, iter_until_disconnect, try_iter_queued,
            endpoint_request_response, endpoint_split, fd_handed_back_open, fd_closed_in_sender);
    };
    (@tests $module:ident: $flavor:ident; $($test:ident),*) => {
        mod $module {
            $(#[test] fn $test() { super::$test::<super::$flavor>() })*
        }
    };
}

conformance!(seqpacket: SeqPacket);
conformance!(dgram: Dgram);
conformance!(boxed_seqpacket: BoxedSeqPacket);
