//! Framing at the `FrameTransport` level: whole frames of every size, kept
//! whole across partial reads, several frames per read, waits that expire
//! inside a frame, torn frames, lying and zero length prefixes.
//!
//! Raw writers feed the transport's read end with plain `std` writes of the
//! wire format (u32 little-endian length, then the bytes).

mod util;

use std::io::{ErrorKind, IoSlice, Write};
use std::thread;
use std::time::{Duration, Instant};

use courier_pipe::{pair, PipeTransport};
use courier_transport::{FrameTransport, TransportError, Wait};
use util::{after_ms, fed_transport, pattern, queued, recv, recv_soon, send, wire};

const MIB: usize = 1 << 20;

fn assert_frame(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    assert!(got == want, "{what}: contents differ");
}

fn assert_eof_error(result: std::io::Result<Option<Vec<u8>>>, what: &str) {
    match result {
        Err(e) => assert_eq!(e.kind(), ErrorKind::UnexpectedEof, "{what}: {e}"),
        Ok(got) => panic!(
            "{what}: expected UnexpectedEof, got {:?}",
            got.map(|f| f.len())
        ),
    }
}

fn assert_truncated(result: std::io::Result<Option<Vec<u8>>>, len: usize, capacity: usize) {
    let err = match result {
        Err(e) => e,
        Ok(got) => panic!("expected Truncated, got {:?}", got.map(|f| f.len())),
    };
    assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");
    match TransportError::of(&err) {
        Some(&TransportError::Truncated {
            len: l,
            capacity: c,
            fds,
        }) => assert_eq!((l, c, fds), (len, capacity, 0)),
        other => panic!("expected Truncated, got {other:?} ({err})"),
    }
}

fn assert_end(t: &PipeTransport, what: &str) {
    for _ in 0..2 {
        assert_eq!(
            recv(t, MIB, after_ms(5_000)).expect(what),
            None,
            "{what}: expected the clean end"
        );
    }
}

#[test]
fn round_trips_from_1_byte_to_16_mib() {
    let sizes = [
        1,
        2,
        3,
        4,
        5,
        100,
        4095,
        4096,
        4097,
        65535,
        65536,
        65537,
        MIB - 1,
        MIB,
        MIB + 1,
        4 * MIB + 3,
        16 * MIB,
    ];
    let (a, b) = pair().unwrap();
    let frames: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| pattern(i as u64, n))
        .collect();
    thread::scope(|s| {
        let frames = &frames;
        let a = &a;
        s.spawn(move || {
            for f in frames {
                send(a, f, Wait::Block).unwrap();
            }
        });
        for (i, want) in frames.iter().enumerate() {
            let got = recv_soon(&b, 16 * MIB);
            assert_frame(&got, want, &format!("frame {i} of {} bytes", want.len()));
        }
    });
    drop(a);
    assert_end(&b, "after the last frame");
}

/// A frame given as several slices (fewer than 4, and more: two code
/// paths in the writer) arrives as their concatenation.
#[test]
fn a_frame_of_many_slices_arrives_as_one() {
    let (a, b) = pair().unwrap();
    let whole = pattern(7, 200_000);
    for cuts in [
        vec![10],
        vec![1, 2],
        vec![3, 4000, 70_000],
        vec![1, 2, 3, 4, 5, 100_000],
    ] {
        let mut slices = Vec::new();
        let mut at = 0;
        for c in &cuts {
            slices.push(IoSlice::new(&whole[at..at + c]));
            at += c;
        }
        slices.push(IoSlice::new(&whole[at..]));
        thread::scope(|s| {
            s.spawn(|| a.send_frame(&slices, &[], Wait::Block).unwrap());
            assert_frame(&recv_soon(&b, MIB), &whole, &format!("cuts {cuts:?}"));
        });
    }
}

#[test]
fn an_empty_frame_is_refused_and_nothing_is_written() {
    let (a, b) = pair().unwrap();
    let err = send(&a, b"", Wait::Block).unwrap_err();
    assert!(
        matches!(TransportError::of(&err), Some(TransportError::EmptyMessage)),
        "{err}"
    );
    let err = a
        .send_frame(&[IoSlice::new(b""), IoSlice::new(b"")], &[], Wait::Never)
        .unwrap_err();
    assert!(
        matches!(TransportError::of(&err), Some(TransportError::EmptyMessage)),
        "{err}"
    );
    assert_eq!(queued(b.readable_fd()), 0, "bytes were written");
    send(&a, b"next", Wait::Block).unwrap();
    assert_eq!(recv_soon(&b, MIB), b"next");
}

