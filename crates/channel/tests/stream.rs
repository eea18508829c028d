//! Large values streamed through the ring (kind-2 frames with flag bit 1):
//! read while they are written, wrapping around a ring smaller than them.
//!
//! * A child streams values of 2 to 33 MiB through a 256 KiB ring, between
//!   small values and a large value with an fd (which goes another way):
//!   all arrive intact and in order, the ring stays 256 KiB, and its
//!   `consumed` counter shows the bodies went through it.
//! * The wire: a stream's frame goes first; a stream nobody reads is
//!   withdrawn (`withdrawn` = start + 1) and its value follows in a memfd.
//! * `Serialize` impls that differ between passes (fail, grow, gain an fd
//!   while streaming): the stream is withdrawn, the value arrives once or
//!   the send fails with the value back, and the receiver never sees half.
//! * Hand-made streams (a raw peer that publishes `filled` by hand): slow
//!   but steady bytes are waited for past the stall limit; bytes that stop
//!   give `FrameError::Stalled` (also for `try_recv`); a withdrawn stream is
//!   skipped, and streams withdrawn one after another do not stretch a
//!   receive's deadline; lies (`filled` past the end, garbage) give typed
//!   errors.
//! * A sender that exits mid-stream: the half-written value is dropped
//!   and the receiver sees the end of the channel, not an error.
//!
//! Every test holds the fd lock and checks the fd table is back to its
//! baseline; child processes are this test binary re-executed in a role.

mod common;

use std::cell::Cell;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use common::{
    body_of, connect_to_parent, inline_frame, named_memfds, raw_peer, ring_frame, send_raw,
    sized_memfd, spawn_connected, with_fd_baseline, RECV_TIMEOUT, RING_CONSUMED, RING_CONTROL,
};
use courier_channel::{
    Bytes, ChannelError, Config, Fd, FrameError, Receiver, RecvTimeoutError, SendError, Sender,
    TryRecvError, HEADER_LEN,
};
use courier_transport::{FrameTransport, SeqPacketSocket, Wait};
use nix::fcntl::SealFlag;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
/// Waits for values of tens of MiB (unoptimised builds copy them slowly).
const LARGE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a receiver waits for a stream's bytes (the library's limit).
const STALL: Duration = Duration::from_secs(2);

/// Control-page fields of a ring (docs/wire-format.md).
const RING_FILLED: u64 = 384;
const RING_WITHDRAWN: u64 = 576;
/// Frame flags: the ring's memfd is attached; the body is streamed.
const ATTACHED: u8 = 1;
const STREAMED: u8 = 2;
const RING_SEALS: SealFlag = SealFlag::F_SEAL_SHRINK
    .union(SealFlag::F_SEAL_GROW)
    .union(SealFlag::F_SEAL_SEAL);

// ------------------------------------------------------------ patterns

/// `len` bytes of 4 KiB chunks, each starting with (tag, chunk number) and
/// filled from both: a chunk from elsewhere, shifted or stale shows up.
fn patterned(tag: u32, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut chunk = [0u8; 4096];
    let mut n = 0u32;
    while out.len() < len {
        chunk[..4].copy_from_slice(&tag.to_le_bytes());
        chunk[4..8].copy_from_slice(&n.to_le_bytes());
        for (i, b) in chunk[8..].iter_mut().enumerate() {
            *b = (i as u32 ^ tag.wrapping_mul(0x9e37) ^ n) as u8;
        }
        let take = (len - out.len()).min(chunk.len());
        out.extend_from_slice(&chunk[..take]);
        n += 1;
    }
    out
}

fn check_pattern(got: &[u8], tag: u32, len: usize, what: &str) {
    assert_eq!(got.len(), len, "{what}: length");
    if got != patterned(tag, len).as_slice() {
        let first = got
            .iter()
            .zip(patterned(tag, len))
            .position(|(a, b)| *a != b);
        panic!("{what}: bytes differ, first at {first:?}");
    }
}

// ------------------------------------- 1. through a ring smaller than them

#[derive(Serialize, Deserialize, Debug)]
enum Item {
    Big {
        tag: u32,
        data: Bytes,
    },
    Small(u32),
    WithFd {
        tag: u32,
        data: Bytes,
        file: Fd<File>,
    },
}

/// Sizes of the streamed values (all over 2 MiB, most not a multiple of
/// anything), and where a small value and a value with an fd go between.
const STREAMED_SIZES: [usize; 5] = [2 * MIB + 1, 3 * MIB, 9 * MIB + 7, 33 * MIB + 4093, 5 * MIB];
const SMALL_RING: usize = 256 * KIB;
const WITH_FD_LEN: usize = 3 * MIB;

