//! Property tests (proptest) of courier-channel, bounded for CI: a fixed
//! seed and a modest number of cases per property (`PROPTEST_CASES` and
//! `PROPTEST_RNG_SEED` override them), each printed as a
//! `properties: test=... cases=... seed=... elapsed=...` line.
//!
//! * Any value of a rich type (numbers of every width, floats, chars,
//!   strings, byte blocks up to 200 KiB, sequences, maps, options, tuples,
//!   enums of every variant kind, recursion) round-trips unchanged over a
//!   socketpair, whatever the inline threshold, the ring cap and the
//!   socket type (SEQPACKET or DGRAM), and so does a value carrying fds
//!   (memfds, a pipe, any fd, a channel end): each arrives open on the
//!   same file, the channel end works, and nothing stays open afterwards.
//! * Arbitrary frames (random bytes, or headers whose every field may lie,
//!   with bodies that are random or valid encodings with random fd
//!   indices) with arbitrary fds of six kinds give a value or a typed
//!   refusal, never a panic; the receiver takes the next valid frame; the
//!   fd table is back to its baseline after each case.
//! * A valid frame cut short anywhere (the frame itself, or its body under
//!   an honest header) is refused with a typed error, never decoded, and
//!   its fds are closed.
//!
//! The fuzz targets in `fuzz/` (nightly) explore the same surfaces without
//! a case budget.

