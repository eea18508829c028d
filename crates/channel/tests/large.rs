//! Large values: `Bytes` of 1 MiB and 64 MiB cross a channel between two
//! threads intact; values at and just above the inline threshold round-trip
//! (inline and in a sealed memfd respectively); a large value carrying fds
//! arrives with working fds; the sender's limit refuses oversized values and
//! hands them back intact; a receiver with a smaller limit than its sender
//! refuses the frame and stays usable. Every test holds the fd lock (which
//! also keeps two big payloads from being in memory at once) and checks
//! that no fd is left behind.

mod common;

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::mpsc;
use std::time::Duration;

use common::{with_fd_baseline, RECV_TIMEOUT};
use courier_channel::{
    Bytes, ChannelError, Config, Fd, FrameError, Receiver, RecvTimeoutError, SendError, Sender,
    TryRecvError,
};
use courier_transport::{FrameTransport, SeqPacketSocket, Wait, MAX_FDS};
use serde::{Deserialize, Serialize};

const MIB: usize = 1 << 20;
/// Waits for values of tens of MiB (unoptimised builds copy them slowly).
const LARGE_TIMEOUT: Duration = Duration::from_secs(30);

/// A position-dependent byte: a shifted, repeated or zeroed page shows up.
fn pattern_byte(i: usize) -> u8 {
    ((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(pattern_byte).collect()
}

/// postcard's encoded length of a `Bytes` of `n`: a varint, then the bytes.
fn encoded_len(n: usize) -> usize {
    let mut prefix = 1;
    while n >> (7 * prefix) != 0 {
        prefix += 1;
    }
    n + prefix
}

fn assert_pattern(got: &[u8], len: usize, what: &str) {
    assert_eq!(got.len(), len, "{what}: wrong length");
    if let Some(at) = (0..len).find(|&i| got[i] != pattern_byte(i)) {
        panic!(
            "{what}: byte {at} is {:#04x}, expected {:#04x}",
            got[at],
            pattern_byte(at)
        );
    }
}

/// Sends a patterned `Bytes` of `len` from another thread and checks it.
fn across_threads(len: usize) {
    let what = format!("{len}-byte Bytes");
    let (tx, rx) = courier_channel::channel::<Bytes>().expect("channel");
    let (done_tx, done_rx) = mpsc::channel();
    let sender = std::thread::spawn(move || {
        let sent = tx.send(Bytes::from(pattern(len)));
        let _ = done_tx.send(sent.map_err(|e| format!("{e:?}")));
    });
    let got = rx.recv_timeout(LARGE_TIMEOUT);
    let sent = done_rx
        .recv_timeout(LARGE_TIMEOUT)
        .expect("sender thread finished");
    sender.join().expect("sender thread panicked");
    sent.unwrap_or_else(|e| panic!("{what}: send failed: {e}"));
    let got = got.unwrap_or_else(|e| panic!("{what}: receive failed: {e:?}"));
    assert_pattern(&got, len, &what);
}

#[test]
fn one_mib_arrives_intact_across_threads() {
    with_fd_baseline("1 MiB", || across_threads(MIB));
}

#[test]
fn sixty_four_mib_arrive_intact_across_threads() {
    with_fd_baseline("64 MiB", || across_threads(64 * MIB));
}

#[test]
fn three_hundred_mib_are_refused_by_the_default_limit_and_handed_back() {
    with_fd_baseline("300 MiB", || {
        let (tx, rx) = courier_channel::channel::<Bytes>().expect("channel");
        let len = 300 * MIB;
        let mut v = vec![0u8; len];
        let marks = [(0, 0xa1), (len / 2, 0xb2), (len - 1, 0xc3)];
        for (at, mark) in marks {
            v[at] = mark;
        }
        let back = match tx.send(Bytes::from(v)) {
            Err(SendError::Failed(back, ChannelError::TooLarge { size, limit })) => {
                assert_eq!(limit, Config::DEFAULT_LIMIT, "limit reported");
                assert_eq!(size, encoded_len(len), "size reported");
                back
            }
            Err(other) => panic!("expected Failed(TooLarge), got {other:?}"),
            Ok(()) => panic!("a 300 MiB value was sent past the 256 MiB limit"),
        };
        assert_eq!(back.len(), len, "the value came back with another length");
        for (at, mark) in marks {
            assert_eq!(back[at], mark, "byte {at} of the returned value changed");
        }
        drop(back);
        assert!(
            matches!(rx.try_recv(), Err(TryRecvError::Empty)),
            "something arrived after a refused send"
        );
        tx.send(Bytes::from(&b"after"[..])).expect("small send");
        let got = rx.recv_timeout(RECV_TIMEOUT).expect("small value");
        assert_eq!(&got[..], b"after");
    });
}

/// Sends `value` through a sender to a raw socket and returns the frame's
/// header kind byte and fd count.
fn wire_kind(value: &Bytes) -> (u8, usize) {
    let (a, b) = SeqPacketSocket::pair().expect("socketpair");
    let tx = Sender::<Bytes>::from_socket(a, Config::new());
    tx.send(value.clone()).expect("send to raw peer");
    let mut buf = Vec::new();
    let mut fds = Vec::new();
    let max = courier_channel::MAX_INLINE_FRAME;
    let len = b
        .recv_frame(
            &mut buf,
            max,
            &mut fds,
            MAX_FDS,
            Wait::timeout(RECV_TIMEOUT),
        )
        .expect("raw receive")
        .expect("a frame, not end of stream");
    assert!(len >= courier_channel::HEADER_LEN, "frame of {len} bytes");
    (buf[3], fds.len())
}

#[test]
fn values_at_and_just_above_the_inline_threshold_round_trip() {
    with_fd_baseline("inline threshold", || {
        let threshold = Config::DEFAULT_INLINE_THRESHOLD;
        // Above the threshold the body goes into the sender's shared ring;
        // its first frame carries the ring's memfd.
        for (body_len, kind, fds) in [(threshold, 0, 0), (threshold + 1, 2, 1)] {
            // A Bytes of n encodes as a 3-byte varint and n bytes here.
            let value = Bytes::from(pattern(body_len - 3));
            let encoded = postcard::to_allocvec(&value).expect("encode").len();
            assert_eq!(encoded, body_len, "test setup: encoded length");
            assert_eq!(
                encoded_len(body_len - 3),
                body_len,
                "test setup: encoded_len"
            );
            assert_eq!(
                wire_kind(&value),
                (kind, fds),
                "a {body_len}-byte body travelled with the wrong kind or fd count"
            );
            let (tx, rx) = courier_channel::channel::<Bytes>().expect("channel");
            tx.send(value).expect("send");
            let got = rx.recv_timeout(RECV_TIMEOUT).expect("receive");
            assert_pattern(&got, body_len - 3, &format!("{body_len}-byte body"));
        }
    });
}

#[derive(Serialize, Deserialize, Debug)]
struct Bundle {
    data: Bytes,
    a: Fd<File>,
    b: Fd<File>,
    c: Fd<File>,
}

#[test]
fn a_large_value_with_fds_arrives_with_working_fds() {
    with_fd_baseline("large value with fds", || {
        let mut files = Vec::new();
        for name in ["first", "second", "third"] {
            let mut f = tempfile::tempfile().expect("temp file");
            f.write_all(name.as_bytes()).expect("write temp file");
            files.push(f);
        }
        let mut files = files.into_iter().map(Fd::new);
        let mut next = || files.next().expect("three files");
        let bundle = Bundle {
            data: Bytes::from(pattern(MIB)),
            a: next(),
            b: next(),
            c: next(),
        };
        let (tx, rx) = courier_channel::channel::<Bundle>().expect("channel");
        let (done_tx, done_rx) = mpsc::channel();
        let sender = std::thread::spawn(move || {
            let sent = tx.send(bundle).map_err(|e| format!("{e:?}"));
            let _ = done_tx.send(sent);
        });
        let got = rx.recv_timeout(LARGE_TIMEOUT);
        let sent = done_rx
            .recv_timeout(LARGE_TIMEOUT)
            .expect("sender finished");
        sender.join().expect("sender thread panicked");
        sent.expect("send");
        let got = got.expect("receive the bundle");
        assert_pattern(&got.data, MIB, "bundle data");
        for (fd, name) in [(&got.a, "first"), (&got.b, "second"), (&got.c, "third")] {
            let mut buf = vec![0; name.len()];
            fd.read_exact_at(&mut buf, 0).expect("read a received fd");
            assert_eq!(buf, name.as_bytes(), "fd {name} points at the wrong file");
            fd.write_all_at(b"!", 100)
                .expect("write through a received fd");
            let size = fd.metadata().expect("fstat").len();
            assert_eq!(size, 101, "write through fd {name} did not land");
        }
    });
}

#[test]
fn a_sender_limit_of_1_mib_refuses_2_mib() {
    with_fd_baseline("sender limit", || {
        let config = Config::new().limit(MIB);
        let (tx, rx) = config.channel::<Bytes>().expect("channel");
        let value = Bytes::from(pattern(2 * MIB));
        match tx.send(value) {
            Err(SendError::Failed(back, ChannelError::TooLarge { size, limit })) => {
                assert_eq!(limit, MIB, "limit reported");
                assert_eq!(size, encoded_len(2 * MIB), "size reported");
                assert_pattern(&back, 2 * MIB, "returned value");
            }
            Err(other) => panic!("expected Failed(TooLarge), got {other:?}"),
            Ok(()) => panic!("a 2 MiB value was sent past a 1 MiB limit"),
        }
        tx.send(Bytes::from(pattern(MIB - 3)))
            .expect("a value at the limit");
        let got = rx
            .recv_timeout(LARGE_TIMEOUT)
            .expect("receive at the limit");
        assert_pattern(&got, MIB - 3, "value at the limit");
    });
}

#[test]
fn a_receiver_with_a_smaller_limit_refuses_the_frame_and_stays_usable() {
    with_fd_baseline("receiver limit", || {
        let (a, b) = SeqPacketSocket::pair().expect("socketpair");
        // A sender without a ring: every large value in a memfd of its own,
        // so that the fd table must come back exactly.
        let tx = Sender::<Bytes>::from_socket(a, Config::new().shared_ring(0));
        let rx = Receiver::<Bytes>::from_socket(b, Config::new().limit(MIB));
        let before = common::fd_table();
        for len in [2 * MIB, 64 * MIB] {
            tx.send(Bytes::from(vec![7; len]))
                .expect("the sender's limit allows it");
            match rx.recv_timeout(LARGE_TIMEOUT) {
                Err(RecvTimeoutError::Failed(ChannelError::Frame(e))) => assert_eq!(
                    e,
                    FrameError::TooLarge {
                        size: encoded_len(len) as u64,
                        limit: MIB
                    }
                ),
                other => panic!("{len} bytes past a 1 MiB receiver: got {other:?}"),
            }
            common::assert_fds_back(&before, "the refused frame's memfd");
        }
        // Through the sender's shared ring: the frame that carries the
        // ring's memfd is refused and the receiver closes its copy; only the
        // sender's own ring fd stays open.
        let (e, f) = SeqPacketSocket::pair().expect("socketpair");
        let tx_ring = Sender::<Bytes>::from_socket(e, Config::new());
        let rx_ring = Receiver::<Bytes>::from_socket(f, Config::new().limit(MIB));
        let rings = || {
            common::fd_table()
                .values()
                .filter(|p| p.to_string_lossy().contains("courier-ring"))
                .count()
        };
        tx_ring
            .send(Bytes::from(vec![7; 2 * MIB]))
            .expect("ring send");
        match rx_ring.recv_timeout(LARGE_TIMEOUT) {
            Err(RecvTimeoutError::Failed(ChannelError::Frame(FrameError::TooLarge {
                limit: MIB,
                ..
            }))) => {}
            other => panic!("2 MiB through a ring past a 1 MiB receiver: got {other:?}"),
        }
        assert_eq!(rings(), 1, "the receiver kept a refused ring fd");
        tx_ring
            .send(Bytes::from(vec![8; MIB / 2]))
            .expect("ring send");
        let got = rx_ring.recv_timeout(LARGE_TIMEOUT).expect("the next value");
        assert_eq!((got.len(), got[0]), (MIB / 2, 8));
        assert_eq!(rings(), 2, "the receiver maps the ring once, with one fd");
        drop((tx_ring, rx_ring));
        // An inline frame above a smaller receiver's limit is refused too.
        let (c, d) = SeqPacketSocket::pair().expect("socketpair");
        let tx_inline = Sender::<Bytes>::from_socket(c, Config::new());
        let rx_inline = Receiver::<Bytes>::from_socket(d, Config::new().limit(1000));
        tx_inline
            .send(Bytes::from(vec![1; 2000]))
            .expect("inline send");
        match rx_inline.recv_timeout(RECV_TIMEOUT) {
            Err(RecvTimeoutError::Failed(ChannelError::Frame(e))) => {
                assert_eq!(
                    e,
                    FrameError::TooLarge {
                        size: 2002,
                        limit: 1000
                    }
                )
            }
            other => panic!("2000 inline bytes past a 1000-byte receiver: got {other:?}"),
        }
        tx_inline
            .send(Bytes::from(vec![2; 900]))
            .expect("inline send");
        let got = rx_inline
            .recv_timeout(RECV_TIMEOUT)
            .expect("usable after refusal");
        assert_eq!(got.0, vec![2; 900], "value after the refused inline frame");
        tx.send(Bytes::from(pattern(MIB - 3)))
            .expect("a value at the limit");
        let got = rx
            .recv_timeout(LARGE_TIMEOUT)
            .expect("the channel stays usable");
        assert_pattern(&got, MIB - 3, "value after the refused frames");
    });
}