fn small_ring_streamer() {
    let config = Config::new().shared_ring(SMALL_RING);
    let tx = Sender::<Item>::from_socket(connect_to_parent(), config);
    for (k, &len) in STREAMED_SIZES.iter().enumerate() {
        let tag = k as u32;
        let big = Item::Big {
            tag,
            data: Bytes::from(patterned(tag, len)),
        };
        tx.send(big).expect("send a streamed value");
        tx.send(Item::Small(tag)).expect("send a small value");
        if k == 2 {
            let mut file = tempfile::tempfile().expect("temp file");
            file.write_all(b"the fd beside a large body")
                .expect("write");
            let data = Bytes::from(patterned(100, WITH_FD_LEN));
            let file = Fd::new(file);
            tx.send(Item::WithFd { tag, data, file })
                .expect("send a large value with an fd");
        }
    }
}

/// The receiver's `consumed` counter of the ring mapped from fd `fd`.
fn consumed_of(fd: i32) -> u64 {
    let file = File::open(format!("/proc/self/fd/{fd}")).expect("open the ring fd");
    let mut b = [0; 8];
    file.read_exact_at(&mut b, RING_CONSUMED)
        .expect("read consumed");
    u64::from_le_bytes(b)
}

#[test]
fn values_much_larger_than_the_ring_stream_through_it_intact_and_in_order() {
    with_fd_baseline("streams through a small ring", || {
        let (mut child, conn) = spawn_connected("small_ring_streamer");
        let rx = Receiver::<Item>::from_socket(conn, Config::new());
        for (k, &len) in STREAMED_SIZES.iter().enumerate() {
            let tag = k as u32;
            match rx.recv_timeout(LARGE_TIMEOUT) {
                Ok(Item::Big { tag: t, data }) => {
                    assert_eq!(t, tag, "out of order");
                    check_pattern(&data, tag, len, &format!("streamed value {k}"));
                }
                other => panic!("value {k}: expected a large value, got {other:?}"),
            }
            match rx.recv_timeout(RECV_TIMEOUT) {
                Ok(Item::Small(t)) => assert_eq!(t, tag, "out of order"),
                other => panic!("after value {k}: expected a small value, got {other:?}"),
            }
            if k == 2 {
                match rx.recv_timeout(LARGE_TIMEOUT) {
                    Ok(Item::WithFd { tag: t, data, file }) => {
                        assert_eq!(t, tag, "out of order");
                        check_pattern(&data, 100, WITH_FD_LEN, "the value with an fd");
                        let mut buf = [0; 26];
                        file.read_exact_at(&mut buf, 0).expect("read the fd");
                        assert_eq!(&buf, b"the fd beside a large body");
                    }
                    other => panic!("expected the value with an fd, got {other:?}"),
                }
            }
        }
        // One ring, still 256 KiB, whose counter went past every streamed
        // body: they went through it, wrapping it up to 133 times.
        let rings = named_memfds("courier-ring");
        assert_eq!(rings.len(), 1, "the receiver's rings: {rings:?}");
        let (fd, _, size) = rings[0];
        assert_eq!(size, RING_CONTROL + SMALL_RING as u64, "the ring grew");
        let streamed: usize = STREAMED_SIZES.iter().sum();
        assert!(
            consumed_of(fd) >= streamed as u64,
            "the ring's reader consumed {} bytes, less than the {streamed} streamed",
            consumed_of(fd)
        );
        match rx.recv_timeout(RECV_TIMEOUT) {
            Err(RecvTimeoutError::Disconnected) => {}
            other => panic!("after the values: expected Disconnected, got {other:?}"),
        }
        child.wait_success();
    });
}

// ---------------------------------------- 2. the wire, and withdrawal