/// Frames written one byte per write, with pauses: the reader sees only
/// partial reads, and still returns whole frames.
#[test]
fn frames_fed_byte_by_byte_with_pauses() {
    let (t, mut w, _out) = fed_transport();
    let frames = [pattern(1, 1), pattern(2, 7), pattern(3, 300)];
    let bytes: Vec<u8> = frames.iter().flat_map(|f| wire(f)).collect();
    let writer = thread::spawn(move || {
        for (i, b) in bytes.iter().enumerate() {
            w.write_all(std::slice::from_ref(b)).unwrap();
            if i % 3 == 0 {
                thread::sleep(Duration::from_micros(300));
            }
        }
    });
    for (i, want) in frames.iter().enumerate() {
        assert_frame(&recv_soon(&t, MIB), want, &format!("frame {i}"));
    }
    writer.join().unwrap();
    assert_end(&t, "after the byte-by-byte frames");
}

/// Many frames in one write: each comes out whole, none lost or merged.
#[test]
fn several_frames_in_one_write() {
    let (t, mut w, _out) = fed_transport();
    let frames: Vec<Vec<u8>> = (0..50)
        .map(|i| pattern(i, 1 + (i as usize * 37) % 500))
        .collect();
    let bytes: Vec<u8> = frames.iter().flat_map(|f| wire(f)).collect();
    w.write_all(&bytes).unwrap();
    drop(w);
    for (i, want) in frames.iter().enumerate() {
        assert_frame(&recv_soon(&t, MIB), want, &format!("frame {i}"));
    }
    assert_end(&t, "after 50 frames from one write");
}

/// One large frame and the prefix of the next split at awkward places
/// (inside the length prefix, right after it, inside the body) across
/// writes with pauses.
#[test]
fn frames_split_across_writes() {
    let (t, mut w, _out) = fed_transport();
    let first = pattern(10, 200_000);
    let second = pattern(11, 70_000);
    let mut bytes = wire(&first);
    bytes.extend(wire(&second));
    let cuts = [
        2,
        4,
        5,
        4096,
        65_539,
        131_072,
        200_003,
        200_005,
        200_008,
        bytes.len(),
    ];
    let writer = thread::spawn(move || {
        let mut at = 0;
        for c in cuts {
            w.write_all(&bytes[at..c]).unwrap();
            at = c;
            thread::sleep(Duration::from_millis(2));
        }
    });
    assert_frame(&recv_soon(&t, MIB), &first, "first");
    assert_frame(&recv_soon(&t, MIB), &second, "second");
    writer.join().unwrap();
    assert_end(&t, "after the split frames");
}

