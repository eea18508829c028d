//! Waiting at the `FrameTransport` level: `Wait::Never` and deadlines on a
//! full pipe and an empty one, frames larger than the pipe, and the rule
//! that a try or deadline send never writes part of a frame.
//!
//! Timing is only checked one way: never early (lower bounds), and within
//! generous upper bounds.

mod util;

use std::io::ErrorKind;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use courier_channel::{Config, Endpoint, SendTimeoutError, TrySendError};
use courier_pipe::{pair, PipeTransport, PREFIX_LEN};
use courier_transport::{FrameTransport, Wait};
use util::{after_ms, pattern, queued, recv, recv_soon, send, within, SOON};

const PAGE: usize = 4096;

/// Fills `a`'s outgoing pipe with `Wait::Never` sends of frames of `len`
/// bytes until one is refused; returns how many were sent. The refusal
/// must be WouldBlock and must have written nothing.
fn fill_with_try_sends(a: &PipeTransport, b: &PipeTransport, len: usize, seed: u64) -> u64 {
    let capacity = a.capacity().expect("a pipe");
    let mut sent = 0u64;
    loop {
        match send(a, &pattern(seed + sent, len), Wait::Never) {
            Ok(()) => sent += 1,
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::WouldBlock, "{e}");
                break;
            }
        }
        assert!(
            (sent as usize) * (len + PREFIX_LEN) <= capacity,
            "more accepted than the pipe holds"
        );
    }
    assert_eq!(
        queued(b.readable_fd()),
        sent as usize * (len + PREFIX_LEN),
        "the pipe holds something other than {sent} whole frames"
    );
    sent
}

/// Receives `n` frames of `len` bytes made with `seed`, all whole.
fn drain(b: &PipeTransport, n: u64, len: usize, seed: u64) {
    for i in 0..n {
        let got = recv_soon(b, 4 << 20);
        assert!(got == pattern(seed + i, len), "frame {i} of {n} not whole");
    }
}

#[test]
fn try_send_on_a_full_pipe_is_would_block_and_writes_nothing_partial() {
    let (a, b) = pair().unwrap();
    let len = 64 << 10;
    let sent = fill_with_try_sends(&a, &b, len, 0);
    assert!(sent > 0, "nothing fitted in an empty pipe");
    // Refused again, smaller ones too if the pipe is really full, and
    // still nothing partial.
    let before = queued(b.readable_fd());
    for _ in 0..3 {
        match send(&a, &pattern(999, len), Wait::Never) {
            Err(e) => assert_eq!(e.kind(), ErrorKind::WouldBlock, "{e}"),
            Ok(()) => panic!("a full pipe took another 64 KiB frame"),
        }
    }
    assert_eq!(queued(b.readable_fd()), before);
    drain(&b, sent, len, 0);
    let err = recv(&b, 1 << 20, Wait::Never).unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::WouldBlock,
        "frames beyond the whole ones"
    );
    // Room again.
    send(&a, b"room", Wait::Never).unwrap();
    assert_eq!(recv_soon(&b, 1024), b"room");
}

#[test]
fn a_deadline_send_on_a_full_pipe_times_out_then_succeeds_once_drained() {
    let (a, b) = pair().unwrap();
    let len = 64 << 10;
    let sent = fill_with_try_sends(&a, &b, len, 100);
    let before = queued(b.readable_fd());

    let start = Instant::now();
    let err = send(&a, &pattern(7, len), after_ms(150)).unwrap_err();
    let took = start.elapsed();
    assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
    assert!(
        took >= Duration::from_millis(150),
        "timed out early: {took:?}"
    );
    assert!(took < SOON, "timed out late: {took:?}");
    assert_eq!(
        queued(b.readable_fd()),
        before,
        "a timed-out send wrote bytes"
    );

    // A reader drains after a pause; a send with a long deadline waits for it.
    thread::scope(|s| {
        let b = &b;
        s.spawn(move || {
            thread::sleep(Duration::from_millis(100));
            drain(b, sent, len, 100);
            assert!(recv_soon(b, 1 << 20) == pattern(7, len));
        });
        let start = Instant::now();
        send(&a, &pattern(7, len), Wait::Until(Instant::now() + SOON)).unwrap();
        assert!(
            start.elapsed() >= Duration::from_millis(50),
            "sent into a full pipe?"
        );
    });
}

/// A frame larger than the pipe itself: try sends refuse it (even on an
/// empty pipe); a deadline send waits until the pipe is empty, starts it,
/// and then completes it while the reader reads.
#[test]
fn a_frame_larger_than_the_pipe() {
    let (a, b) = pair().unwrap();
    let capacity = a.capacity().unwrap();
    let big = pattern(50, 3 * capacity + 123);

    let err = send(&a, &big, Wait::Never).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock, "{err}");
    assert_eq!(queued(b.readable_fd()), 0, "a refused frame wrote bytes");

    // Not empty: a deadline send does not start it.
    send(&a, b"first", Wait::Block).unwrap();
    let start = Instant::now();
    let err = send(&a, &big, after_ms(100)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
    assert!(start.elapsed() >= Duration::from_millis(100));
    assert_eq!(
        queued(b.readable_fd()),
        PREFIX_LEN + 5,
        "a timed-out send wrote bytes"
    );

    // The reader takes "first" after a pause, then the big frame.
    thread::scope(|s| {
        let b = &b;
        let big = &big;
        s.spawn(move || {
            thread::sleep(Duration::from_millis(100));
            assert_eq!(recv_soon(b, 1024), b"first");
            let got = recv_soon(b, big.len());
            assert!(got == *big, "the big frame is not whole");
        });
        send(&a, big, Wait::Until(Instant::now() + SOON)).unwrap();
    });
}