/// Receives one raw frame (bounded) with its fds.
fn raw_frame(sock: &SeqPacketSocket) -> (Vec<u8>, Vec<OwnedFd>) {
    let mut buf = Vec::with_capacity(64 * KIB);
    let mut fds = Vec::new();
    let deadline = Instant::now() + RECV_TIMEOUT;
    let len = sock
        .recv_frame(&mut buf, 64 * KIB, &mut fds, 8, Wait::Until(deadline))
        .expect("receive a raw frame")
        .expect("a frame, not the end");
    buf.truncate(len);
    (buf, fds)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

#[test]
fn a_stream_nobody_reads_is_withdrawn_and_its_value_follows_in_a_memfd() {
    with_fd_baseline("withdrawn on the wire", || {
        let (a, b) = SeqPacketSocket::pair().expect("socketpair");
        let len = 8 * MIB;
        std::thread::scope(|s| {
            let sender = s.spawn(move || {
                let tx = Sender::<Bytes>::from_socket(a, Config::new());
                tx.send(Bytes::from(patterned(7, len)))
            });
            // The stream's frame: kind 2, the ring attached, streamed.
            let (frame, fds) = raw_frame(&b);
            assert_eq!(frame.len(), HEADER_LEN + 24, "a ring frame");
            assert_eq!(frame[3], 2, "kind");
            assert_eq!(frame[6], ATTACHED | STREAMED, "flags");
            assert_eq!(fds.len(), 1, "the ring's memfd");
            let body_len = u64_at(&frame, 8);
            let start = u64_at(&frame, 24);
            assert!(body_len > len as u64, "the encoding of {len} bytes");
            // Nobody frees the 4 MiB ring: the sender gives up on the
            // stream and sends the value in a memfd of its own.
            let (frame, memfd) = raw_frame(&b);
            assert_eq!(frame[3], 1, "the value follows in a memfd");
            assert_eq!(memfd.len(), 1);
            assert_eq!(u64_at(&frame, 8), body_len);
            let ring = File::from(fds.into_iter().next().unwrap());
            let mut field = [0; 8];
            ring.read_exact_at(&mut field, RING_WITHDRAWN)
                .expect("read withdrawn");
            assert_eq!(u64::from_le_bytes(field), start + 1, "withdrawn");
            ring.read_exact_at(&mut field, RING_FILLED)
                .expect("read filled");
            let filled = u64::from_le_bytes(field);
            assert!(
                filled > start && filled < start + body_len,
                "filled {filled}: part of the body, never all of it"
            );
            sender
                .join()
                .expect("sender thread")
                .expect("the send succeeds");
        });
    });
}

// ------------------------------- 3. encodings that differ between passes

/// What a [`Quirky`] value does from the pass that encodes it into the
/// ring on (a large value is serialized several times: attempts that
/// overflow, a measure, then the encode into the ring; see
/// `Config::shared_ring`).
#[derive(Clone, Copy, Debug)]
enum Quirk {
    /// Nothing.
    Steady,
    /// Fails after its first field.
    Fail,
    /// Its second field grows by 1 MiB.
    Grow,
    /// Its fd field goes from `None` to `Some`.
    GainFd,
    /// The process exits after its first field.
    Exit,
    /// Panics after its first field.
    Panic,
}

/// Serializes as a [`Three`]: 3 MiB, then 64 KiB, then an optional fd.
struct Quirky {
    quirk: Quirk,
    /// The serialization that the quirk starts at.
    from: u32,
    calls: Cell<u32>,
    file: File,
}

impl Quirky {
    /// A value whose quirk starts at the encode into the ring, counted on
    /// a steady value that streams.
    fn new(quirk: Quirk) -> Quirky {
        static FROM: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
        let from = *FROM.get_or_init(|| {
            let (a, b) = SeqPacketSocket::pair().expect("socketpair");
            let tx = Sender::<Quirky>::from_socket(a, Config::new());
            let rx = Receiver::<Three>::from_socket(b, Config::new());
            let steady = Quirky::with(Quirk::Steady, u32::MAX);
            // 3 MiB and a bit: streamed, and room for all in a new ring.
            tx.send_ref(&steady).expect("send a steady value");
            rx.recv_timeout(LARGE_TIMEOUT).expect("the steady value");
            steady.calls.get()
        });
        Quirky::with(quirk, from)
    }

    fn with(quirk: Quirk, from: u32) -> Quirky {
        let mut file = tempfile::tempfile().expect("temp file");
        file.write_all(b"gained").expect("write");
        Quirky {
            quirk,
            from,
            calls: Cell::new(0),
            file,
        }
    }
}

#[derive(Serialize, Deserialize, Debug)]
struct Three {
    a: Bytes,
    b: Bytes,
    fd: Option<Fd<File>>,
}

impl Serialize for Quirky {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let call = self.calls.get() + 1;
        self.calls.set(call);
        let later = call >= self.from;
        let mut st = s.serialize_struct("Three", 3)?;
        st.serialize_field("a", &Bytes::from(patterned(1, 3 * MIB)))?;
        match (self.quirk, later) {
            (Quirk::Fail, true) => return Err(serde::ser::Error::custom("refused on purpose")),
            (Quirk::Exit, true) => std::process::exit(3),
            (Quirk::Panic, true) => panic!("a Serialize impl panicking on purpose"),
            _ => {}
        }
        let b_len = if matches!(self.quirk, Quirk::Grow) && later {
            64 * KIB + MIB
        } else {
            64 * KIB
        };
        st.serialize_field("b", &Bytes::from(patterned(2, b_len)))?;
        let fd = (matches!(self.quirk, Quirk::GainFd) && later)
            .then(|| Fd::new(self.file.try_clone().expect("dup")));
        st.serialize_field("fd", &fd)?;
        st.end()
    }
}