/// A deadline that runs out inside a frame (inside its prefix, then inside
/// its body) keeps what was read: later calls return the whole frame.
#[test]
fn a_deadline_inside_a_frame_keeps_what_was_read() {
    let (t, mut w, _out) = fed_transport();
    let frame = pattern(20, 1000);
    let bytes = wire(&frame);

    // Inside the prefix.
    w.write_all(&bytes[..2]).unwrap();
    let start = Instant::now();
    let err = recv(&t, MIB, after_ms(100)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
    assert!(
        start.elapsed() >= Duration::from_millis(100),
        "early: {:?}",
        start.elapsed()
    );
    // Inside the body.
    w.write_all(&bytes[2..404]).unwrap();
    let err = recv(&t, MIB, after_ms(50)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
    let err = recv(&t, MIB, Wait::Never).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock, "{err}");
    // The rest, and a second frame.
    w.write_all(&bytes[404..]).unwrap();
    w.write_all(&wire(b"second")).unwrap();
    assert_frame(&recv_soon(&t, MIB), &frame, "the frame read in three calls");
    assert_eq!(recv(&t, MIB, Wait::Never).unwrap().unwrap(), b"second");
}

/// A frame whose body is 4 MiB arrives over several timed-out calls while
/// a slow writer feeds it; each call keeps what it read.
#[test]
fn a_large_frame_over_many_short_deadlines() {
    let (t, mut w, _out) = fed_transport();
    let frame = pattern(21, 4 * MIB);
    let bytes = wire(&frame);
    let writer = thread::spawn(move || {
        for chunk in bytes.chunks(700_001) {
            w.write_all(chunk).unwrap();
            thread::sleep(Duration::from_millis(15));
        }
    });
    let start = Instant::now();
    let mut timeouts = 0;
    let got = loop {
        match recv(&t, 8 * MIB, after_ms(3)) {
            Ok(Some(f)) => break f,
            Ok(None) => panic!("end of stream inside the frame"),
            Err(e) if e.kind() == ErrorKind::TimedOut => timeouts += 1,
            Err(e) => panic!("{e}"),
        }
        assert!(start.elapsed() < util::SOON, "the frame never completed");
    };
    writer.join().unwrap();
    assert_frame(&got, &frame, "4 MiB over short deadlines");
    assert!(timeouts > 0, "no call timed out: the test proved nothing");
}

/// The stream ends inside a frame's body: an error, never a shorter frame;
/// then the clean end.
#[test]
fn a_torn_frame_at_end_of_stream_is_an_error_then_the_end() {
    let (t, mut w, _out) = fed_transport();
    w.write_all(&wire(b"whole")).unwrap();
    w.write_all(&100u32.to_le_bytes()).unwrap();
    w.write_all(&[0xAB; 40]).unwrap();
    drop(w);
    assert_eq!(recv_soon(&t, MIB), b"whole");
    assert_eof_error(recv(&t, MIB, after_ms(5_000)), "torn body");
    assert_end(&t, "after the torn frame");
}

/// The same when the frame is above the reader's maximum: Truncated as
/// soon as its prefix is read, then the torn end while draining it, then
/// the clean end.
#[test]
fn a_torn_over_limit_frame_at_end_of_stream_is_truncated_then_an_error_then_the_end() {
    let (t, mut w, _out) = fed_transport();
    w.write_all(&5000u32.to_le_bytes()).unwrap();
    w.write_all(&[0xAB; 3000]).unwrap();
    drop(w);
    assert_truncated(recv(&t, 1000, after_ms(5_000)), 5000, 1000);
    assert_eof_error(recv(&t, 1000, after_ms(5_000)), "torn over-limit body");
    assert_end(&t, "after the torn over-limit frame");
}

#[test]
fn a_torn_prefix_at_end_of_stream_is_an_error_then_the_end() {
    let (t, mut w, _out) = fed_transport();
    w.write_all(&[7, 0]).unwrap();
    drop(w);
    assert_eof_error(recv(&t, MIB, after_ms(5_000)), "torn prefix");
    assert_end(&t, "after the torn prefix");
}

#[test]
fn end_of_stream_between_frames_is_the_clean_end() {
    let (t, mut w, _out) = fed_transport();
    w.write_all(&wire(b"one")).unwrap();
    w.write_all(&wire(b"two")).unwrap();
    drop(w);
    assert_eq!(recv_soon(&t, MIB), b"one");
    assert_eq!(recv_soon(&t, MIB), b"two");
    assert_end(&t, "between frames");
    // Nothing at all before the end.
    let (t, w, _out) = fed_transport();
    drop(w);
    assert_end(&t, "an empty stream");
    // Wait::Never and a deadline see the end too.
    assert_eq!(recv(&t, MIB, Wait::Never).unwrap(), None);
}

/// A prefix of 0 is a frame of 0 bytes (courier never sends one, but the
/// reader stays in step).
#[test]
fn a_zero_length_prefix_is_an_empty_frame() {
    let (t, mut w, _out) = fed_transport();
    w.write_all(&0u32.to_le_bytes()).unwrap();
    w.write_all(&wire(b"after")).unwrap();
    let mut buf = b"stale contents".to_vec();
    let got = t
        .recv_frame(&mut buf, MIB, &mut Vec::new(), 0, after_ms(5_000))
        .unwrap();
    assert_eq!(got, Some(0));
    assert_eq!(recv_soon(&t, MIB), b"after");
}

/// A frame of exactly the maximum is taken; one byte more is reported as
/// Truncated, its bytes are read and dropped, and the stream stays in step.
#[test]
fn the_maximum_is_inclusive_and_an_over_limit_frame_is_skipped() {
    let (t, mut w, _out) = fed_transport();
    let at_max = pattern(30, 1000);
    let over = pattern(31, 1001);
    for f in [&at_max, &over, &at_max] {
        w.write_all(&wire(f)).unwrap();
    }
    assert_frame(&recv_soon(&t, 1000), &at_max, "at the maximum");
    assert_truncated(recv(&t, 1000, after_ms(5_000)), 1001, 1000);
    assert_frame(&recv_soon(&t, 1000), &at_max, "after the skipped frame");
}

/// A length prefix claiming u32::MAX bytes with a small maximum is
/// reported (Truncated) as soon as the prefix is read, before any of the
/// claimed bytes exist; then the reader drops the bytes as they come (the
/// full 4 GiB, never held: it keeps no buffer for a frame it drops) and
/// the frame after them arrives intact.
#[test]
fn a_lying_u32_max_prefix_is_truncated_and_the_frame_after_4_gib_arrives() {
    let (t, mut w, _out) = fed_transport();
    w.write_all(&u32::MAX.to_le_bytes()).unwrap();
    let start = Instant::now();
    assert_truncated(
        recv(&t, 64 * 1024, after_ms(10_000)),
        u32::MAX as usize,
        64 * 1024,
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "Truncated only after {:?}: not reported when the prefix was read",
        start.elapsed()
    );
    // Draining, nothing there yet.
    let err = recv(&t, 64 * 1024, Wait::Never).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock, "{err}");

    let next = pattern(40, 5000);
    let next_wire = wire(&next);
    let writer = thread::spawn(move || {
        let junk = vec![0x5Au8; MIB];
        let mut left = u32::MAX as usize;
        while left > 0 {
            let n = left.min(junk.len());
            w.write_all(&junk[..n]).unwrap();
            left -= n;
        }
        w.write_all(&next_wire).unwrap();
    });
    let got = recv(&t, 64 * 1024, after_ms(60_000))
        .expect("the frame after the lie")
        .expect("a frame, not the end");
    assert_frame(&got, &next, "the frame after the lie");
    writer.join().unwrap();
}

