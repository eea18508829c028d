//! Property tests (proptest) of courier-pipe's framing, bounded for CI: a
//! fixed seed and a modest number of cases per property (`PROPTEST_CASES`
//! and `PROPTEST_RNG_SEED` override them), each printed as a
//! `properties: test=... cases=... seed=... elapsed=...` line.
//!
//! * A stream of frames (raw, or courier values written by a typed
//!   sender) written in chunks split at arbitrary points, with a
//!   non-waiting receive after every chunk, is read back identically:
//!   partial frames and length prefixes are kept across calls.
//! * An arbitrary stream (honest frames, lying length prefixes, loose
//!   bytes) is read exactly as a reference reader predicts by the
//!   transport, and as values or typed errors, then the end, by a typed
//!   receiver: never a panic, never a hang.
//! * The limit is respected: a frame above the maximum is reported (with
//!   its claimed length) and skipped, the frames around it arrive intact;
//!   a typed receiver with limit L takes exactly the values whose
//!   encoding fits in L.
//!
//! The `pipe_framing` fuzz target in `fuzz/` (nightly) checks the same
//! reference reading without a case budget, and the heap it takes.

#[path = "../../channel/tests/shared/proptest_run.rs"]
mod proptest_run;
mod util;

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::OwnedFd;

use courier_channel::{
    Bytes, ChannelError, Config, FrameError, Receiver, RecvTimeoutError, Sender, TryRecvError,
    HEADER_LEN,
};
use courier_pipe::{PipeTransport, PREFIX_LEN};
use courier_transport::{FrameTransport, TransportError, Wait};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde::{Deserialize, Serialize};
use util::{after_ms, fed_transport, raw_pipe, wire};

/// The seed used unless `PROPTEST_RNG_SEED` sets one.
const SEED: u64 = 0x636f_7572_6965_7202;

/// How long a receive may wait for bytes that were written before it.
const WAIT_MS: u64 = 5_000;

/// Runs property `name` over `strategy` and prints its figures.
fn check<S: Strategy>(
    name: &str,
    default_cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    proptest_run::run(
        name,
        proptest_run::config(default_cases, SEED),
        strategy,
        test,
    );
}

/// `stream` split at `cuts` (indices into it, in any order).
fn chunks<'a>(stream: &'a [u8], cuts: &[prop::sample::Index]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
    at.push(0);
    at.push(stream.len());
    at.sort_unstable();
    at.dedup();
    at.windows(2).map(|w| &stream[w[0]..w[1]]).collect()
}

// ------------------------------------------------------- chunked streams