#[test]
fn encodings_that_change_while_streaming_are_withdrawn_never_half_delivered() {
    with_fd_baseline("quirky encodings", || {
        for quirk in [Quirk::Fail, Quirk::Grow, Quirk::GainFd] {
            let what = format!("{quirk:?}");
            let (a, b) = SeqPacketSocket::pair().expect("socketpair");
            let tx = Sender::<Quirky>::from_socket(a, Config::new());
            let rx = Receiver::<Three>::from_socket(b, Config::new());
            let sent = tx.send(Quirky::new(quirk));
            match (&sent, quirk) {
                (Err(SendError::Failed(back, ChannelError::Encode(_))), Quirk::Fail) => {
                    // The stream's pass failed, then the memfd's.
                    assert!(back.calls.get() > back.from, "{what}: one pass only");
                }
                (Ok(()), Quirk::Grow | Quirk::GainFd) => {}
                other => panic!("{what}: the send gave {other:?}"),
            }
            tx.send(Quirky::new(Quirk::Grow)).ok(); // any later value
            let first = rx.recv_timeout(LARGE_TIMEOUT).expect("receive");
            check_pattern(&first.a, 1, 3 * MIB, &what);
            match quirk {
                Quirk::Fail => {
                    // The failed value never arrived: this is the next one.
                    assert_eq!(first.b.len(), 64 * KIB + MIB, "{what}: the next value");
                }
                Quirk::Grow => check_pattern(&first.b, 2, 64 * KIB + MIB, &what),
                Quirk::GainFd => {
                    check_pattern(&first.b, 2, 64 * KIB, &what);
                    let file = first.fd.as_ref().expect("the gained fd");
                    let mut buf = [0; 6];
                    file.read_exact_at(&mut buf, 0).expect("read");
                    assert_eq!(&buf, b"gained", "{what}");
                }
                Quirk::Steady | Quirk::Exit | Quirk::Panic => unreachable!(),
            }
            drop(first);
            if !matches!(quirk, Quirk::Fail) {
                let second = rx.recv_timeout(LARGE_TIMEOUT).expect("receive");
                assert_eq!(second.b.len(), 64 * KIB + MIB, "{what}: the next value");
            }
            match rx.try_recv() {
                Err(TryRecvError::Empty) => {}
                other => panic!("{what}: a value came twice: {other:?}"),
            }
        }
    });
}

fn exiting_streamer() {
    let tx = Sender::<Quirky>::from_socket(connect_to_parent(), Config::new());
    tx.send(Quirky::new(Quirk::Steady)).expect("a first value");
    let _ = tx.send(Quirky::new(Quirk::Exit)); // exits mid-stream
    unreachable!("the process exits while it streams");
}

#[test]
fn a_sender_that_exits_mid_stream_leaves_no_value_and_the_end_of_the_channel() {
    with_fd_baseline("sender exits mid-stream", || {
        let (mut child, conn) = spawn_connected("exiting_streamer");
        let rx = Receiver::<Three>::from_socket(conn, Config::new());
        let first = rx.recv_timeout(LARGE_TIMEOUT).expect("the first value");
        check_pattern(&first.a, 1, 3 * MIB, "the first value");
        // The second value's frame came, then part of its body, then the
        // process went: its value was never sent.
        match rx.recv_timeout(LARGE_TIMEOUT) {
            Err(RecvTimeoutError::Disconnected) => {}
            other => panic!("a half-streamed value: expected Disconnected, got {other:?}"),
        }
        let status = child.wait();
        assert_eq!(status.code(), Some(3), "the child's exit");
    });
}

// --------------------------------------------- 4. hand-made streams

/// A ring made by hand, as a courier sender makes one, written through
/// `pwrite` (no mapping needed).
struct HandRing {
    file: File,
    id: u64,
}

impl HandRing {
    fn new(capacity: usize) -> HandRing {
        let file = sized_memfd(RING_CONTROL + capacity as u64, RING_SEALS);
        let id = (u64::from(std::process::id()) << 32) | 0x5157;
        file.write_all_at(&id.to_le_bytes(), 0).expect("ring id");
        HandRing { file, id }
    }

    /// Writes body bytes at data offset `offset`.
    fn put(&self, offset: usize, bytes: &[u8]) {
        self.file
            .write_all_at(bytes, RING_CONTROL + offset as u64)
            .expect("write the ring");
    }

    /// Sets a control-page field. The streams below keep every value the
    /// receiver may read mid-write within one changing byte.
    fn set(&self, field: u64, value: u64) {
        self.file
            .write_all_at(&value.to_le_bytes(), field)
            .expect("write a field");
    }