/// Two transports' worth of frames in both directions at once over one
/// pair (no deadlock, no mix-up between the directions).
#[test]
fn both_directions_at_once() {
    let (a, b) = pair().unwrap();
    let n = 40;
    thread::scope(|s| {
        for (me, other, seed) in [(&a, &b, 100u64), (&b, &a, 200u64)] {
            s.spawn(move || {
                for i in 0..n {
                    send(
                        me,
                        &pattern(seed + i, 50_000 + i as usize * 1000),
                        Wait::Block,
                    )
                    .unwrap();
                }
            });
            s.spawn(move || {
                // `other` receives what `me` sent.
                for i in 0..n {
                    let got = recv_soon(other, MIB);
                    assert_frame(
                        &got,
                        &pattern(seed + i, 50_000 + i as usize * 1000),
                        &format!("direction {seed}, frame {i}"),
                    );
                }
            });
        }
    });
}

/// A frame above u32::MAX bytes cannot be announced by the prefix: it is
/// refused (MessageTooLarge) before anything is written. (Made of 4097
/// slices of one 1 MiB buffer: nothing of that size is allocated.)
#[test]
fn a_frame_above_u32_max_is_refused_before_writing() {
    let (a, b) = pair().unwrap();
    let mib = vec![0u8; MIB];
    let slices: Vec<IoSlice<'_>> = (0..4097).map(|_| IoSlice::new(&mib)).collect();
    for wait in [Wait::Block, Wait::Never, after_ms(100)] {
        let err = a.send_frame(&slices, &[], wait).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        assert!(
            matches!(
                TransportError::of(&err),
                Some(TransportError::MessageTooLarge { .. })
            ),
            "{err}"
        );
    }
    assert_eq!(queued(b.readable_fd()), 0, "bytes were written");
    assert_eq!(a.max_frame_len().unwrap(), u32::MAX as usize);
}

/// `send_frame` sends "the concatenation of `frame`", however many slices
/// it comes in. A frame of 1024 or more slices (one `writev` would carry
/// them with the prefix, above the kernel's IOV_MAX of 1024) must still be
/// sent whole.
#[test]
fn a_frame_of_more_than_iov_max_slices_is_sent() {
    let (a, b) = pair().unwrap();
    let whole = pattern(60, 2000);
    for count in [1023usize, 1024, 2000] {
        let size = whole.len() / count;
        let mut slices: Vec<IoSlice<'_>> = whole
            .chunks(size)
            .take(count - 1)
            .map(IoSlice::new)
            .collect();
        slices.push(IoSlice::new(&whole[size * (count - 1)..]));
        assert_eq!(slices.len(), count);
        match a.send_frame(&slices, &[], Wait::Block) {
            Ok(()) => assert_frame(&recv_soon(&b, MIB), &whole, &format!("{count} slices")),
            Err(e) => panic!(
                "a {}-byte frame in {count} slices was refused: {e} (kind {:?}); \
                 {} bytes were written",
                whole.len(),
                e.kind(),
                queued(b.readable_fd())
            ),
        }
    }
}