/// A frame larger than the pipe, begun by a deadline send, whose reader is
/// slower than the deadline: the send does not wait on (it times out, not
/// early), and since the frame cannot be taken back the write end is
/// released: the reader sees a torn frame, then the end, and later sends
/// fail. The stream is never left waiting, nor silently corrupt.
#[test]
fn a_large_frame_past_its_deadline_breaks_the_stream_instead_of_waiting() {
    let (a, b) = pair().unwrap();
    let capacity = a.capacity().unwrap();
    let big = pattern(51, 2 * capacity);
    thread::scope(|s| {
        let b = &b;
        let big = &big;
        s.spawn(move || {
            thread::sleep(Duration::from_millis(1_000));
            let err = recv(b, big.len(), after_ms(5_000)).expect_err("a torn frame");
            assert_eq!(err.kind(), ErrorKind::UnexpectedEof, "{err}");
            assert_eq!(recv(b, 1024, after_ms(5_000)).expect("the end"), None);
        });
        let start = Instant::now();
        let err = send(&a, big, after_ms(50)).expect_err("the deadline passed inside the frame");
        assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(50), "early: {took:?}");
        assert!(
            took < Duration::from_millis(250),
            "waited on for the reader: {took:?}"
        );
        let err = send(&a, b"after", Wait::Block).expect_err("the stream is broken");
        assert_eq!(err.kind(), ErrorKind::BrokenPipe, "{err}");
    });
}

/// Once begun, a frame larger than the pipe is written as the reader makes
/// room, within the deadline.
#[test]
fn a_large_frame_goes_through_when_the_reader_keeps_up() {
    let (a, b) = pair().unwrap();
    let capacity = a.capacity().unwrap();
    let big = pattern(52, 2 * capacity);
    thread::scope(|s| {
        let b = &b;
        let big = &big;
        s.spawn(move || {
            assert!(
                recv_soon(b, big.len()) == *big,
                "the big frame is not whole"
            );
            assert_eq!(recv_soon(b, 1024), b"after");
        });
        send(&a, big, after_ms(10_000)).expect("sent within the deadline");
        send(&a, b"after", Wait::Block).unwrap();
    });
}

#[test]
fn recv_on_an_empty_pipe_would_block_or_times_out_promptly() {
    let (_a, b) = pair().unwrap();
    let start = Instant::now();
    let err = recv(&b, 1024, Wait::Never).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock, "{err}");
    assert!(start.elapsed() < Duration::from_secs(2));
    for ms in [1, 20, 150] {
        let start = Instant::now();
        let err = recv(&b, 1024, after_ms(ms)).unwrap_err();
        let took = start.elapsed();
        assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
        assert!(
            took >= Duration::from_millis(ms),
            "{ms} ms deadline: early, {took:?}"
        );
        assert!(
            took < Duration::from_millis(ms) + SOON,
            "{ms} ms deadline: {took:?}"
        );
    }
    // A deadline already past: an immediate TimedOut.
    let err = recv(
        &b,
        1024,
        Wait::Until(Instant::now() - Duration::from_millis(5)),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
}

/// A frame that arrives while a receive waits is returned at once, well
/// before the deadline.
#[test]
fn a_deadline_recv_returns_when_the_frame_arrives() {
    let (a, b) = pair().unwrap();
    thread::scope(|s| {
        s.spawn(|| {
            thread::sleep(Duration::from_millis(50));
            send(&a, b"late", Wait::Block).unwrap();
        });
        let start = Instant::now();
        let got = recv(
            &b,
            1024,
            Wait::Until(Instant::now() + Duration::from_secs(20)),
        )
        .unwrap()
        .unwrap();
        assert_eq!(got, b"late");
        assert!(start.elapsed() < Duration::from_secs(15));
    });
}