    /// A control-page field.
    fn get(&self, field: u64) -> u64 {
        let mut bytes = [0; 8];
        self.file
            .read_exact_at(&mut bytes, field)
            .expect("read a field");
        u64::from_le_bytes(bytes)
    }

    /// The first frame of a stream of `len` bytes from position 0.
    fn announce(&self, peer: &SeqPacketSocket, len: usize) {
        let frame = ring_frame(0, ATTACHED | STREAMED, len as u64, self.id, 0, 0);
        send_raw(peer, &frame, &[self.file.as_fd()]);
    }
}

/// Published in steps of 64 KiB from position 0 (only byte 2 of `filled`
/// changes), so a receiver never reads a half-written value.
const STEP: usize = 64 * KIB;

/// Receives with `timeout` on `rx` while `feed` (a hand-made peer) runs in
/// a thread until the flag it is given is set, which happens once the
/// receive has returned: the receive's result, and how long it took.
fn receive_while_fed(
    rx: &Receiver<Bytes>,
    timeout: Duration,
    feed: impl FnOnce(&std::sync::atomic::AtomicBool) + Send,
) -> (Result<Bytes, RecvTimeoutError>, Duration) {
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| feed(&stop));
        let t0 = Instant::now();
        let got = rx.recv_timeout(timeout);
        let waited = t0.elapsed();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        (got, waited)
    })
}

/// That a receive among a hand-made peer's bytes failed as stalled, and
/// within a bound on how long any peer can hold it.
fn assert_stalled_in_time(got: &Result<Bytes, RecvTimeoutError>, waited: Duration, what: &str) {
    assert!(
        matches!(
            got,
            Err(RecvTimeoutError::Failed(ChannelError::Frame(
                FrameError::Stalled { .. }
            )))
        ),
        "{what}: {got:?}"
    );
    assert!(waited < 5 * STALL, "{what} held the receive for {waited:?}");
}

/// Whether `stop` is set (see [`receive_while_fed`]).
fn stopped(stop: &std::sync::atomic::AtomicBool) -> bool {
    stop.load(std::sync::atomic::Ordering::SeqCst)
}

#[test]
fn a_receiver_waits_past_the_stall_limit_while_a_streams_bytes_keep_coming() {
    with_fd_baseline("slow steady stream", || {
        let (peer, rx) = raw_peer::<Bytes>(Config::new());
        let ring = HandRing::new(16 * MIB);
        // 15 MiB in steps of 1 MiB (only byte 2 of `filled` changes), 180 ms
        // apart: 2.7 s in all, past the 2 s stall limit, each step well
        // within it, and the whole within the 3.9 s the receiver allows a
        // body of this size (2 s, and 15 MiB at 8 MiB/s).
        let step = MIB;
        let body = body_of(&Bytes::from(patterned(9, 15 * step - 4)));
        assert_eq!(body.len(), 15 * step, "test setup: 15 whole steps");
        ring.announce(&peer, body.len());
        std::thread::scope(|s| {
            s.spawn(|| {
                for k in 1..=15 {
                    std::thread::sleep(Duration::from_millis(180));
                    ring.put((k - 1) * step, &body[(k - 1) * step..k * step]);
                    ring.set(RING_FILLED, (k * step) as u64);
                }
            });
            let t0 = Instant::now();
            let got = rx
                .recv_timeout(Duration::from_secs(20))
                .expect("the slow stream's value");
            check_pattern(&got, 9, 15 * step - 4, "slow stream");
            assert!(t0.elapsed() >= STALL, "came before it was written");
        });
    });
}

#[test]
fn a_stream_whose_bytes_stop_fails_as_stalled_and_the_channel_goes_on() {
    with_fd_baseline("stalled stream", || {
        let (peer, rx) = raw_peer::<Bytes>(Config::new());
        let ring = HandRing::new(4 * MIB);
        let body = body_of(&Bytes::from(patterned(3, 8 * STEP - 4)));
        for receive in ["recv_timeout", "try_recv"] {
            ring.announce(&peer, body.len());
            ring.put(0, &body[..STEP]);
            ring.set(RING_FILLED, STEP as u64); // then nothing more
            std::thread::sleep(Duration::from_millis(10)); // the frame is queued
            let t0 = Instant::now();
            let e = match receive {
                "recv_timeout" => match rx.recv_timeout(Duration::from_secs(20)) {
                    Err(RecvTimeoutError::Failed(e)) => e,
                    other => panic!("{receive}: {other:?}"),
                },
                _ => match rx.try_recv() {
                    Err(TryRecvError::Failed(e)) => e,
                    other => panic!("{receive}: {other:?}"),
                },
            };
            let waited = t0.elapsed();
            assert!(
                matches!(e, ChannelError::Frame(FrameError::Stalled { after }) if after == STALL),
                "{receive}: {e:?}"
            );
            assert!(
                waited >= STALL && waited < 5 * STALL,
                "{receive}: gave up after {waited:?}"
            );
            // Usable: the next frame is read.
            let next = body_of(&Bytes::from(&b"after the stall"[..]));
            send_raw(&peer, &inline_frame(0, &next), &[]);
            let got = rx.recv_timeout(RECV_TIMEOUT).expect("the next value");
            assert_eq!(&got[..], b"after the stall", "{receive}");
            ring.set(RING_FILLED, 0);
        }
    });
}