#[test]
fn frames_written_in_arbitrary_chunks_are_read_identically() {
    let shape = (
        vec(vec(any::<u8>(), 0..3000), 0..16),
        vec(any::<prop::sample::Index>(), 0..24),
    );
    check("chunked_frames", 256, shape, |(frames, cuts)| {
        let stream: Vec<u8> = frames.iter().flat_map(|f| wire(f)).collect();
        let (t, mut w, _out) = fed_transport();
        let mut got = Vec::new();
        let mut buf = Vec::new();
        for chunk in chunks(&stream, &cuts) {
            w.write_all(chunk).expect("write a chunk");
            // Everything that is whole now, without waiting.
            loop {
                match t.recv_frame(&mut buf, usize::MAX, &mut Vec::new(), 0, Wait::Never) {
                    Ok(Some(len)) => got.push(buf[..len].to_vec()),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    other => {
                        return Err(TestCaseError::fail(format!(
                            "a non-waiting receive gave {other:?}"
                        )))
                    }
                }
            }
        }
        drop(w);
        loop {
            match t.recv_frame(&mut buf, usize::MAX, &mut Vec::new(), 0, after_ms(WAIT_MS)) {
                Ok(Some(len)) => got.push(buf[..len].to_vec()),
                Ok(None) => break,
                Err(e) => return Err(TestCaseError::fail(format!("at the end: {e}"))),
            }
        }
        prop_assert_eq!(got, frames);
        Ok(())
    });
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
enum Kind {
    Unit,
    Number(i64),
    Pair(u8, String),
    Fields { a: Option<u32>, b: Vec<bool> },
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Value {
    id: u64,
    name: String,
    list: Vec<u16>,
    maybe: Option<i32>,
    kind: Kind,
    blob: Bytes,
}

fn value() -> impl Strategy<Value = Value> {
    let kind = prop_oneof![
        Just(Kind::Unit),
        any::<i64>().prop_map(Kind::Number),
        (any::<u8>(), "\\PC{0,12}").prop_map(|(a, b)| Kind::Pair(a, b)),
        (option::of(any::<u32>()), vec(any::<bool>(), 0..6))
            .prop_map(|(a, b)| Kind::Fields { a, b }),
    ];
    (
        any::<u64>(),
        "\\PC{0,16}",
        vec(any::<u16>(), 0..8),
        option::of(any::<i32>()),
        kind,
        vec(any::<u8>(), 0..2000).prop_map(Bytes),
    )
        .prop_map(|(id, name, list, maybe, kind, blob)| Value {
            id,
            name,
            list,
            maybe,
            kind,
            blob,
        })
}

/// The bytes a typed sender with `config` writes for `values`.
fn written<T: Serialize + serde::de::DeserializeOwned>(values: &[T], config: Config) -> Vec<u8> {
    let (mut r, w) = raw_pipe();
    let (unused_r, _unused_w) = raw_pipe();
    let t = PipeTransport::new(OwnedFd::from(unused_r), OwnedFd::from(w)).expect("transport");
    let tx = Sender::<T>::with_transport(Box::new(t), config);
    for v in values {
        // A value above the sender's limit stays out of the stream.
        let _ = tx.send_ref(v);
    }
    drop(tx); // the write end closes: the stream ends
    let mut stream = Vec::new();
    r.read_to_end(&mut stream).expect("read the stream");
    stream
}

/// A typed receiver over a new pipe: (receiver, the pipe's write end).
fn typed_receiver<T: Serialize + serde::de::DeserializeOwned>(
    config: Config,
) -> (Receiver<T>, File) {
    let (r, w) = raw_pipe();
    let (_out_r, out_w) = raw_pipe();
    let t = PipeTransport::new(OwnedFd::from(r), OwnedFd::from(out_w)).expect("transport");
    (Receiver::with_transport(Box::new(t), config), w)
}

#[test]
fn values_written_in_arbitrary_chunks_decode_identically() {
    let shape = (
        vec(value(), 0..12),
        vec(any::<prop::sample::Index>(), 0..24),
    );
    check("chunked_values", 256, shape, |(values, cuts)| {
        let stream = written(&values, Config::new());
        let (rx, mut w) = typed_receiver::<Value>(Config::new());
        let mut got = Vec::new();
        for chunk in chunks(&stream, &cuts) {
            w.write_all(chunk).expect("write a chunk");
            loop {
                match rx.try_recv() {
                    Ok(v) => got.push(v),
                    Err(TryRecvError::Empty) => break,
                    Err(e) => return Err(TestCaseError::fail(format!("try_recv: {e:?}"))),
                }
            }
        }
        drop(w);
        loop {
            match rx.recv_timeout(std::time::Duration::from_millis(WAIT_MS)) {
                Ok(v) => got.push(v),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(e) => return Err(TestCaseError::fail(format!("at the end: {e:?}"))),
            }
        }
        prop_assert_eq!(got, values);
        Ok(())
    });
}

// ------------------------------------------------------ arbitrary streams

/// What one read of a stream gives.
#[derive(Debug, PartialEq, Eq)]
enum Item {
    Frame(Vec<u8>),
    TooLong(usize),
    Torn,
    End,
}

/// The reference reading of `stream` by a reader with maximum `max_len`
/// (see the framing section of the crate docs).
fn reference(stream: &[u8], max_len: usize) -> Vec<Item> {
    let mut items = Vec::new();
    let mut rest = stream;
    loop {
        if rest.is_empty() {
            items.push(Item::End);
            return items;
        }
        let Some((prefix, after)) = rest.split_first_chunk::<PREFIX_LEN>() else {
            items.extend([Item::Torn, Item::End]);
            return items;
        };
        let len = u32::from_le_bytes(*prefix) as usize;
        if len > max_len {
            items.push(Item::TooLong(len));
        }
        let Some((frame, after)) = after.split_at_checked(len) else {
            items.extend([Item::Torn, Item::End]);
            return items;
        };
        if len <= max_len {
            items.push(Item::Frame(frame.to_vec()));
        }
        rest = after;
    }
}

/// A stream of honest frames, lying length prefixes and loose bytes.
fn arbitrary_stream() -> impl Strategy<Value = Vec<u8>> {
    let segment = prop_oneof![
        4 => vec(any::<u8>(), 0..300).prop_map(|f| wire(&f)),
        1 => (any::<u32>(), vec(any::<u8>(), 0..64)).prop_map(|(claim, bytes)| {
            let mut s = claim.to_le_bytes().to_vec();
            s.extend_from_slice(&bytes);
            s
        }),
        1 => vec(any::<u8>(), 0..8),
    ];
    vec(segment, 0..12).prop_map(|s| s.concat())
}

/// Writes `stream` into a new pipe and closes it: the transport reading it.
fn fed(stream: &[u8]) -> PipeTransport {
    let (t, mut w, _out) = fed_transport();
    w.write_all(stream).expect("write the stream");
    t
}

#[test]
fn arbitrary_streams_are_read_as_the_reference_reads_them() {
    check(
        "arbitrary_streams_raw",
        512,
        (arbitrary_stream(), 0usize..400),
        |(stream, max_len)| {
            let t = fed(&stream);
            let mut buf = Vec::new();
            for (i, want) in reference(&stream, max_len).into_iter().enumerate() {
                let got = t.recv_frame(&mut buf, max_len, &mut Vec::new(), 0, after_ms(WAIT_MS));
                let got = match got {
                    Ok(Some(len)) => {
                        prop_assert!(len <= max_len, "a frame of {len} bytes over {max_len}");
                        Item::Frame(buf[..len].to_vec())
                    }
                    Ok(None) => Item::End,
                    Err(e) => match TransportError::of(&e) {
                        Some(&TransportError::Truncated { len, capacity, .. })
                            if capacity == max_len =>
                        {
                            Item::TooLong(len)
                        }
                        _ if e.kind() == ErrorKind::UnexpectedEof => Item::Torn,
                        _ => return Err(TestCaseError::fail(format!("read {i}: {e}"))),
                    },
                };
                prop_assert_eq!(got, want, "read {}", i);
            }
            Ok(())
        },
    );
}

#[test]
fn arbitrary_streams_give_values_or_typed_errors_then_the_end() {
    check(
        "arbitrary_streams_typed",
        512,
        (arbitrary_stream(), 0usize..400),
        |(stream, limit)| {
            let (rx, mut w) = typed_receiver::<Value>(Config::new().limit(limit));
            w.write_all(&stream).expect("write the stream");
            drop(w);
            let max_len = HEADER_LEN + limit;
            for (i, want) in reference(&stream, max_len).into_iter().enumerate() {
                let got = rx.recv_timeout(std::time::Duration::from_millis(WAIT_MS));
                let ok = match (&got, &want) {
                    (Ok(_), Item::Frame(_)) => true,
                    (
                        Err(RecvTimeoutError::Failed(
                            ChannelError::Frame(_) | ChannelError::Decode(_),
                        )),
                        Item::Frame(_),
                    ) => true,
                    (
                        Err(RecvTimeoutError::Failed(ChannelError::Frame(FrameError::TooLong {
                            len,
                            max,
                        }))),
                        Item::TooLong(want),
                    ) => len == want && *max == max_len,
                    (Err(RecvTimeoutError::Failed(ChannelError::Io(e))), Item::Torn) => {
                        e.kind() == ErrorKind::UnexpectedEof
                    }
                    (Err(RecvTimeoutError::Disconnected), Item::End) => true,
                    _ => false,
                };
                prop_assert!(ok, "receive {}: expected {:?}, got {:?}", i, want, got);
            }
            // The end stays the end.
            prop_assert!(matches!(
                rx.recv_timeout(std::time::Duration::from_millis(WAIT_MS)),
                Err(RecvTimeoutError::Disconnected)
            ));
            Ok(())
        },
    );
}

// ------------------------------------------------------------ the limit

#[test]
fn frames_above_the_maximum_are_reported_and_skipped() {
    // Streams stay under 64 KiB: a pipe holds them without a reader.
    let shape = (1usize..1000).prop_flat_map(|max| {
        (
            Just(max),
            vec(0..3 * max, 0..12),
            option::of((any::<u32>(), 0usize..100)),
        )
    });
    check("limit_raw", 256, shape, |(max_len, lengths, lie)| {
        let frames: Vec<Vec<u8>> = lengths
            .iter()
            .enumerate()
            .map(|(i, &n)| vec![i as u8; n])
            .collect();
        let mut stream: Vec<u8> = frames.iter().flat_map(|f| wire(f)).collect();
        // A lying prefix at the end: a claim above the maximum, and fewer
        // bytes than it claims.
        let lie = lie.map(|(claim, sent)| ((claim as usize).max(max_len + 1), sent));
        if let Some((claim, sent)) = lie {
            stream.extend_from_slice(&(claim as u32).to_le_bytes());
            stream.extend(std::iter::repeat_n(0xEE, sent.min(claim - 1)));
        }
        let t = fed(&stream);
        let mut buf = Vec::new();
        let mut read = || {
            t.recv_frame(&mut buf, max_len, &mut Vec::new(), 0, after_ms(WAIT_MS))
                .map(|got| got.map(|len| buf[..len].to_vec()))
        };
        let too_long = |got: std::io::Result<Option<Vec<u8>>>, claim: usize| match got {
            Err(e) => matches!(
                TransportError::of(&e),
                Some(&TransportError::Truncated { len, capacity, fds: 0 })
                    if len == claim && capacity == max_len
            ),
            Ok(_) => false,
        };
        for frame in &frames {
            let got = read();
            if frame.len() <= max_len {
                prop_assert_eq!(got.ok(), Some(Some(frame.clone())));
            } else {
                prop_assert!(
                    too_long(got, frame.len()),
                    "{} over {}",
                    frame.len(),
                    max_len
                );
            }
        }
        if let Some((claim, _)) = lie {
            prop_assert!(
                too_long(read(), claim),
                "the lie: {} over {}",
                claim,
                max_len
            );
            let torn = read().map_err(|e| e.kind());
            prop_assert_eq!(torn, Err(ErrorKind::UnexpectedEof));
        }
        prop_assert_eq!(read().ok(), Some(None), "the end");
        Ok(())
    });
}

/// The length of a `Bytes` of `n` bytes encoded: a varint, then the bytes.
fn encoded_len(n: usize) -> usize {
    let mut varint = 1;
    while n >> (7 * varint) != 0 {
        varint += 1;
    }
    varint + n
}

#[test]
fn a_typed_receiver_takes_exactly_the_values_that_fit_its_limit() {
    let shape = (16usize..1500, vec((0usize..2000, any::<u8>()), 1..10));
    check("limit_typed", 256, shape, |(limit, blobs)| {
        let values: Vec<Bytes> = blobs.iter().map(|&(n, b)| Bytes(vec![b; n])).collect();
        let stream = written(&values, Config::new());
        let (rx, mut w) = typed_receiver::<Bytes>(Config::new().limit(limit));
        w.write_all(&stream).expect("write the stream");
        drop(w);
        for v in &values {
            let encoded = encoded_len(v.len());
            let got = rx.recv_timeout(std::time::Duration::from_millis(WAIT_MS));
            if encoded <= limit {
                prop_assert_eq!(
                    got.as_ref().ok(),
                    Some(v),
                    "{} bytes under {}",
                    encoded,
                    limit
                );
            } else {
                let refused = matches!(
                    &got,
                    Err(RecvTimeoutError::Failed(ChannelError::Frame(FrameError::TooLong { len, max })))
                        if *len == HEADER_LEN + encoded && *max == HEADER_LEN + limit
                );
                prop_assert!(refused, "{} bytes over {}: {:?}", encoded, limit, got);
            }
        }
        prop_assert!(matches!(
            rx.recv_timeout(std::time::Duration::from_millis(WAIT_MS)),
            Err(RecvTimeoutError::Disconnected)
        ));
        Ok(())
    });
}