/// The typed forms: try_send is Full, send_timeout is Timeout with the
/// value handed back, try_recv/recv_timeout see whole values only.
#[test]
fn typed_full_and_timeout_hand_the_value_back() {
    let (a, b) = pair().unwrap();
    let tx = Endpoint::<courier_channel::Bytes, ()>::with_transport(Box::new(a), Config::new());
    let rx = Endpoint::<(), courier_channel::Bytes>::with_transport(Box::new(b), Config::new());
    let value = |i: u64| courier_channel::Bytes(pattern(i, 100_000));
    let mut sent = 0;
    loop {
        match tx.try_send(value(sent)) {
            Ok(()) => sent += 1,
            Err(TrySendError::Full(v)) => {
                assert!(v == value(sent), "Full handed back another value");
                break;
            }
            Err(e) => panic!("{e:?}"),
        }
        assert!(sent < 1000, "the pipe never filled");
    }
    let start = Instant::now();
    match tx.send_timeout(value(sent), Duration::from_millis(100)) {
        Err(SendTimeoutError::Timeout(v)) => assert!(v == value(sent)),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(start.elapsed() >= Duration::from_millis(100));
    for i in 0..sent {
        assert!(rx.try_recv().unwrap() == value(i), "value {i}");
    }
    assert!(matches!(
        rx.try_recv(),
        Err(courier_channel::TryRecvError::Empty)
    ));
}

// ------------------------------------------------------------------------
// Frames that do not share pages.
//
// A pipe is a ring of page-sized buffers. A write whose size modulo 4096
// does not fit in the room left in the last buffer starts a new buffer
// (fs/pipe.c merges a write's partial page only if it fits whole), so a
// pipe of N pages holds only N frames of 2996 + 4 bytes: 3000 bytes per
// page, not 4096. The writer's estimate of free room (capacity minus
// FIONREAD rounded up to pages, minus one page) then says "room" when the
// pipe is in fact full.

/// Fills the pipe with exactly one 3000-byte frame per page (blocking
/// sends; each takes one page of its own, so none of them waits).
fn fill_one_frame_per_page(a: &Arc<PipeTransport>) -> usize {
    let pages = a.capacity().unwrap() / PAGE;
    let a2 = Arc::clone(a);
    let (done, _rx) = within(SOON, move || {
        for i in 0..pages {
            send(&a2, &pattern(i as u64, 2996), Wait::Block).unwrap();
        }
    });
    assert!(done.is_some(), "filling {pages} pages blocked");
    pages
}

/// Runs `f` (a send expected to fail at once or at its deadline) on a
/// thread; if it is still blocked after a few seconds, drains the pipe so
/// that it can finish and reports that it blocked.
fn must_not_block(
    a: &Arc<PipeTransport>,
    b: &PipeTransport,
    what: &str,
    f: impl FnOnce(&PipeTransport) -> std::io::Result<()> + Send + 'static,
) -> std::io::Result<()> {
    let a2 = Arc::clone(a);
    let start = Instant::now();
    let (result, rx) = within(Duration::from_secs(2), move || f(&a2));
    if let Some(result) = result {
        return result;
    }
    let queued_then = queued(b.readable_fd());
    // Unblock it: read until the send returns (bounded).
    let mut frames = 0;
    let outcome = loop {
        if let Ok(r) = rx.try_recv() {
            break Some(r);
        }
        if start.elapsed() > SOON + SOON {
            break None;
        }
        if let Ok(Some(_)) = recv(b, 1 << 20, after_ms(10)) {
            frames += 1;
        }
    };
    panic!(
        "{what} blocked for {:?} with a full pipe ({queued_then} bytes queued, \
         {} pages of capacity) instead of failing; it returned {outcome:?} only \
         after the reader drained {frames} frames",
        start.elapsed(),
        a.capacity().unwrap() / PAGE
    );
}

#[test]
fn try_send_does_not_block_on_a_pipe_full_of_frames_that_do_not_share_pages() {
    let (a, b) = pair().unwrap();
    let a = Arc::new(a);
    fill_one_frame_per_page(&a);
    let result = must_not_block(&a, &b, "a Wait::Never send", |a| {
        send(a, &[1u8; 2996], Wait::Never)
    });
    let err = result.expect_err("a full pipe took another frame");
    assert_eq!(err.kind(), ErrorKind::WouldBlock, "{err}");
}

#[test]
fn a_deadline_send_does_not_overrun_on_a_pipe_full_of_frames_that_do_not_share_pages() {
    let (a, b) = pair().unwrap();
    let a = Arc::new(a);
    fill_one_frame_per_page(&a);
    let start = Instant::now();
    let result = must_not_block(&a, &b, "a send with a 200 ms deadline", |a| {
        send(a, &[1u8; 2996], after_ms(200))
    });
    let err = result.expect_err("a full pipe took another frame");
    assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
    assert!(start.elapsed() >= Duration::from_millis(200));
}

/// A `try_` or deadline send never waits unbounded for another thread
/// that holds the end's turn (here: a blocking send stuck on a full pipe).
#[test]
fn waiting_for_another_writers_turn_respects_the_wait() {
    let (a, b) = pair().unwrap();
    let page = vec![3u8; 4000];
    while send(&a, &page, Wait::Never).is_ok() {}
    thread::scope(|s| {
        let a = &a;
        let stuck = s.spawn(move || send(a, &[4u8; 100_000], Wait::Block));
        thread::sleep(Duration::from_millis(100)); // it holds the turn now
        let start = Instant::now();
        let err = send(a, b"small", Wait::Never).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WouldBlock, "{err}");
        let err = send(a, b"small", after_ms(100)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        // Let the stuck writer finish: drain everything.
        while !stuck.is_finished() {
            let _ = recv(&b, 1 << 20, after_ms(10));
        }
        stuck.join().unwrap().expect("the blocking send completes");
    });
}