#[test]
fn a_hand_withdrawn_stream_is_skipped() {
    with_fd_baseline("hand-withdrawn stream", || {
        let (peer, rx) = raw_peer::<Bytes>(Config::new());
        let ring = HandRing::new(4 * MIB);
        let body = body_of(&Bytes::from(patterned(5, 4 * STEP - 4)));
        ring.announce(&peer, body.len());
        ring.put(0, &body[..STEP]);
        ring.set(RING_FILLED, STEP as u64);
        let next = body_of(&Bytes::from(&b"the next value"[..]));
        send_raw(&peer, &inline_frame(0, &next), &[]);
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(100));
                ring.set(RING_WITHDRAWN, 1); // the stream at position 0
            });
            let got = rx.recv_timeout(RECV_TIMEOUT).expect("the next value");
            assert_eq!(&got[..], b"the next value");
        });
    });
}

/// Withdrawn streams are skipped, but skipping them does not stretch a
/// receive's deadline: a peer that sends stream after stream and withdraws
/// the one the receiver waits for every 20 ms (50 streams, 1 s in all)
/// cannot hold `recv_timeout` past its deadline.
#[test]
fn withdrawn_streams_one_after_another_cannot_hold_a_receive_past_its_deadline() {
    with_fd_baseline("withdrawn one after another", || {
        let (peer, rx) = raw_peer::<Bytes>(Config::new());
        let ring = HandRing::new(64 * KIB);
        let len = 256;
        let streams = 50u64;
        ring.announce(&peer, len);
        for k in 1..streams {
            let frame = ring_frame(0, STREAMED, len as u64, ring.id, k * len as u64, 0);
            send_raw(&peer, &frame, &[]);
        }
        let (got, waited) = receive_while_fed(&rx, Duration::from_millis(50), |stop| {
            for _ in 0..streams {
                std::thread::sleep(Duration::from_millis(20));
                if stopped(stop) {
                    break;
                }
                // The stream the receiver is at starts where it has read
                // up to; 1 + that start, a multiple of 256 under 64 KiB:
                // only byte 1 changes.
                let at = ring.get(RING_CONSUMED);
                ring.set(RING_WITHDRAWN, at + 1);
            }
        });
        match got {
            Err(RecvTimeoutError::Timeout) => {}
            other => panic!("only withdrawn streams were sent: {other:?}"),
        }
        assert!(
            waited < Duration::from_millis(500),
            "a 50 ms receive took {waited:?} among withdrawn streams"
        );
    });
}

#[test]
fn lying_streams_get_typed_errors() {
    with_fd_baseline("lying streams", || {
        let (peer, rx) = raw_peer::<Bytes>(Config::new().limit(2 * MIB));
        let ring = HandRing::new(64 * KIB);
        // `filled` far past the body, over garbage: the body wraps the
        // 64 KiB ring 16 times, the length prefix claims more than there is.
        ring.put(0, &[0xff; 64 * KIB]);
        ring.set(RING_FILLED, u64::MAX);
        ring.announce(&peer, MIB);
        match rx.recv_timeout(RECV_TIMEOUT) {
            Err(RecvTimeoutError::Failed(ChannelError::Decode(_))) => {}
            other => panic!("garbage: {other:?}"),
        }
        // Longer than the receiver's limit: refused before any read.
        let frame = ring_frame(0, STREAMED, 3 * MIB as u64, ring.id, MIB as u64, 0);
        send_raw(&peer, &frame, &[]);
        match rx.recv_timeout(RECV_TIMEOUT) {
            Err(RecvTimeoutError::Failed(ChannelError::Frame(FrameError::TooLarge { .. }))) => {}
            other => panic!("over the limit: {other:?}"),
        }
        // Ending past u64::MAX.
        let frame = ring_frame(0, STREAMED, MIB as u64, ring.id, u64::MAX - 10, 0);
        send_raw(&peer, &frame, &[]);
        match rx.recv_timeout(RECV_TIMEOUT) {
            Err(RecvTimeoutError::Failed(ChannelError::Frame(FrameError::BadSharedMemory {
                ..
            }))) => {}
            other => panic!("past u64::MAX: {other:?}"),
        }
        // A valid stream in the same ring still works.
        let good = body_of(&Bytes::from(patterned(4, 3 * STEP / 4)));
        ring.put(0, &good);
        let frame = ring_frame(0, STREAMED, good.len() as u64, ring.id, 0, 0);
        send_raw(&peer, &frame, &[]);
        let got = rx.recv_timeout(RECV_TIMEOUT).expect("a good stream");
        check_pattern(&got, 4, 3 * STEP / 4, "after the lies");
    });
}