mod common;
#[path = "shared/proptest_run.rs"]
mod proptest_run;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{IoSlice, PipeReader, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;

use common::{
    assert_fds_back, body_of, devnull, fd_lock, fd_table, inline_frame, memfd, sealed_memfd,
    send_empty, send_raw, Fuzzed, RawHeader, Shape as RawShape, RECV_TIMEOUT,
};
use courier_channel::{
    channel, Bytes, ChannelError, Config, Fd, FrameError, Receiver, RecvTimeoutError, Sender,
    HEADER_LEN, WIRE_VERSION,
};
use courier_transport::{SendMsg, SeqPacketSocket, Wait};
use nix::fcntl::SealFlag;
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde::{Deserialize, Serialize};

/// The seed used unless `PROPTEST_RNG_SEED` sets one.
const SEED: u64 = 0x636f_7572_6965_7201;

/// Runs property `name` over `strategy` with the fd lock held (every case
/// opens fds; several compare the fd table), and prints its figures.
fn check<S: Strategy>(
    name: &str,
    default_cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let _lock = fd_lock();
    proptest_run::run(
        name,
        proptest_run::config(default_cases, SEED),
        strategy,
        test,
    );
}

// ------------------------------------------------------------- the values

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
enum Shape {
    Unit,
    Newtype(i64),
    Tuple(u8, String),
    Struct { a: Option<u16>, b: Vec<bool> },
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Leaf {
    id: u32,
    label: Option<String>,
    wide: i128,
    ch: char,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
enum Tree {
    Leaf(u8),
    Node(Vec<Tree>),
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Rich {
    number: u64,
    small: i8,
    unsigned: u128,
    flag: bool,
    real: f64,
    single: f32,
    text: String,
    tags: Vec<String>,
    shapes: Vec<Shape>,
    map: BTreeMap<u16, Option<Leaf>>,
    blob: Bytes,
    pair: (u32, Option<Leaf>),
    tree: Tree,
    unit: (),
}

/// `len` bytes that depend on `seed` and on the position.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,16}"
}

fn leaf() -> impl Strategy<Value = Leaf> {
    (
        any::<u32>(),
        option::of(text()),
        any::<i128>(),
        any::<char>(),
    )
        .prop_map(|(id, label, wide, ch)| Leaf {
            id,
            label,
            wide,
            ch,
        })
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        Just(Shape::Unit),
        any::<i64>().prop_map(Shape::Newtype),
        (any::<u8>(), text()).prop_map(|(a, b)| Shape::Tuple(a, b)),
        (option::of(any::<u16>()), vec(any::<bool>(), 0..8))
            .prop_map(|(a, b)| Shape::Struct { a, b }),
    ]
}

fn tree() -> impl Strategy<Value = Tree> {
    any::<u8>()
        .prop_map(Tree::Leaf)
        .prop_recursive(6, 32, 4, |inner| vec(inner, 0..4).prop_map(Tree::Node))
}

/// Byte blocks: mostly small; with `large`, sometimes past the inline
/// threshold (64 KiB), so that the ring and memfds carry them.
fn blob(large: bool) -> BoxedStrategy<Bytes> {
    let small = vec(any::<u8>(), 0..64).prop_map(Bytes);
    if large {
        prop_oneof![
            6 => small,
            1 => (60_000usize..200_000, any::<u64>()).prop_map(|(n, s)| Bytes(pattern(s, n))),
        ]
        .boxed()
    } else {
        small.boxed()
    }
}

fn float() -> impl Strategy<Value = f64> {
    use proptest::num::f64 as f;
    // Every class but NaN, which is not equal to itself.
    f::POSITIVE | f::NEGATIVE | f::NORMAL | f::SUBNORMAL | f::ZERO | f::INFINITE
}

fn rich(large: bool) -> impl Strategy<Value = Rich> {
    let numbers = (
        any::<u64>(),
        any::<i8>(),
        any::<u128>(),
        any::<bool>(),
        float(),
        proptest::num::f32::NORMAL | proptest::num::f32::ZERO,
    );
    let rest = (
        text(),
        vec(text(), 0..4),
        vec(shape(), 0..4),
        btree_map(any::<u16>(), option::of(leaf()), 0..4),
        blob(large),
        (any::<u32>(), option::of(leaf())),
        tree(),
    );
    (numbers, rest).prop_map(
        |(
            (number, small, unsigned, flag, real, single),
            (text, tags, shapes, map, blob, pair, tree),
        )| Rich {
            number,
            small,
            unsigned,
            flag,
            real,
            single,
            text,
            tags,
            shapes,
            map,
            blob,
            pair,
            tree,
            unit: (),
        },
    )
}

/// Channel settings: the inline threshold (default, or small enough that
/// values of a few hundred bytes go through shared memory), the ring
/// (default, or off: one memfd per large value), SEQPACKET or DGRAM.
fn settings() -> impl Strategy<Value = Config> {
    (
        prop_oneof![Just(Config::DEFAULT_INLINE_THRESHOLD), 0usize..600],
        prop_oneof![Just(Config::DEFAULT_RING), Just(0)],
        any::<bool>(),
    )
        .prop_map(|(threshold, ring, dgram)| {
            Config::new()
                .inline_threshold(threshold)
                .shared_ring(ring)
                .datagram(dgram)
        })
}

// ------------------------------------------------------------ round trips

#[test]
fn any_value_round_trips_unchanged() {
    check(
        "round_trip",
        512,
        (rich(true), settings()),
        |(value, settings)| {
            let (tx, rx) = settings.channel::<Rich>().expect("channel");
            tx.send(value.clone()).expect("send");
            let got = rx.recv_timeout(RECV_TIMEOUT).expect("recv");
            prop_assert_eq!(got, value);
            Ok(())
        },
    );
}

/// A value with fds of several kinds.
#[derive(Serialize, Deserialize, Debug)]
struct WithFds {
    rich: Rich,
    files: Vec<Fd<File>>,
    pipe: Option<Fd<PipeReader>>,
    any: Option<Fd>,
    reply: Option<Sender<u32>>,
}

#[test]
fn any_value_with_fds_round_trips_and_leaks_nothing() {
    let shape = (rich(true), 0usize..6, any::<[bool; 3]>(), settings());
    check(
        "round_trip_fds",
        256,
        shape,
        |(rich, files, [pipe, any, reply], settings)| {
            let baseline = fd_table();
            {
                let (tx, rx) = settings.channel::<WithFds>().expect("channel");
                let contents: Vec<Vec<u8>> = (0..files)
                    .map(|i| format!("file {i}").into_bytes())
                    .collect();
                let pipe_r = pipe.then(|| {
                    let (r, mut w) = std::io::pipe().expect("pipe");
                    w.write_all(b"through the pipe").expect("write pipe");
                    r
                });
                let (reply_tx, reply_rx) = if reply {
                    let (t, r) = channel::<u32>().expect("reply channel");
                    (Some(t), Some(r))
                } else {
                    (None, None)
                };
                let value = WithFds {
                    rich: rich.clone(),
                    files: contents
                        .iter()
                        .map(|c| Fd::new(File::from(memfd(c, SealFlag::empty()))))
                        .collect(),
                    pipe: pipe_r.map(Fd::new),
                    any: any.then(|| Fd::new(OwnedFd::from(devnull()))),
                    reply: reply_tx,
                };
                tx.send(value).expect("send");
                let mut got = rx.recv_timeout(RECV_TIMEOUT).expect("recv");
                prop_assert_eq!(&got.rich, &rich);
                prop_assert_eq!(got.files.len(), contents.len());
                for (file, want) in got.files.iter_mut().zip(&contents) {
                    let mut read = Vec::new();
                    file.seek(SeekFrom::Start(0)).expect("seek");
                    file.read_to_end(&mut read).expect("read memfd");
                    prop_assert_eq!(&read, want);
                }
                prop_assert_eq!(got.pipe.is_some(), pipe);
                if let Some(mut p) = got.pipe.take() {
                    let mut read = String::new();
                    p.read_to_string(&mut read).expect("read pipe");
                    prop_assert_eq!(read, "through the pipe");
                }
                prop_assert_eq!(got.any.is_some(), any);
                if let Some(fd) = &got.any {
                    let file = File::from(fd.as_fd().try_clone_to_owned().expect("dup"));
                    let kind = file.metadata().expect("fstat").file_type();
                    prop_assert!(kind.is_char_device(), "the fd is not /dev/null");
                }
                prop_assert_eq!(got.reply.is_some(), reply);
                if let (Some(tx), Some(rx)) = (&got.reply, &reply_rx) {
                    tx.send(7).expect("send on the received channel end");
                    prop_assert_eq!(rx.recv_timeout(RECV_TIMEOUT).expect("reply"), 7);
                }
            }
            assert_fds_back(&baseline, "a value with fds, once dropped");
            Ok(())
        },
    );
}

// -------------------------------------------------------- hostile frames

/// The kinds of fd a hostile frame may carry, made fresh for each case.
struct Pool {
    fds: Vec<OwnedFd>,
    _keep: Vec<OwnedFd>,
}

/// The body in the pool's memfds: a valid `Fuzzed::Text`.
fn memfd_body() -> Vec<u8> {
    body_of(&RawShape::Text("in a memfd".into()))
}

impl Pool {
    const KINDS: usize = 6;

