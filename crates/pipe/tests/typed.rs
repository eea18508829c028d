//! courier_channel's typed endpoints over `courier_pipe::pair()`: values
//! holding fds are refused and handed back whole (a pipe carries no fds),
//! an over-limit frame is `FrameError::TooLong` and the next value is fine,
//! and the handshake, limits and end of stream work as on sockets.

mod util;

use std::fs::File;
use std::io::{ErrorKind, IoSlice, Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::thread;
use std::time::Duration;

use courier_channel::{
    Bytes, ChannelError, Config, Endpoint, Fd, FrameError, RecvTimeoutError, SendError,
    TryRecvError,
};
use courier_pipe::pair;
use courier_transport::{FrameTransport, Wait};
use serde::{Deserialize, Serialize};
use util::{after_ms, queued, recv_soon};

#[derive(Serialize, Deserialize, Debug)]
struct WithFile {
    name: String,
    file: Fd<File>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Blob {
    id: u32,
    bytes: Bytes,
}

/// Two handshaken endpoints over a new pipe pair.
fn endpoints<A, B>(config: Config) -> (Endpoint<A, B>, Endpoint<B, A>)
where
    A: Serialize + serde::de::DeserializeOwned + Send + 'static,
    B: Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    let (a, b) = pair().unwrap();
    let other = thread::spawn(move || {
        Endpoint::<B, A>::handshake_transport(Box::new(b), config).expect("handshake b")
    });
    let ours = Endpoint::<A, B>::handshake_transport(Box::new(a), config).expect("handshake a");
    (ours, other.join().unwrap())
}

fn assert_open(file: &File) {
    nix::fcntl::fcntl(file.as_fd(), nix::fcntl::FcntlArg::F_GETFD).expect("the fd is closed");
}

#[test]
fn a_value_holding_an_fd_is_refused_and_handed_back_with_its_fd_open() {
    let (tx, rx) = endpoints::<WithFile, u8>(Config::new().protocol("fds", 1));
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(b"still mine").unwrap();
    let value = WithFile {
        name: "report".into(),
        file: Fd::new(file),
    };
    let back = match tx.send(value) {
        Err(SendError::Failed(v, ChannelError::FdsUnsupported { count })) => {
            assert_eq!(count, 1);
            v
        }
        other => panic!("expected Failed(_, FdsUnsupported), got {other:?}"),
    };
    assert_eq!(back.name, "report");
    let mut file = back.file.into_inner();
    assert_open(&file);
    file.seek(SeekFrom::Start(0)).unwrap();
    let mut text = String::new();
    file.read_to_string(&mut text).unwrap();
    assert_eq!(text, "still mine");

    // try_send and send_timeout refuse it the same way.
    let value = WithFile {
        name: "again".into(),
        file: Fd::new(file),
    };
    let value = match tx.try_send(value) {
        Err(courier_channel::TrySendError::Failed(
            v,
            ChannelError::FdsUnsupported { count: 1 },
        )) => v,
        other => panic!("try_send: expected FdsUnsupported, got {other:?}"),
    };
    let value = match tx.send_timeout(value, Duration::from_millis(100)) {
        Err(courier_channel::SendTimeoutError::Failed(
            v,
            ChannelError::FdsUnsupported { count: 1 },
        )) => v,
        other => panic!("send_timeout: expected FdsUnsupported, got {other:?}"),
    };
    assert_open(&value.file);
    // Nothing was sent: the peer has nothing queued.
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
}

#[test]
fn send_frame_with_fds_is_an_error_and_writes_nothing() {
    let (a, b) = pair().unwrap();
    assert!(!a.supports_fds());
    let file = tempfile::tempfile().unwrap();
    for wait in [Wait::Block, Wait::Never, after_ms(100)] {
        let err = a
            .send_frame(&[IoSlice::new(b"with an fd")], &[file.as_fd()], wait)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{wait:?}: {err}");
    }
    assert_eq!(queued(b.readable_fd()), 0, "bytes were written");
    assert_open(&file);
    // The transport is still usable.
    util::send(&a, b"without", Wait::Block).unwrap();
    assert_eq!(recv_soon(&b, 1024), b"without");
}

/// The receiver's limit is lower than what the sender (without handshake,
/// so it does not know) sends: the frame is skipped as TooLong and the
/// channel goes on.
#[test]
fn an_over_limit_frame_is_too_long_and_the_next_value_arrives() {
    let (a, b) = pair().unwrap();
    let tx = Endpoint::<Blob, Blob>::with_transport(Box::new(a), Config::new());
    let rx = Endpoint::<Blob, Blob>::with_transport(Box::new(b), Config::new().limit(1000));
    let big = Blob {
        id: 1,
        bytes: Bytes(vec![7; 5000]),
    };
    let small = Blob {
        id: 2,
        bytes: Bytes(vec![8; 10]),
    };
    tx.send(big).unwrap();
    tx.send(small.clone()).unwrap();
    match rx.recv_timeout(util::SOON) {
        Err(RecvTimeoutError::Failed(ChannelError::Frame(FrameError::TooLong { len, max }))) => {
            assert!(len > 5000, "len {len}");
            assert_eq!(max, courier_channel::HEADER_LEN + 1000);
        }
        other => panic!("expected TooLong, got {other:?}"),
    }
    assert_eq!(rx.recv_timeout(util::SOON).unwrap(), small);
}

/// With a handshake the sender learns the peer's limit and refuses the
/// value itself, handing it back.
#[test]
fn after_a_handshake_the_sender_refuses_what_the_peer_would_not_take() {
    let (a, b) = pair().unwrap();
    let peer = thread::spawn(move || {
        Endpoint::<Blob, Blob>::handshake_transport(Box::new(b), Config::new().limit(1000)).unwrap()
    });
    let tx = Endpoint::<Blob, Blob>::handshake_transport(Box::new(a), Config::new()).unwrap();
    let rx = peer.join().unwrap();
    match tx.send(Blob {
        id: 1,
        bytes: Bytes(vec![7; 5000]),
    }) {
        Err(SendError::Failed(v, ChannelError::TooLarge { limit, .. })) => {
            assert_eq!(limit, 1000);
            assert_eq!(v.bytes.len(), 5000);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let small = Blob {
        id: 2,
        bytes: Bytes(vec![1; 999 - 8]),
    };
    tx.send(small.clone()).unwrap();
    assert_eq!(rx.recv_timeout(util::SOON).unwrap(), small);
}

/// Values well above the socket inline threshold travel inline over a
/// pipe (no memfd), both ways; when the peer's endpoint is dropped, recv
/// is Disconnected and send is Disconnected.
#[test]
fn large_values_both_ways_then_disconnected() {
    let (a, b) = endpoints::<Blob, Blob>(Config::new().protocol("large", 3));
    let sizes = [0usize, 1, 70_000, 1 << 20, 5 << 20];
    let echo = thread::spawn(move || {
        for _ in 0..sizes.len() {
            let v = b.recv_timeout(util::SOON).expect("a value");
            b.send(Blob {
                id: v.id + 1000,
                bytes: Bytes(v.bytes.iter().rev().copied().collect()),
            })
            .unwrap();
        }
        // b dropped here: both its pipe ends close.
    });
    for (i, &n) in sizes.iter().enumerate() {
        let bytes = util::pattern(i as u64, n);
        a.send(Blob {
            id: i as u32,
            bytes: Bytes(bytes.clone()),
        })
        .unwrap();
        let back = a.recv_timeout(util::SOON).unwrap();
        assert_eq!(back.id, i as u32 + 1000);
        assert!(back.bytes.iter().rev().eq(bytes.iter()), "value {i}");
    }
    echo.join().unwrap();
    assert!(matches!(
        a.recv_timeout(util::SOON),
        Err(RecvTimeoutError::Disconnected)
    ));
    assert!(matches!(
        a.send(Blob {
            id: 9,
            bytes: Bytes(vec![])
        }),
        Err(SendError::Disconnected(_))
    ));
}

/// `Receiver::recv` promises `Disconnected` "once every sender is gone":
/// the peer's only sender is dropped (its endpoint split, the receiver
/// half kept, so the transport lives on): the queued value arrives, then
/// the peer's receive ends instead of waiting.
#[test]
fn dropping_the_last_sender_of_a_split_endpoint_disconnects_the_peer() {
    let (a, b) = endpoints::<u64, u64>(Config::new());
    let (b_tx, b_rx) = b.split();
    b_tx.send(1).unwrap();
    drop(b_tx);
    assert_eq!(a.recv_timeout(util::SOON).unwrap(), 1);
    match a.recv_timeout(Duration::from_secs(2)) {
        Err(RecvTimeoutError::Disconnected) => {}
        other => panic!("every sender of the peer is gone; expected Disconnected, got {other:?}"),
    }
    // The other direction still works.
    a.send(2).unwrap();
    assert_eq!(b_rx.recv_timeout(util::SOON).unwrap(), 2);
}

/// Dropping a receiver makes the peer's sends fail with `Disconnected` at
/// once: the peer's only receiver is dropped (split, the sender half
/// kept), and the sender half still works the other way.
#[test]
fn dropping_the_receiver_of_a_split_endpoint_disconnects_the_peers_sends() {
    let (a, b) = endpoints::<u64, u64>(Config::new());
    let (b_tx, b_rx) = b.split();
    drop(b_rx);
    match a.send_timeout(7, Duration::from_millis(200)) {
        Err(courier_channel::SendTimeoutError::Disconnected(7)) => {}
        other => panic!("the peer's only receiver is gone; expected Disconnected, got {other:?}"),
    }
    b_tx.send(8).unwrap();
    assert_eq!(a.recv_timeout(util::SOON).unwrap(), 8);
}

#[test]
fn typed_try_recv_and_recv_timeout_on_an_empty_pipe() {
    let (a, _b) = endpoints::<u64, u64>(Config::new());
    assert!(matches!(a.try_recv(), Err(TryRecvError::Empty)));
    let start = std::time::Instant::now();
    assert!(matches!(
        a.recv_timeout(Duration::from_millis(100)),
        Err(RecvTimeoutError::Timeout)
    ));
    assert!(start.elapsed() >= Duration::from_millis(100));
}