#[test]
fn a_serialize_impl_that_panics_mid_stream_leaves_the_ring_in_step() {
    with_fd_baseline("panic mid-stream", || {
        let (a, b) = SeqPacketSocket::pair().expect("socketpair");
        let tx = Sender::<Quirky>::from_socket(a, Config::new());
        let rx = Receiver::<Three>::from_socket(b, Config::new());
        let panicky = Quirky::new(Quirk::Panic);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = tx.send_ref(&panicky);
        }));
        assert!(panicked.is_err(), "the Serialize impl did not panic");
        assert!(
            panicky.calls.get() >= panicky.from,
            "the stream pass never ran"
        );
        // The same sender goes on: each value arrives once, whole.
        for _ in 0..3 {
            tx.send(Quirky::new(Quirk::Steady))
                .expect("send after the panic");
        }
        for k in 0..3 {
            let got = rx
                .recv_timeout(LARGE_TIMEOUT)
                .expect("a value after the panic");
            check_pattern(&got.a, 1, 3 * MIB, &format!("value {k} after the panic"));
            check_pattern(&got.b, 2, 64 * KIB, &format!("value {k} after the panic"));
        }
        match rx.try_recv() {
            Err(TryRecvError::Empty) => {}
            other => panic!("after the three values: {other:?}"),
        }
    });
}

/// Panics while it is decoded when [`TRAP`] is set: the first field of
/// [`Trapped`].
struct Trap;

static TRAP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl Serialize for Trap {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(0)
    }
}

impl<'de> Deserialize<'de> for Trap {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u8::deserialize(d)?;
        if TRAP.load(std::sync::atomic::Ordering::SeqCst) {
            panic!("a Deserialize impl panicking on purpose");
        }
        Ok(Trap)
    }
}

#[derive(Serialize, Deserialize)]
struct Trapped {
    trap: Trap,
    tag: u32,
    data: Bytes,
}

#[test]
fn a_receive_that_panics_mid_stream_gives_the_room_back() {
    with_fd_baseline("receiver panic mid-stream", || {
        let (a, b) = SeqPacketSocket::pair().expect("socketpair");
        let tx = Sender::<Trapped>::from_socket(a, Config::new());
        let rx = Receiver::<Trapped>::from_socket(b, Config::new());
        // 8 MiB through the 4 MiB ring: the sender is still writing the
        // first value when its receive panics.
        let len = 8 * MIB;
        std::thread::scope(|s| {
            s.spawn(|| {
                for tag in 0..2 {
                    let data = Bytes::from(patterned(tag, len));
                    tx.send(Trapped {
                        trap: Trap,
                        tag,
                        data,
                    })
                    .expect("send");
                }
            });
            // No panic message or backtrace for the trap: printing one can
            // take longer than the sender waits for room (100 ms), and the
            // sender would then withdraw the value, rightly, and send it
            // again another way. (The tests here run one at a time.)
            let hook = std::panic::take_hook();
            std::panic::set_hook(Box::new(|_| {}));
            TRAP.store(true, std::sync::atomic::Ordering::SeqCst);
            let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let _ = rx.recv_timeout(LARGE_TIMEOUT);
            }));
            TRAP.store(false, std::sync::atomic::Ordering::SeqCst);
            std::panic::set_hook(hook);
            assert!(panicked.is_err(), "the Deserialize impl did not panic");
            // The first value's space came back: the sender finished it, and
            // the next value is the second, not the first sent again.
            let got = rx.recv_timeout(LARGE_TIMEOUT).expect("the second value");
            assert_eq!(got.tag, 1, "the value after the panicked one");
            check_pattern(&got.data, 1, len, "the second value");
        });
        match rx.try_recv() {
            Err(TryRecvError::Empty) => {}
            other => panic!("after the second value: {:?}", other.map(|t| t.tag)),
        }
    });
}