    fn new() -> Pool {
        let (pipe_r, pipe_w) = std::io::pipe().expect("pipe");
        let (sock, peer) = SeqPacketSocket::pair().expect("socketpair");
        Pool {
            fds: vec![
                devnull().into(),
                OwnedFd::from(pipe_r),
                OwnedFd::from(pipe_w),
                sealed_memfd(&memfd_body()),
                memfd(&memfd_body(), SealFlag::empty()),
                sock.into(),
            ],
            _keep: vec![peer.into()],
        }
    }

    fn get(&self, kind: u8) -> BorrowedFd<'_> {
        self.fds[usize::from(kind) % Self::KINDS].as_fd()
    }
}

/// A frame whose every field may lie.
#[derive(Debug, Clone)]
struct Hostile {
    magic: [u8; 2],
    version: u8,
    kind: u8,
    /// `None`: the number of fds attached.
    fd_count: Option<u16>,
    reserved: [u8; 2],
    /// `None`: the body's length (for a shared-memory header: the memfd's).
    body_len: Option<u64>,
    body: Vec<u8>,
    /// Cut the frame to this length.
    cut: Option<usize>,
}

/// A body for `Fuzzed`: random bytes, or a valid encoding whose fd fields
/// hold random indices.
fn hostile_body() -> impl Strategy<Value = Vec<u8>> {
    // (common's `Shape` is neither Clone nor Debug: each arm encodes.)
    let index = prop_oneof![3 => Just(0u32), 1 => 0u32..4];
    let valid = prop_oneof![
        Just(body_of(&RawShape::Empty)),
        any::<u64>().prop_map(|n| body_of(&RawShape::Number(n))),
        text().prop_map(|t| body_of(&RawShape::Text(t))),
        index.clone().prop_map(|i| body_of(&RawShape::File(i))),
        index.clone().prop_map(|i| body_of(&RawShape::Pipe(i))),
        (option::of(index), vec(any::<u16>(), 0..4))
            .prop_map(|(a, b)| body_of(&RawShape::Pair { a, b })),
    ];
    prop_oneof![valid, vec(any::<u8>(), 0..200)]
}

fn hostile() -> impl Strategy<Value = Hostile> {
    let header = (
        prop_oneof![9 => Just(*b"CR"), 1 => any::<[u8; 2]>()],
        prop_oneof![9 => Just(WIRE_VERSION), 1 => any::<u8>()],
        prop_oneof![6 => Just(0u8), 2 => Just(1), 2 => Just(2), 1 => any::<u8>()],
        prop_oneof![8 => Just(None), 2 => any::<u16>().prop_map(Some)],
        prop_oneof![9 => Just([0u8, 0]), 1 => any::<[u8; 2]>()],
        prop_oneof![7 => Just(None), 3 => any::<u64>().prop_map(Some)],
    );
    (
        header,
        hostile_body(),
        option::weighted(0.15, any::<prop::sample::Index>()),
    )
        .prop_map(
            |((magic, version, kind, fd_count, reserved, body_len), body, cut)| {
                let mut h = Hostile {
                    magic,
                    version,
                    kind,
                    fd_count,
                    reserved,
                    body_len,
                    body,
                    cut: None,
                };
                let len = h.bytes(0).len();
                h.cut = cut.map(|i| i.index(len + 1));
                h
            },
        )
}

impl Hostile {
    /// The frame, for a message carrying `fds` fds.
    fn bytes(&self, fds: usize) -> Vec<u8> {
        let shared = self.kind == 1;
        let user_fds = if shared { fds.saturating_sub(1) } else { fds };
        let honest_len = if shared {
            memfd_body().len()
        } else {
            self.body.len()
        };
        let header = RawHeader {
            magic: self.magic,
            version: self.version,
            kind: self.kind,
            fd_count: self.fd_count.unwrap_or(user_fds as u16),
            reserved: self.reserved,
            body_len: self.body_len.unwrap_or(honest_len as u64),
        };
        let mut frame = if shared {
            header.bytes().to_vec() // the body is in the memfd
        } else {
            header.frame(&self.body)
        };
        if let Some(cut) = self.cut {
            frame.truncate(cut);
        }
        frame
    }
}

/// Either a [`Hostile`] frame or plain random bytes, with fds of
/// random kinds (for a shared-memory header, mostly a good memfd last).
fn hostile_message() -> impl Strategy<Value = (Result<Hostile, Vec<u8>>, Vec<u8>)> {
    (
        prop_oneof![
            4 => hostile().prop_map(Ok),
            1 => vec(any::<u8>(), 0..300).prop_map(Err),
        ],
        prop_oneof![
            3 => Just(Vec::new()),
            2 => vec(any::<u8>(), 1..2),
            1 => vec(any::<u8>(), 0..6),
        ],
        any::<bool>(),
    )
        .prop_map(|(frame, mut kinds, good_memfd)| {
            if matches!(&frame, Ok(h) if h.kind == 1) && good_memfd {
                kinds.push(3); // the sealed memfd
            }
            (frame, kinds)
        })
}

#[test]
fn arbitrary_frames_give_values_or_typed_errors_and_leak_no_fd() {
    let mut outcomes = BTreeMap::<String, u32>::new();
    let outcomes = std::cell::RefCell::new(&mut outcomes);
    check(
        "hostile_frames",
        1024,
        hostile_message(),
        |(frame, kinds)| {
            let baseline = fd_table();
            {
                let pool = Pool::new();
                let (peer, sock) = SeqPacketSocket::pair().expect("socketpair");
                let rx = Receiver::<Fuzzed>::from_socket(sock, Config::new());
                let fds: Vec<BorrowedFd<'_>> = kinds.iter().map(|&k| pool.get(k)).collect();
                let bytes = match &frame {
                    Ok(h) => h.bytes(fds.len()),
                    Err(raw) => raw.clone(),
                };
                if bytes.is_empty() {
                    send_empty(&peer, &fds);
                } else {
                    send_raw(&peer, &bytes, &fds);
                }
                let outcome = match rx.recv_timeout(RECV_TIMEOUT) {
                    Ok(_) => "value".to_owned(),
                    Err(RecvTimeoutError::Failed(ChannelError::Frame(e))) => {
                        // "frame:" and the variant's name.
                        let name = format!("{e:?}");
                        let end = name.find([' ', '{', '(']).unwrap_or(name.len());
                        format!("frame:{}", &name[..end])
                    }
                    Err(RecvTimeoutError::Failed(ChannelError::Decode(_))) => "decode".to_owned(),
                    Err(RecvTimeoutError::Failed(ChannelError::Refused(_))) => "refused".to_owned(),
                    Err(e) => {
                        return Err(TestCaseError::fail(format!(
                            "not a value or a typed refusal: {e:?}"
                        )))
                    }
                };
                *outcomes.borrow_mut().entry(outcome).or_default() += 1;
                send_raw(&peer, &inline_frame(0, &body_of(&RawShape::Number(5))), &[]);
                match rx.recv_timeout(RECV_TIMEOUT) {
                    Ok(Fuzzed::Number(5)) => {}
                    other => {
                        return Err(TestCaseError::fail(format!(
                            "the receiver is not usable after the frame: {other:?}"
                        )))
                    }
                }
            }
            assert_fds_back(&baseline, "a hostile frame, once refused or dropped");
            Ok(())
        },
    );
    let outcomes = outcomes.into_inner();
    eprintln!("properties: test=hostile_frames outcomes={outcomes:?}");
    // A test that cannot fail is no test: with the default cases and seed,
    // every outcome must come up (fewer cases, or another seed, may miss
    // one).
    let default_run = ["PROPTEST_CASES", "PROPTEST_RNG_SEED"]
        .iter()
        .all(|v| std::env::var_os(v).is_none());
    for kind in ["value", "frame:", "decode", "refused"] {
        if !default_run {
            break;
        }
        assert!(
            outcomes.keys().any(|k| k.starts_with(kind)),
            "the hostile frames never gave a {kind}: {outcomes:?}"
        );
    }
}

// ------------------------------------------------------------ truncation

/// A value with fds, for truncation.
#[derive(Serialize, Deserialize, Debug)]
struct Carrier {
    rich: Rich,
    files: Vec<Fd<File>>,
}

/// The frame and fds a courier sender writes for `value`.
fn captured(value: Carrier) -> (Vec<u8>, Vec<OwnedFd>) {
    let (a, raw) = SeqPacketSocket::pair().expect("socketpair");
    let tx = Sender::<Carrier>::from_socket(a, Config::new());
    tx.send(value).expect("send");
    let mut buf = vec![0; courier_channel::MAX_INLINE_FRAME];
    let mut fds = Vec::new();
    let got = raw
        .recv_with_fds(&mut buf, &mut fds, 253)
        .expect("raw recv");
    buf.truncate(got.len);
    (buf, fds)
}

#[test]
fn a_valid_frame_cut_short_anywhere_is_refused_typed() {
    let shape = (
        rich(false),
        0usize..4,
        any::<prop::sample::Index>(),
        any::<bool>(),
    );
    check("truncation", 512, shape, |(rich, files, cut, honest)| {
        let baseline = fd_table();
        {
            let files = (0..files).map(|_| Fd::new(devnull())).collect();
            let (frame, fds) = captured(Carrier { rich, files });
            prop_assert_eq!(frame[3], 0, "an inline frame");
            let (peer, sock) = SeqPacketSocket::pair().expect("socketpair");
            let rx = Receiver::<Carrier>::from_socket(sock, Config::new());
            let fds: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
            let cut_frame = if honest {
                // The body cut short under a header that says so.
                let body = &frame[HEADER_LEN..];
                let body = &body[..cut.index(body.len())];
                let mut header = frame[..HEADER_LEN].to_vec();
                header[8..16].copy_from_slice(&(body.len() as u64).to_le_bytes());
                header.extend_from_slice(body);
                header
            } else {
                frame[..cut.index(frame.len())].to_vec()
            };
            if cut_frame.is_empty() {
                send_empty(&peer, &fds);
            } else {
                let bufs = [IoSlice::new(&cut_frame)];
                peer.send_msg(
                    &SendMsg::new(&bufs).with_fds(&fds),
                    Wait::timeout(RECV_TIMEOUT),
                )
                .expect("send the cut frame");
            }
            match rx.recv_timeout(RECV_TIMEOUT) {
                Err(RecvTimeoutError::Failed(ChannelError::Frame(
                    FrameError::TooShort { .. } | FrameError::BodyLengthMismatch { .. },
                ))) if !honest => {}
                Err(RecvTimeoutError::Failed(ChannelError::Frame(_) | ChannelError::Decode(_)))
                    if honest => {}
                other => {
                    return Err(TestCaseError::fail(format!(
                        "a frame of {} bytes cut to {} (honest header: {honest}) gave {other:?}",
                        frame.len(),
                        cut_frame.len()
                    )))
                }
            }
        }
        assert_fds_back(&baseline, "a cut frame, once refused");
        Ok(())
    });
}