#[test]
fn a_peer_that_drips_or_wobbles_filled_cannot_hold_a_receive() {
    with_fd_baseline("dripping and wobbling streams", || {
        let (peer, rx) = raw_peer::<Bytes>(Config::new());
        let ring = HandRing::new(32 * MIB);
        // Wobbling: `filled` goes back and forth between two values short
        // of what the receiver needs (one changing byte each time), in a
        // body that claims 200 MiB: the receiver would give it 27 s in all
        // (2 s, and 200 MiB at 8 MiB/s), but a wobble is no progress.
        let claimed = 200 * MIB;
        let mut start = postcard::to_allocvec(&((claimed - 4) as u64)).expect("varint");
        assert_eq!(start.len(), 4, "test setup: a 4-byte length");
        start.resize(STEP, 0);
        ring.announce(&peer, claimed);
        ring.put(0, &start);
        let (got, waited) = receive_while_fed(&rx, Duration::from_secs(30), |stop| {
            let until = Instant::now() + Duration::from_secs(15);
            let mut k = 0u64;
            while !stopped(stop) && Instant::now() < until {
                ring.set(RING_FILLED, 0x8000 + k % 2);
                k += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        assert_stalled_in_time(&got, waited, "a wobbling stream");
        // Dripping: a step (1 MiB in a ring this large) every 1.5 s would
        // bring the 16 MiB body in 24 s. Each step is progress, within the
        // stall limit, but the receiver gives up once the body is later
        // than the stall limit plus its length at 8 MiB/s: after 4 s.
        let body = body_of(&Bytes::from(patterned(6, 16 * MIB - 4)));
        assert_eq!(body.len(), 16 * MIB, "test setup: 16 steps");
        ring.set(RING_FILLED, 0);
        ring.put(0, &body);
        ring.announce(&peer, body.len());
        let (got, waited) = receive_while_fed(&rx, Duration::from_secs(30), |stop| {
            for k in 1..16u64 {
                if stopped(stop) {
                    break;
                }
                ring.set(RING_FILLED, k << 20); // only byte 2 changes
                std::thread::sleep(Duration::from_millis(1500));
            }
        });
        assert_stalled_in_time(&got, waited, "a dripping stream");
        assert!(
            waited > STALL + Duration::from_secs(1),
            "a dripping stream's steps were not progress: gave up after {waited:?}"
        );
    });
}

#[test]
fn a_stream_refused_unread_gives_its_room_back() {
    with_fd_baseline("refused stream", || {
        let (a, b) = SeqPacketSocket::pair().expect("socketpair");
        let tx = Sender::<Bytes>::from_socket(a, Config::new());
        // No handshake: the sender does not know the receiver's limit.
        let rx = Receiver::<Bytes>::from_socket(b, Config::new().limit(2 * MIB));
        tx.send(Bytes::from(patterned(0, 100 * KIB))).expect("send");
        check_pattern(
            &rx.recv_timeout(RECV_TIMEOUT).expect("recv"),
            0,
            100 * KIB,
            "first",
        );
        // 3 MiB: streamed, refused before a byte of it is read.
        tx.send(Bytes::from(patterned(1, 3 * MIB)))
            .expect("send 3 MiB");
        match rx.recv_timeout(LARGE_TIMEOUT) {
            Err(RecvTimeoutError::Failed(ChannelError::Frame(FrameError::TooLarge { .. }))) => {}
            other => panic!("3 MiB past a 2 MiB receiver: {:?}", other.map(|b| b.len())),
        }
        // Its space came back: twenty 1 MiB values go through the ring (and
        // nothing more arrives: the refused value is not sent again).
        for k in 0..20 {
            tx.send(Bytes::from(patterned(2 + k, MIB)))
                .expect("send 1 MiB");
            let got = rx.recv_timeout(LARGE_TIMEOUT).expect("1 MiB");
            check_pattern(&got, 2 + k, MIB, "after the refused stream");
        }
        let rings = named_memfds("courier-ring");
        let through_ring = rings.iter().map(|r| consumed_of(r.0)).max().unwrap_or(0);
        assert!(
            through_ring >= (3 + 20) * MIB as u64,
            "the ring's reader consumed {through_ring} bytes: the values after \
             the refused stream did not go through the ring"
        );
        match rx.try_recv() {
            Err(TryRecvError::Empty) => {}
            other => panic!("after the values: {:?}", other.map(|b| b.len())),
        }
    });
}

// --------------------------------------------------------------- roles

const ROLES: &[(&str, fn())] = &[
    ("small_ring_streamer", small_ring_streamer),
    ("exiting_streamer", exiting_streamer),
];

#[test]
#[ignore = "child role: run by the other tests of this file"]
fn role_entry() {
    common::run_role(ROLES)
}
