//! The shared ring of large values (wire kind 2), end to end.
//!
//! * A child process streams 300+ large values of varied sizes (wrapping the
//!   ring many times), interleaved with small values, 100 KiB strings and
//!   values holding several large fields and an fd: all arrive, in order,
//!   intact.
//! * The ring grows (4 → 16 → 64 MiB, with values sent in one piece) and
//!   the receiver keeps only the
//!   current one mapped, also when the frame that retires the old ring
//!   could not be sent (socket full) or was refused; a replaced ring is
//!   never dropped while frames naming it are still queued.
//! * Hostile raw senders (hand-made kind-2 frames, fds that are not rings,
//!   rings of the wrong size, bodies outside the ring, lying flags and fd
//!   counts, garbage, positions near `u64::MAX`, a ring rewritten while it
//!   is decoded) get typed errors, their fds closed, and the channel stays
//!   usable. A hostile receiver (impossible `consumed` counters) neither
//!   hangs nor breaks the typed sender: it falls back to per-value memfds.
//! * No self-deadlock (one thread sends 20 × 8 MiB before receiving), and
//!   `try_send`/`send_timeout` never wait on a full ring. The receive after
//!   a ring value (which polls before it sleeps) keeps its deadline, waits
//!   for a late value and sees the end of the channel.
//! * Receivers and endpoints that travel to a child with mapped rings and
//!   queued frames; ten sender processes into one receiver (more than the
//!   receiver keeps mapped), and sender processes that finish at different
//!   times; a sender SIGKILLed mid-stream; DGRAM; tiny ring caps.
//!
//! Every test holds the fd lock (so fd tables and `/proc/self/maps` are
//! this test's alone, and two big payloads are never in memory at once)
//! and checks the fd table is back to its baseline. Every process besides
//! the test's own is this test binary re-executed in a role (`role_entry`).

mod common;

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::{
    body_of, connect_to_parent, devnull, expect_frame_error, inline_frame, inode, named_mappings,
    named_memfds, raw_peer, ring_frame, send_raw, sized_memfd, spawn_connected, with_fd_baseline,
    XorShift, RECV_TIMEOUT, RING_ACKED, RING_CONSUMED, RING_CONTROL,
};
use courier_channel::{
    Bytes, ChannelError, Config, Endpoint, Fd, FrameError, Receiver, RecvError, RecvTimeoutError,
    SendTimeoutError, Sender, TryRecvError, TrySendError, HEADER_LEN, MAX_INLINE_FRAME,
};
use courier_transport::{DatagramSocket, FrameTransport, SeqPacketSocket, Wait, MAX_FDS};
use nix::fcntl::SealFlag;
use serde::{Deserialize, Serialize};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
/// Waits for values of tens of MiB (unoptimised builds copy them slowly).
const LARGE_TIMEOUT: Duration = Duration::from_secs(30);
/// The ring cap a default sender uses (and the largest ring a receiver maps).
const MAX_RING: usize = Config::DEFAULT_RING;
/// The seals a courier sender puts on its ring.
const RING_SEALS: SealFlag = SealFlag::F_SEAL_SHRINK
    .union(SealFlag::F_SEAL_GROW)
    .union(SealFlag::F_SEAL_SEAL);

// ------------------------------------------------------------ patterns

/// Payloads are 4 KiB chunks of a per-tag random block, each chunk stamped
/// with (tag, chunk number): a value from another index, a shifted,
/// repeated, stale or zeroed chunk all show up, and building and checking
/// them is a few memcpy/memcmp per chunk even in unoptimised builds.
const CHUNK: usize = 4096;

fn base_chunk(tag: u64) -> Vec<u8> {
    let mut rng = XorShift(tag.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut out = Vec::with_capacity(CHUNK);
    while out.len() < CHUNK {
        out.extend_from_slice(&rng.next().to_le_bytes());
    }
    out
}

fn stamp(tag: u64, chunk: usize) -> [u8; 8] {
    ((tag << 32) ^ chunk as u64 ^ 0x5a5a_0000_0000_a5a5).to_le_bytes()
}

/// `len` bytes of the pattern of `tag`.
fn patterned(tag: u64, len: usize) -> Bytes {
    let base = base_chunk(tag);
    let mut out = Vec::with_capacity(len);
    let mut chunk = 0;
    while out.len() < len {
        let n = (len - out.len()).min(CHUNK);
        let at = out.len();
        out.extend_from_slice(&base[..n]);
        let s = n.min(8);
        out[at..at + s].copy_from_slice(&stamp(tag, chunk)[..s]);
        chunk += 1;
    }
    Bytes::from(out)
}

/// Where `got` differs from the pattern of `tag` of `len` bytes, if it does.
fn pattern_error(got: &[u8], tag: u64, len: usize) -> Option<String> {
    if got.len() != len {
        return Some(format!("tag {tag}: {} bytes, expected {len}", got.len()));
    }
    let base = base_chunk(tag);
    for (n, chunk) in got.chunks(CHUNK).enumerate() {
        let s = chunk.len().min(8);
        if chunk[..s] != stamp(tag, n)[..s] || chunk[s..] != base[s..chunk.len()] {
            return Some(format!(
                "tag {tag}: chunk {n} (bytes {}..{}) of {len} is wrong (starts {:02x?})",
                n * CHUNK,
                n * CHUNK + chunk.len(),
                &chunk[..s]
            ));
        }
    }
    None
}

fn check_pattern(got: &[u8], tag: u64, len: usize, what: &str) {
    if let Some(e) = pattern_error(got, tag, len) {
        panic!("{what}: {e}");
    }
}

/// A string of about `len` bytes derived from `tag`, with multi-byte
/// characters.
fn text(tag: u64, len: usize) -> String {
    let unit = format!("<{tag:08}:é€ring>");
    unit.repeat(len / unit.len() + 1)
}

// ------------------------------------------------------ shared helpers

/// A tagged payload: its content is the pattern of `tag`.
#[derive(Serialize, Deserialize, Debug)]
struct Tagged {
    tag: u64,
    data: Bytes,
}

fn tagged(tag: u64, len: usize) -> Tagged {
    Tagged {
        tag,
        data: patterned(tag, len),
    }
}

fn check_tagged(got: &Tagged, tag: u64, len: usize, what: &str) {
    assert_eq!(got.tag, tag, "{what}: values out of order");
    check_pattern(&got.data, tag, len, what);
}

/// Runs `f` on a thread of its own and waits at most `limit` for it: a
/// hang fails the test (the thread is left behind) instead of hanging it.
fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (done_tx, done_rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let _ = done_tx.send(f());
    });
    match done_rx.recv_timeout(limit) {
        Ok(value) => {
            worker.join().expect("worker thread");
            value
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: did not finish within {limit:?} (hung)")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("worker ended without a result"),
        },
    }
}

/// The next frame on a raw socket: its bytes and fds (bounded wait).
fn raw_frame(sock: &SeqPacketSocket) -> (Vec<u8>, Vec<OwnedFd>) {
    let mut buf = Vec::new();
    let mut fds = Vec::new();
    let len = sock
        .recv_frame(
            &mut buf,
            MAX_INLINE_FRAME,
            &mut fds,
            MAX_FDS,
            Wait::timeout(RECV_TIMEOUT),
        )
        .expect("raw receive")
        .expect("a frame, not end of stream");
    buf.truncate(len);
    assert!(len >= HEADER_LEN, "frame of {len} bytes");
    (buf, fds)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// The courier-ring fds of this process, as (fd, inode, size).
fn ring_fds() -> Vec<(i32, u64, u64)> {
    named_memfds("courier-ring")
}

/// The courier-ring mappings of this process, as (length, inode).
fn ring_maps() -> Vec<(u64, u64)> {
    named_mappings("courier-ring")
}

/// The distinct inodes among this process's ring fds and mappings.
fn ring_inodes() -> BTreeSet<u64> {
    ring_fds()
        .iter()
        .map(|&(_, ino, _)| ino)
        .chain(ring_maps().iter().map(|&(_, ino)| ino))
        .collect()
}

/// While one sender and its receiver live in this process: both map the
/// sender's current ring, of `capacity` data bytes, and nothing else (the
/// sender unmaps a ring it replaces, the receiver one it was told to retire).
fn assert_only_current_ring(capacity: usize, what: &str) {
    let maps = ring_maps();
    let size = RING_CONTROL + capacity as u64;
    assert!(
        maps.len() == 2 && maps.iter().all(|m| m.0 == size) && ring_inodes().len() == 1,
        "{what}: expected the sender's and the receiver's mappings of the current \
         {capacity}-byte ring only; mapped (length, inode): {maps:?}"
    );
}

/// A ring memfd made by hand, as a courier sender makes one (sealed
/// against shrink and grow, a random id in its control page), read and
/// written through `pread`/`pwrite`: no mapping (and no unsafe) needed.
struct RawRing {
    file: File,
    id: u64,
    capacity: u64,
}

impl RawRing {
    fn new(capacity: usize) -> RawRing {
        Self::sealed(capacity, RING_SEALS)
    }

    fn sealed(capacity: usize, seals: SealFlag) -> RawRing {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let file = sized_memfd(RING_CONTROL + capacity as u64, seals);
        // Unique in this process, and unlike any id a real sender draws.
        let id = (u64::from(std::process::id()) << 32)
            | NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if RING_CONTROL + capacity as u64 >= 8 {
            file.write_all_at(&id.to_le_bytes(), 0)
                .expect("write the ring id");
        }
        RawRing {
            id,
            file,
            capacity: capacity as u64,
        }
    }

    /// Writes `body` at ring position `pos`.
    fn put(&self, pos: u64, body: &[u8]) {
        self.file
            .write_all_at(body, RING_CONTROL + pos % self.capacity)
            .expect("write ring");
    }

    fn consumed(&self) -> u64 {
        let mut b = [0; 8];
        self.file
            .read_exact_at(&mut b, RING_CONSUMED)
            .expect("read consumed");
        u64::from_le_bytes(b)
    }

    fn acked(&self) -> u32 {
        let mut b = [0; 4];
        self.file
            .read_exact_at(&mut b, RING_ACKED)
            .expect("read acked");
        u32::from_le_bytes(b)
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

// --------------------------------------------------------------- roles

const ROLES: &[(&str, fn())] = &[
    ("stream_sender", stream_sender),
    ("travel_receiver", travel_receiver),
    ("travel_endpoint", travel_endpoint),
    ("ring_sender", ring_sender),
    ("endless_sender", endless_sender),
];

#[test]
#[ignore = "child role: run by the other tests of this file"]
fn role_entry() {
    common::run_role(ROLES)
}

// ------------------------------------------- 1. a cross-process stream

/// One value of the stream.
#[derive(Serialize, Deserialize, Debug)]
enum Item {
    Blob { index: u32, data: Bytes },
    Small(u32),
    Text { index: u32, text: String },
    Bundle(Box<Bundle>),
}

/// Several large fields, a string and an fd in one value.
#[derive(Serialize, Deserialize, Debug)]
struct Bundle {
    index: u32,
    first: Bytes,
    name: String,
    file: Fd<File>,
    second: Bytes,
    third: Bytes,
}

const BUNDLE_SIZES: [usize; 3] = [2 * MIB, 5 * MIB, 70 * KIB];

/// What the stream holds, computed the same way by both processes.
#[derive(Clone, Copy, Debug)]
enum Planned {
    Blob(u32, usize),
    Small(u32),
    Text(u32, usize),
    Bundle(u32),
}

impl Planned {
    /// Payload bytes (roughly what the ring carries).
    fn bytes(&self) -> usize {
        match *self {
            Planned::Blob(_, len) | Planned::Text(_, len) => len,
            Planned::Small(_) => 4,
            Planned::Bundle(_) => BUNDLE_SIZES.iter().sum::<usize>() + 100 * KIB,
        }
    }
}

/// 310 blobs from 17 KiB to 20 MiB (log-uniform, plus both ends and the
/// sizes around the inline threshold), a small value after every fifth, a
/// 100 KiB string after every eighth, and three bundles.
fn stream_plan() -> Vec<Planned> {
    let mut rng = XorShift(0x0123_4567_89ab_cdef);
    let (lo, hi) = ((17 * KIB) as f64, (20 * MIB) as f64);
    let threshold = Config::DEFAULT_INLINE_THRESHOLD;
    let mut plan = Vec::new();
    let mut index = 0u32;
    let mut next = || {
        index += 1;
        index
    };
    for k in 0..310usize {
        let size = match k {
            0 => 17 * KIB,
            1 | 150 | 300 => 20 * MIB,
            2..=9 => threshold - 12 + 2 * k, // both sides of the threshold
            _ => {
                let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
                (lo * (hi / lo).powf(u)) as usize
            }
        };
        plan.push(Planned::Blob(next(), size));
        if k % 5 == 4 {
            plan.push(Planned::Small(next()));
        }
        if k % 8 == 7 {
            plan.push(Planned::Text(next(), 100 * KIB + k));
        }
        if k % 100 == 50 {
            plan.push(Planned::Bundle(next()));
        }
    }
    plan
}

fn bundle_file_text(index: u32) -> String {
    format!("the file of bundle {index}")
}

fn make_item(p: Planned) -> Item {
    match p {
        Planned::Blob(index, len) => Item::Blob {
            index,
            data: patterned(u64::from(index), len),
        },
        Planned::Small(index) => Item::Small(index),
        Planned::Text(index, len) => Item::Text {
            index,
            text: text(u64::from(index), len),
        },
        Planned::Bundle(index) => {
            let mut file = tempfile::tempfile().expect("temp file");
            file.write_all(bundle_file_text(index).as_bytes())
                .expect("write temp file");
            let tag = u64::from(index) << 8;
            Item::Bundle(Box::new(Bundle {
                index,
                first: patterned(tag, BUNDLE_SIZES[0]),
                name: text(u64::from(index), 100 * KIB),
                file: Fd::new(file),
                second: patterned(tag + 1, BUNDLE_SIZES[1]),
                third: patterned(tag + 2, BUNDLE_SIZES[2]),
            }))
        }
    }
}

fn check_item(p: Planned, got: Item, n: usize) {
    let what = format!("stream item {n} ({p:?})");
    match (p, got) {
        (Planned::Blob(index, len), Item::Blob { index: i, data }) => {
            assert_eq!(i, index, "{what}: out of order");
            check_pattern(&data, u64::from(index), len, &what);
        }
        (Planned::Small(index), Item::Small(i)) => assert_eq!(i, index, "{what}"),
        (Planned::Text(index, len), Item::Text { index: i, text: t }) => {
            assert_eq!(i, index, "{what}: out of order");
            assert!(t == text(u64::from(index), len), "{what}: text differs");
        }
        (Planned::Bundle(index), Item::Bundle(b)) => {
            assert_eq!(b.index, index, "{what}: out of order");
            let tag = u64::from(index) << 8;
            check_pattern(&b.first, tag, BUNDLE_SIZES[0], &what);
            check_pattern(&b.second, tag + 1, BUNDLE_SIZES[1], &what);
            check_pattern(&b.third, tag + 2, BUNDLE_SIZES[2], &what);
            assert!(
                b.name == text(u64::from(index), 100 * KIB),
                "{what}: name differs"
            );
            let expected = bundle_file_text(index);
            let mut buf = vec![0; expected.len()];
            b.file.read_exact_at(&mut buf, 0).expect("read bundle fd");
            assert_eq!(buf, expected.as_bytes(), "{what}: fd points elsewhere");
        }
        (p, got) => panic!("{what}: expected {p:?}, got {got:?}"),
    }
}

/// Sends the whole plan to the parent, then ends the stream.
fn stream_sender() {
    let tx = Sender::<Item>::from_socket(connect_to_parent(), Config::new());
    for p in stream_plan() {
        if let Err(e) = tx.send(make_item(p)) {
            panic!("stream sender: sending {p:?} failed: {e:?}");
        }
    }
}

#[test]
fn a_child_streams_hundreds_of_large_values_through_the_ring_in_order() {
    with_fd_baseline("stream", || {
        let plan = stream_plan();
        let total: usize = plan.iter().map(Planned::bytes).sum();
        assert!(
            total > 8 * MAX_RING,
            "test setup: {total} bytes do not wrap the largest ring many times"
        );
        eprintln!("stream: {} values, {} MiB", plan.len(), total >> 20);
        let (mut child, conn) = spawn_connected("stream_sender");
        let rx = Receiver::<Item>::from_socket(conn, Config::new());
        // The bodies go through the child's ring: the receiver maps it, and
        // nothing else. Blobs over 2 MiB stream through the first, 4 MiB
        // ring; the first bundle (about 7.2 MiB, with an fd, so it goes in
        // one piece) replaces it with a 32 MiB one.
        let mut ring_size = RING_CONTROL + 4 * MIB as u64;
        let mut ring_seen = 0;
        for (n, &p) in plan.iter().enumerate() {
            match rx.recv_timeout(LARGE_TIMEOUT) {
                Ok(item) => check_item(p, item, n),
                Err(e) => panic!("stream item {n} ({p:?}): {e:?}"),
            }
            if matches!(p, Planned::Bundle(_)) {
                ring_size = RING_CONTROL + 32 * MIB as u64;
            }
            if n % 10 == 5 {
                let rings = ring_fds();
                assert!(
                    rings.len() <= 1 && rings.iter().all(|r| r.2 == ring_size),
                    "item {n}: the receiver's ring fds (expected one of {ring_size} bytes): \
                     {rings:?}"
                );
                ring_seen += rings.len();
            }
        }
        assert!(ring_seen > 0, "the receiver never held the sender's ring");
        match rx.recv_timeout(LARGE_TIMEOUT) {
            Err(RecvTimeoutError::Disconnected) => {}
            other => panic!("after the stream: expected Disconnected, got {other:?}"),
        }
        assert!(
            ring_fds().len() <= 1,
            "rings after the stream: {:?}",
            ring_fds()
        );
        assert!(
            named_memfds("courier-body").is_empty(),
            "a body memfd stayed open"
        );
        child.wait_success();
        drop(rx);
        assert!(
            ring_maps().is_empty(),
            "a ring stayed mapped after the receiver went"
        );
    });
}

// ------------------------------------------------------ 2. ring growth

#[test]
fn a_growing_ring_leaves_only_the_current_ring_mapped_in_the_receiver() {
    with_fd_baseline("ring growth", || {
        let (tx, rx) = courier_channel::channel::<Tagged>().expect("channel");
        // 100 KiB and 1 MiB: a 4 MiB ring; 3 MiB: 16 MiB; 12 MiB: 64 MiB.
        // (A send with a deadline does not stream: its value goes in one
        // piece, in a ring four times its size.)
        let stages = [
            (100 * KIB, 4 * MIB),
            (MIB, 4 * MIB),
            (3 * MIB, 16 * MIB),
            (12 * MIB, 64 * MIB),
        ];
        let mut tag = 0;
        for (len, ring) in stages {
            for _ in 0..3 {
                tx.send_timeout(tagged(tag, len), LARGE_TIMEOUT)
                    .expect("send");
                let got = rx.recv_timeout(LARGE_TIMEOUT).expect("receive");
                check_tagged(&got, tag, len, "growth");
                tag += 1;
            }
            assert_only_current_ring(ring, &format!("after {len}-byte values"));
        }
        drop(tx);
        // The receiver alone: at most the current ring (it may let go of a
        // ring whose sender is gone), and never an old one.
        let maps = ring_maps();
        let fds = ring_fds();
        assert!(
            maps.len() <= 1 && maps.iter().all(|m| m.0 == RING_CONTROL + 64 * MIB as u64),
            "the receiver alone: at most the current ring mapped: {maps:?}"
        );
        assert_eq!(fds.len(), maps.len(), "the receiver's ring fds: {fds:?}");
        drop(rx);
        assert!(ring_maps().is_empty() && ring_fds().is_empty());
    });
}

/// A ring replaced while its first frame could not be sent (the socket
/// full): the next growth must still get the oldest ring retired.
#[test]
fn growth_while_the_socket_is_full_still_retires_the_old_ring() {
    with_fd_baseline("growth while full", || {
        let (tx, rx) = courier_channel::channel::<Tagged>().expect("channel");
        tx.send(tagged(0, 100 * KIB)).expect("send");
        check_tagged(
            &rx.recv_timeout(LARGE_TIMEOUT).expect("recv"),
            0,
            100 * KIB,
            "first",
        );
        // Fill the socket with small values.
        let mut small = 0u64;
        loop {
            match tx.try_send(tagged(1000 + small, 8)) {
                Ok(()) => small += 1,
                Err(TrySendError::Full(_)) => break,
                Err(e) => panic!("filling the socket: {e:?}"),
            }
            assert!(small < 100_000, "the socket never filled");
        }
        // Each of these makes a new ring whose first frame finds no room.
        for len in [3 * MIB, 12 * MIB] {
            match tx.try_send(tagged(1, len)) {
                Err(TrySendError::Full(back)) => check_tagged(&back, 1, len, "handed back"),
                other => panic!("{len} bytes into a full socket: {other:?}"),
            }
        }
        for k in 0..small {
            let got = rx.recv_timeout(RECV_TIMEOUT).expect("small value");
            check_tagged(&got, 1000 + k, 8, "small");
        }
        tx.send(tagged(1, 12 * MIB)).expect("send after draining");
        check_tagged(
            &rx.recv_timeout(LARGE_TIMEOUT).expect("recv"),
            1,
            12 * MIB,
            "after",
        );
        assert_only_current_ring(
            64 * MIB,
            "a ring replaced while the socket was full (its retire id was \
             overwritten before any frame carried it)",
        );
    });
}

/// The first frame of a new ring is refused (above the receiver's limit):
/// the old ring must still be retired once the new one is in use.
#[test]
fn a_refused_first_frame_of_a_new_ring_still_retires_the_old_ring() {
    with_fd_baseline("refused growth frame", || {
        let (a, b) = SeqPacketSocket::pair().expect("socketpair");
        let tx = Sender::<Tagged>::from_socket(a, Config::new());
        let rx = Receiver::<Tagged>::from_socket(b, Config::new().limit(2 * MIB));
        tx.send(tagged(0, 100 * KIB)).expect("send");
        let got = rx.recv_timeout(LARGE_TIMEOUT).expect("receive");
        check_tagged(&got, 0, 100 * KIB, "in the first ring");
        // No handshake: the sender does not know the receiver's limit.
        // (With a deadline, the value goes in one piece: in a new ring.)
        tx.send_timeout(tagged(1, 3 * MIB), LARGE_TIMEOUT)
            .expect("send 3 MiB");
        match rx.recv_timeout(LARGE_TIMEOUT) {
            Err(RecvTimeoutError::Failed(ChannelError::Frame(FrameError::TooLarge { .. }))) => {}
            other => panic!("3 MiB past a 2 MiB receiver: {other:?}"),
        }
        tx.send(tagged(2, MIB)).expect("send");
        let got = rx.recv_timeout(LARGE_TIMEOUT).expect("receive");
        check_tagged(&got, 2, MIB, "in the new ring");
        assert_only_current_ring(
            16 * MIB,
            "a ring replaced by one whose first frame (which retired it) was refused",
        );
    });
}

/// Nine sending ends on one socket (each its own ring): the receiver keeps
/// eight rings; when the ninth arrives it may drop a ring its sender has
/// replaced, but not before the frames naming it that are still queued
/// have been read.
#[test]
fn a_replaced_ring_is_not_dropped_while_frames_naming_it_are_queued() {
    with_fd_baseline("replaced ring, queued frames", || {
        let (a, b) = SeqPacketSocket::pair().expect("socketpair");
        let rx = Receiver::<Tagged>::from_socket(b, Config::new());
        let senders: Vec<Sender<Tagged>> = (0..9)
            .map(|_| Sender::from_socket(a.try_clone().expect("dup"), Config::new()))
            .collect();
        for (s, tx) in senders[..8].iter().enumerate() {
            tx.send(tagged(s as u64, 100 * KIB)).expect("send");
            let got = rx.recv_timeout(LARGE_TIMEOUT).expect("receive");
            check_tagged(&got, s as u64, 100 * KIB, "one value per sender");
        }
        assert_eq!(ring_fds().len(), 16, "eight rings, mapped on both sides");
        // Queued, in this order: the ninth ring's first frame; a frame of
        // sender 0 in its (acknowledged, so not re-sent) ring; sender 0's
        // growth, which closes that ring.
        senders[8].send(tagged(8, 100 * KIB)).expect("ninth ring");
        senders[0]
            .send(tagged(100, 100 * KIB))
            .expect("in the old ring");
        senders[0]
            .send_timeout(tagged(101, 3 * MIB), LARGE_TIMEOUT)
            .expect("growth (in one piece: a send with a deadline)");
        for (tag, len) in [(8, 100 * KIB), (100, 100 * KIB), (101, 3 * MIB)] {
            match rx.recv_timeout(LARGE_TIMEOUT) {
                Ok(got) => check_tagged(&got, tag, len, "queued behind the ninth ring"),
                Err(e) => panic!(
                    "value {tag}, queued in a ring its sender had just replaced, \
                     was lost: {e:?}"
                ),
            }
        }
    });
}

// ---------------------------------------------- 3. hostile raw senders

#[test]
fn hostile_ring_frames_are_refused_typed_and_close_their_fds() {
    with_fd_baseline("hostile ring frames", || {
        let limit = MIB;
        let (peer, rx) = raw_peer::<Bytes>(Config::new().limit(limit));
        let ring = RawRing::new(64 * KIB);
        let good = body_of(&Bytes::from(&b"from a hand-made ring"[..]));
        let glen = good.len() as u64;
        ring.put(0, &good);
        let other = RawRing::new(64 * KIB);
        other.put(0, &good);
        let unsealed = RawRing::sealed(64 * KIB, SealFlag::empty());
        let shrink_only = RawRing::sealed(64 * KIB, SealFlag::F_SEAL_SHRINK);
        let too_small = RawRing::new(4095);
        let too_large = RawRing::new(MAX_RING + 4096);
        let dev = devnull();
        let (pipe_r, pipe_w) = std::io::pipe().expect("pipe");
        let frame = |fds: u16, flags: u8, len: u64, id: u64, start: u64| {
            ring_frame(fds, flags, len, id, start, 0)
        };
        let refused = |what: &str, frame: Vec<u8>, fds: &[BorrowedFd<'_>]| {
            expect_frame_error(&rx, what, || send_raw(&peer, &frame, fds))
        };
        let bad_memory = |what: &str, e: FrameError| {
            assert!(
                matches!(e, FrameError::BadSharedMemory { .. }),
                "{what}: expected BadSharedMemory, got {e:?}"
            )
        };

        let e = refused("unknown ring, no fd", frame(0, 0, glen, ring.id, 0), &[]);
        bad_memory("unknown ring", e);
        for (what, fd, id) in [
            ("/dev/null as the ring", dev.as_fd(), ring.id),
            ("a pipe as the ring", pipe_r.as_fd(), inode(&pipe_r)),
            ("an unsealed memfd", unsealed.fd(), unsealed.id),
            (
                "a memfd sealed against shrinking only",
                shrink_only.fd(),
                shrink_only.id,
            ),
            ("a ring that is not the one named", other.fd(), ring.id),
            ("the named ring's inode, another fd", ring.fd(), other.id),
            ("a ring below 4 KiB of data", too_small.fd(), too_small.id),
            ("a ring above 64 MiB of data", too_large.fd(), too_large.id),
        ] {
            bad_memory(what, refused(what, frame(0, 1, glen, id, 0), &[fd]));
        }
        // (what, user fds declared, flags, fds sent, declared, received)
        let counts = [
            ("attached flag, no fd", 0, 1, vec![], 1, 0),
            (
                "one user fd declared, only the ring sent",
                1,
                1,
                vec![ring.fd()],
                2,
                1,
            ),
            (
                "an fd without the attached flag",
                0,
                0,
                vec![ring.fd()],
                0,
                1,
            ),
            (
                "user fd and ring, three sent",
                1,
                1,
                vec![dev.as_fd(), pipe_w.as_fd(), ring.fd()],
                2,
                3,
            ),
        ];
        for (what, user_fds, flags, sent, declared, received) in counts {
            let e = refused(what, frame(user_fds, flags, glen, ring.id, 0), &sent);
            assert_eq!(
                e,
                FrameError::FdCountMismatch { declared, received },
                "{what}"
            );
        }
        for flags in [0x04, 0x80, 0x83, 0xff] {
            let e = refused(
                &format!("flags {flags:#04x}"),
                frame(0, flags, glen, ring.id, 0),
                &[ring.fd()],
            );
            assert_eq!(e, FrameError::ReservedBitsSet, "flags {flags:#04x}");
        }
        let mut reserved = frame(0, 1, glen, ring.id, 0);
        reserved[7] = 1;
        assert_eq!(
            refused("reserved byte 7 set", reserved, &[ring.fd()]),
            FrameError::ReservedBitsSet
        );
        let long = frame(0, 1, glen, ring.id, 0);
        for cut in [long[..long.len() - 1].to_vec(), [&long[..], &[0]].concat()] {
            let e = refused("ring fields of the wrong length", cut, &[ring.fd()]);
            assert!(matches!(e, FrameError::BodyLengthMismatch { .. }), "{e:?}");
        }
        let e = refused(
            "a body above the receiver's limit",
            frame(0, 1, limit as u64 + 1, ring.id, 0),
            &[ring.fd()],
        );
        assert_eq!(
            e,
            FrameError::TooLarge {
                size: limit as u64 + 1,
                limit
            }
        );

        // None of that adopted the ring: a good frame does, and acks it.
        let before_adoption = common::fd_table();
        send_raw(&peer, &frame(0, 1, glen, ring.id, 0), &[ring.fd()]);
        let got = rx.recv_timeout(RECV_TIMEOUT).expect("a good ring frame");
        assert_eq!(&got[..], b"from a hand-made ring");
        assert_eq!(ring.acked(), 1, "the receiver did not ack the ring");
        assert_eq!(
            ring.consumed(),
            glen,
            "the receiver did not release the body"
        );
        let with_ring = common::fd_table();
        assert_eq!(
            with_ring.len(),
            before_adoption.len() + 1,
            "the ring is kept"
        );

        let cap = ring.capacity;
        for (what, start, len) in [
            ("a body longer than the ring", 0, cap + 1),
            ("a body crossing the ring's end", cap - 10, 20),
            ("a body crossing the end, a lap later", 7 * cap - 1, 2),
            ("a body starting at the end", cap, cap + 1),
        ] {
            bad_memory(what, refused(what, frame(0, 0, len, ring.id, start), &[]));
        }
        // Positions count laps: the same place five laps on is fine.
        send_raw(&peer, &frame(0, 0, glen, ring.id, 5 * cap), &[]);
        assert_eq!(
            &rx.recv_timeout(RECV_TIMEOUT).expect("a later lap")[..],
            b"from a hand-made ring"
        );

        // Garbage bodies: a value or a typed error, never a panic.
        let mut rng = XorShift(0x6a72_6261_6765_0001);
        let (mut values, mut errors) = (0, 0);
        for _ in 0..300 {
            let len = 1 + rng.below(2000);
            let start = rng.below(cap - len);
            let mut body = rng.bytes(len as usize);
            if rng.below(2) == 0 {
                body[0] = (len - 1).min(127) as u8; // a plausible length prefix
            }
            ring.put(start, &body);
            send_raw(&peer, &frame(0, 0, len, ring.id, start), &[]);
            match rx.recv_timeout(RECV_TIMEOUT) {
                Ok(v) => {
                    assert!(
                        v.len() < len as usize,
                        "decoded more bytes than the body has"
                    );
                    values += 1;
                }
                Err(RecvTimeoutError::Failed(ChannelError::Frame(_) | ChannelError::Decode(_))) => {
                    errors += 1
                }
                Err(e) => panic!("garbage ring body: untyped failure {e:?}"),
            }
        }
        assert!(values > 0 && errors > 0, "values {values}, errors {errors}");
        common::assert_fds_back(&with_ring, "garbage ring bodies");

        ring.put(0, &good);
        let e = refused(
            "a user fd the value does not use",
            frame(1, 0, glen, ring.id, 0),
            &[dev.as_fd()],
        );
        assert!(matches!(e, FrameError::FdsLeftOver { .. }), "{e:?}");
        // The ring sent again with a frame of a ring already kept: the copy
        // is closed, the value arrives.
        send_raw(&peer, &frame(0, 1, glen, ring.id, 0), &[ring.fd()]);
        assert_eq!(
            &rx.recv_timeout(RECV_TIMEOUT).expect("resent ring")[..],
            b"from a hand-made ring"
        );
        common::assert_fds_back(&with_ring, "a ring fd sent again");
        // A refused frame retires nothing: one naming an unknown ring and
        // retiring this one leaves it mapped.
        send_raw(&peer, &ring_frame(0, 0, glen, other.id, 0, ring.id), &[]);
        match rx.recv_timeout(RECV_TIMEOUT) {
            Err(RecvTimeoutError::Failed(ChannelError::Frame(e))) => bad_memory("retire", e),
            other => panic!("retiring the ring, naming an unknown one: {other:?}"),
        }
        common::assert_fds_back(&with_ring, "a refused retiring frame");
        // A valid frame that retires the ring drops it (and its fd); the
        // ring is then unknown until sent again.
        send_raw(
            &peer,
            &ring_frame(0, 1, glen, other.id, 0, ring.id),
            &[other.fd()],
        );
        assert_eq!(
            &rx.recv_timeout(RECV_TIMEOUT).expect("the retiring value")[..],
            b"from a hand-made ring"
        );
        let with_other = common::fd_table();
        assert_eq!(
            with_other.len(),
            before_adoption.len() + 1,
            "the retired ring's fd stays open, or the new ring's is missing"
        );
        bad_memory(
            "a retired ring",
            refused("a retired ring", frame(0, 0, glen, ring.id, 0), &[]),
        );
        common::assert_fds_back(&with_other, "a frame naming a retired ring");
        send_raw(&peer, &frame(0, 1, glen, ring.id, 0), &[ring.fd()]);
        assert_eq!(
            &rx.recv_timeout(RECV_TIMEOUT).expect("ring again")[..],
            b"from a hand-made ring"
        );

        // Still usable: an inline value, and a real sender's ring value.
        send_raw(
            &peer,
            &inline_frame(0, &body_of(&Bytes::from(&b"inline"[..]))),
            &[],
        );
        assert_eq!(
            &rx.recv_timeout(RECV_TIMEOUT).expect("inline")[..],
            b"inline"
        );
        let tx = Sender::<Bytes>::from_socket(peer.try_clone().expect("dup"), Config::new());
        tx.send(patterned(7, 300 * KIB)).expect("typed send");
        let got = rx
            .recv_timeout(LARGE_TIMEOUT)
            .expect("a typed sender's ring value");
        check_pattern(&got, 7, 300 * KIB, "after the hostile frames");
    });
}

/// The ring sizes a receiver accepts: 4 KiB to 64 MiB of data, both
/// included.
#[test]
fn rings_of_the_smallest_and_largest_accepted_sizes_work() {
    with_fd_baseline("ring size bounds", || {
        for capacity in [4096, MAX_RING] {
            let (peer, rx) = raw_peer::<Bytes>(Config::new());
            let ring = RawRing::new(capacity);
            let body = body_of(&patterned(3, 3000));
            let start = 3 * capacity as u64 + (capacity - body.len()) as u64;
            ring.put(start, &body);
            let frame = ring_frame(0, 1, body.len() as u64, ring.id, start, 0);
            send_raw(&peer, &frame, &[ring.fd()]);
            match rx.recv_timeout(RECV_TIMEOUT) {
                Ok(got) => check_pattern(&got, 3, 3000, "ring bounds"),
                Err(e) => panic!("a ring of {capacity} data bytes was refused: {e:?}"),
            }
        }
    });
}

/// A frame whose start position is near `u64::MAX` with its body inside
/// the ring: the end position `start + len` does not fit a u64.
#[test]
fn a_ring_frame_ending_past_u64_max_gives_no_panic() {
    with_fd_baseline("ring position overflow", || {
        let (peer, rx) = raw_peer::<Bytes>(Config::new());
        let ring = RawRing::new(4096);
        let body = body_of(&Bytes::from(&b"abc"[..]));
        ring.put(0, &body);
        send_raw(&peer, &ring_frame(0, 1, 4, ring.id, 0, 0), &[ring.fd()]);
        assert_eq!(&rx.recv_timeout(RECV_TIMEOUT).expect("adopt")[..], b"abc");
        let mut panics = Vec::new();
        for start in [u64::MAX - 3, u64::MAX - 1, u64::MAX] {
            ring.put(start, &body[..(4096 - start % 4096).min(4) as usize]);
            let len = (4096 - start % 4096).min(4);
            send_raw(&peer, &ring_frame(0, 0, len, ring.id, start, 0), &[]);
            let got = catch_unwind(AssertUnwindSafe(|| rx.recv_timeout(RECV_TIMEOUT)));
            match got {
                Ok(Ok(_) | Err(RecvTimeoutError::Failed(_))) => {}
                Ok(Err(e)) => panic!("start {start:#x}: untyped failure {e:?}"),
                Err(panic) => panics.push(format!(
                    "start {start:#x} len {len}: {}",
                    panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default()
                )),
            }
        }
        send_raw(&peer, &inline_frame(0, &body), &[]);
        assert_eq!(
            &rx.recv_timeout(RECV_TIMEOUT).expect("still usable")[..],
            b"abc"
        );
        assert!(panics.is_empty(), "the receiver panicked: {panics:?}");
    });
}

/// The peer keeps rewriting the ring while the receiver decodes strings
/// out of it: each result is a string of the characters the peer wrote,
/// or a typed error.
#[test]
fn a_ring_rewritten_during_decoding_gives_valid_strings_or_typed_errors() {
    with_fd_baseline("ring rewritten while read", || {
        let (peer, rx) = raw_peer::<String>(Config::new());
        let ring = RawRing::new(64 * KIB);
        const BODY: usize = 1002;
        let variants: Vec<Vec<u8>> = {
            let with = |prefix: &[u8], fill: &[u8]| {
                let mut v = prefix.to_vec();
                while v.len() < BODY {
                    v.extend_from_slice(fill);
                }
                v.truncate(BODY);
                v
            };
            vec![
                with(&[0xe8, 0x07], b"a"),           // 1000 × 'a'
                with(&[0xe8, 0x07], b"b"),           // 1000 × 'b'
                with(&[0xe8, 0x07], "é".as_bytes()), // 500 × 'é'
                with(&[0xe8, 0x07], &[0xff]),        // invalid UTF-8
                with(&[0xe0, 0xd4, 0x03], b"a"),     // 60000 bytes: too long
                with(&[0xf4, 0x03], b"c"),           // 500 × 'c', trailing bytes
                with(&[0xff; 10], b"a"),             // a broken varint
                with(&[0xe8, 0x07], &[0xc3]),        // truncated sequences
            ]
        };
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let file = ring.file.try_clone().expect("dup ring");
            let variants = variants.clone();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut rng = XorShift(0x7772_6974_6572_0001);
                let mut writes = 0u64;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    // Two halves from different variants: torn bodies too.
                    let a = &variants[rng.below(variants.len() as u64) as usize];
                    let b = &variants[rng.below(variants.len() as u64) as usize];
                    let cut = rng.below(BODY as u64) as usize;
                    file.write_all_at(&a[..cut], RING_CONTROL).expect("rewrite");
                    file.write_all_at(&b[cut..], RING_CONTROL + cut as u64)
                        .expect("rewrite");
                    writes += 1;
                }
                writes
            })
        };
        // A torn length prefix can leave its last byte (0x03) in the text.
        let allowed = |c: char| matches!(c, 'a' | 'b' | 'c' | 'é' | '\u{3}');
        let (mut values, mut errors) = (0, 0);
        for i in 0..1500 {
            ring.put(0, &variants[i % variants.len()]);
            let flags = u8::from(i == 0);
            let fds: &[BorrowedFd<'_>] = if i == 0 { &[ring.fd()] } else { &[] };
            send_raw(
                &peer,
                &ring_frame(0, flags, BODY as u64, ring.id, 0, 0),
                fds,
            );
            match rx.recv_timeout(RECV_TIMEOUT) {
                Ok(s) => {
                    assert!(s.len() <= 1000, "frame {i}: a {}-byte string", s.len());
                    assert!(s.chars().all(allowed), "frame {i}: {s:?}");
                    values += 1;
                }
                Err(RecvTimeoutError::Failed(ChannelError::Frame(_) | ChannelError::Decode(_))) => {
                    errors += 1
                }
                Err(e) => panic!("frame {i}: untyped failure {e:?}"),
            }
        }
        stop.store(true, Ordering::Relaxed);
        let writes = writer.join().expect("writer thread");
        assert!(writes > 0, "the writer never ran");
        assert!(values > 0 && errors > 0, "values {values}, errors {errors}");
        send_raw(&peer, &inline_frame(0, &body_of(&"after".to_string())), &[]);
        assert_eq!(
            rx.recv_timeout(RECV_TIMEOUT).expect("still usable"),
            "after"
        );
    });
}

// ---------------------------------------------- 4. a hostile receiver

/// The first frame of a typed sender to a raw peer: the ring (the frame's
/// last fd), the body's start and length, after checking the body is
/// readable by the peer.
fn first_ring_frame(raw: &SeqPacketSocket, tag: u64, len: usize) -> (File, u64, u64) {
    let (frame, mut fds) = raw_frame(raw);
    assert_eq!(frame[3], 2, "a large value's frame is not a ring frame");
    assert_eq!(frame[6], 1, "the first ring frame does not carry the ring");
    assert_eq!(fds.len(), 1, "ring frame fds");
    let ring = File::from(fds.pop().expect("ring fd"));
    let mut id = [0u8; 8];
    ring.read_exact_at(&mut id, 0).expect("read the ring id");
    assert_eq!(
        u64_at(&frame, 16),
        u64::from_le_bytes(id),
        "the frame's ring id is not the one in the ring"
    );
    let (body_len, start) = (u64_at(&frame, 8), u64_at(&frame, 24));
    let mut body = vec![0; body_len as usize];
    ring.read_exact_at(&mut body, RING_CONTROL + start)
        .expect("read the body");
    let value: Tagged = postcard::from_bytes(&body).expect("decode the body by hand");
    check_tagged(&value, tag, len, "read by the raw peer");
    (ring, start, body_len)
}

/// The value of a frame read by a raw peer: kind 1 (its own memfd) or 2 (in
/// `ring`), checked; returns the kind.
fn raw_value(raw: &SeqPacketSocket, ring: &File, tag: u64, len: usize) -> u8 {
    let (frame, mut fds) = raw_frame(raw);
    let body = match frame[3] {
        1 => {
            assert_eq!(fds.len(), 1, "a memfd frame's fds");
            let memfd = File::from(fds.pop().expect("memfd"));
            let seals =
                nix::fcntl::fcntl(&memfd, nix::fcntl::FcntlArg::F_GET_SEALS).expect("F_GET_SEALS");
            assert!(
                SealFlag::from_bits_retain(seals).contains(SealFlag::F_SEAL_WRITE),
                "a body memfd that is not sealed"
            );
            let mut body = vec![0; u64_at(&frame, 8) as usize];
            memfd.read_exact_at(&mut body, 0).expect("read memfd");
            body
        }
        2 => {
            let mut body = vec![0; u64_at(&frame, 8) as usize];
            ring.read_exact_at(&mut body, RING_CONTROL + u64_at(&frame, 24))
                .expect("read ring");
            body
        }
        other => panic!("frame kind {other} for a {len}-byte value"),
    };
    let value: Tagged = postcard::from_bytes(&body).expect("decode by hand");
    check_tagged(&value, tag, len, "read by the raw peer");
    frame[3]
}

#[test]
fn a_receiver_writing_impossible_counters_gets_memfd_frames_and_no_hang() {
    with_fd_baseline("hostile receiver", || {
        for (what, poison) in [
            ("u64::MAX", None),
            ("one past what was written", Some(1)),
            ("a lap past what was written", Some(4 * MIB as u64)),
        ] {
            let (a, raw) = SeqPacketSocket::pair().expect("socketpair");
            let tx = Sender::<Tagged>::from_socket(a, Config::new());
            tx.send(tagged(0, MIB)).expect("first send");
            let (ring, start, len) = first_ring_frame(&raw, 0, MIB);
            let consumed = poison.map_or(u64::MAX, |p| start + len + p);
            ring.write_all_at(&consumed.to_le_bytes(), RING_CONSUMED)
                .expect("poison consumed");
            for tag in 1..=4 {
                let tx2 = tx.clone();
                within(Duration::from_secs(10), what, move || {
                    tx2.send(tagged(tag, MIB)).map_err(|e| format!("{e:?}"))
                })
                .unwrap_or_else(|e| panic!("{what}: send {tag} failed: {e}"));
                let kind = raw_value(&raw, &ring, tag, MIB);
                assert_eq!(kind, 1, "{what}: value {tag} still went into the ring");
            }
            tx.send(tagged(9, 10)).expect("small send");
            let (frame, fds) = raw_frame(&raw);
            assert_eq!((frame[3], fds.len()), (0, 0), "{what}: small value");
        }
    });
}

/// A receiver that acknowledges the ring but never frees anything: the
/// ring fills, and later values wait a little, then take memfds.
#[test]
fn a_receiver_that_never_frees_the_ring_gets_memfd_frames_and_no_hang() {
    with_fd_baseline("receiver that never frees", || {
        let (a, raw) = SeqPacketSocket::pair().expect("socketpair");
        let tx = Sender::<Tagged>::from_socket(a, Config::new());
        tx.send(tagged(0, MIB)).expect("first send");
        let (ring, _, body_len) = first_ring_frame(&raw, 0, MIB);
        ring.write_all_at(&1u32.to_le_bytes(), RING_ACKED)
            .expect("ack");
        // Four times the value, rounded up to a power of two: 8 MiB.
        let capacity = ring.metadata().expect("fstat ring").len() - RING_CONTROL;
        let fit = capacity / body_len;
        assert!(fit >= 3, "test setup: a {capacity}-byte ring");
        let mut kinds = Vec::new();
        for tag in 1..=fit + 2 {
            let tx2 = tx.clone();
            within(Duration::from_secs(10), "full ring", move || {
                tx2.send(tagged(tag, MIB)).map_err(|e| format!("{e:?}"))
            })
            .unwrap_or_else(|e| panic!("send {tag} failed: {e}"));
            kinds.push(raw_value(&raw, &ring, tag, MIB));
        }
        // The ring fills (with the first value, `fit` bodies), then memfds.
        let mut expected = vec![2; fit as usize - 1];
        expected.extend([1, 1, 1]);
        assert_eq!(kinds, expected, "frame kinds as the ring filled");
    });
}

// --------------------------------------------- 5. no self-deadlock

#[test]
fn one_thread_sends_twenty_8_mib_values_before_receiving_any() {
    with_fd_baseline("no self-deadlock", || {
        let (tx, rx) = courier_channel::channel::<Tagged>().expect("channel");
        let took = within(
            Duration::from_secs(10),
            "20 × 8 MiB sent before any receive",
            move || {
                let t0 = Instant::now();
                for tag in 0..20 {
                    tx.send(tagged(tag, 8 * MIB)).expect("send");
                }
                let sent = t0.elapsed();
                for tag in 0..20 {
                    let got = rx.recv_timeout(LARGE_TIMEOUT).expect("receive");
                    check_tagged(&got, tag, 8 * MIB, "sent before receiving");
                }
                sent
            },
        );
        assert!(took < Duration::from_secs(10), "sending took {took:?}");
    });
}

// ------------------------------------ 6. try_send and send_timeout

/// Generous: a call that waited for the ring to drain would never return.
const NO_WAIT: Duration = Duration::from_millis(250);

#[test]
fn try_send_never_waits_on_a_full_ring() {
    with_fd_baseline("try_send on a full ring", || {
        let (tx, rx) = courier_channel::channel::<Tagged>().expect("channel");
        let len = 100 * KIB;
        let mut sent = 0u64;
        let mut slowest = Duration::ZERO;
        let mut after_ring_full = Duration::ZERO;
        let deadline = Instant::now() + Duration::from_secs(20);
        // Nobody receives: the ring fills (about 40 values), then values go
        // in memfds until the socket is full.
        loop {
            assert!(Instant::now() < deadline, "the channel never filled");
            let t0 = Instant::now();
            let result = tx.try_send(tagged(sent, len));
            let took = t0.elapsed();
            slowest = slowest.max(took);
            if sent >= 45 {
                after_ring_full += took;
            }
            assert!(took < NO_WAIT, "try_send {sent} took {took:?}");
            match result {
                Ok(()) => sent += 1,
                Err(TrySendError::Full(back)) => {
                    check_tagged(&back, sent, len, "handed back by try_send");
                    break;
                }
                Err(e) => panic!("try_send {sent}: {e:?}"),
            }
        }
        assert!(
            sent > 50,
            "only {sent} values before Full: the ring did not fill first"
        );
        // The ring holds about 40 of them; every later call found it full.
        // Had each waited the ring's 10 ms for room, these would add up.
        let full_calls = sent - 45;
        assert!(
            after_ring_full < Duration::from_millis(5 * full_calls),
            "{full_calls} try_sends on a full ring took {after_ring_full:?}: they wait for room"
        );
        for _ in 0..10 {
            let t0 = Instant::now();
            assert!(matches!(
                tx.try_send(tagged(sent, len)),
                Err(TrySendError::Full(_))
            ));
            assert!(t0.elapsed() < NO_WAIT, "try_send on a full channel waited");
        }
        let t0 = Instant::now();
        match tx.send_timeout(tagged(sent, len), Duration::from_millis(30)) {
            Err(SendTimeoutError::Timeout(back)) => check_tagged(&back, sent, len, "timed out"),
            other => panic!("send_timeout on a full channel: {other:?}"),
        }
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "send_timeout(30 ms) took {:?}",
            t0.elapsed()
        );
        for tag in 0..sent {
            let got = rx.recv_timeout(LARGE_TIMEOUT).expect("receive");
            check_tagged(&got, tag, len, "sent by try_send");
        }
        tx.try_send(tagged(sent, len))
            .expect("try_send after draining");
        check_tagged(
            &rx.recv_timeout(RECV_TIMEOUT).expect("recv"),
            sent,
            len,
            "after",
        );
        eprintln!("try_send: {sent} values before Full, slowest call {slowest:?}");
    });
}

/// A blocking `send` stuck on a full socket (holding the ring, maybe):
/// `try_send` and `send_timeout` from another thread still return.
#[test]
fn try_send_and_send_timeout_do_not_wait_behind_a_blocked_send() {
    with_fd_baseline("behind a blocked send", || {
        let (tx, rx) = courier_channel::channel::<Tagged>().expect("channel");
        let mut small = 0u64;
        while tx.try_send(tagged(small, 8)).is_ok() {
            small += 1;
            assert!(small < 100_000, "the socket never filled");
        }
        let blocked = {
            let tx = tx.clone();
            std::thread::spawn(move || {
                tx.send(tagged(1_000_000, MIB))
                    .map_err(|e| format!("{e:?}"))
            })
        };
        std::thread::sleep(Duration::from_millis(50)); // let it block, likely
        for k in 0..5 {
            let t0 = Instant::now();
            let r = tx.try_send(tagged(2_000_000 + k, 200 * KIB));
            assert!(t0.elapsed() < NO_WAIT, "try_send waited {:?}", t0.elapsed());
            assert!(
                matches!(r, Err(TrySendError::Full(_))),
                "try_send {k}: {r:?}"
            );
            let t0 = Instant::now();
            let r = tx.send_timeout(tagged(3_000_000 + k, 200 * KIB), Duration::from_millis(30));
            assert!(
                t0.elapsed() < Duration::from_secs(2),
                "send_timeout waited {:?}",
                t0.elapsed()
            );
            assert!(
                matches!(r, Err(SendTimeoutError::Timeout(_))),
                "send_timeout {k}: {r:?}"
            );
        }
        let mut got_small = 0;
        let mut got_large = false;
        let deadline = Instant::now() + LARGE_TIMEOUT;
        while got_small < small || !got_large {
            assert!(Instant::now() < deadline, "values missing");
            let v = rx.recv_timeout(LARGE_TIMEOUT).expect("receive");
            if v.tag == 1_000_000 {
                check_tagged(&v, 1_000_000, MIB, "the blocked send");
                got_large = true;
            } else {
                check_tagged(&v, got_small, 8, "small");
                got_small += 1;
            }
        }
        within(Duration::from_secs(10), "the blocked send", move || {
            blocked.join()
        })
        .expect("blocked sender thread")
        .expect("the blocked send");
    });
}

// ------------------------------------------------------ 7. travel

#[derive(Serialize, Deserialize)]
enum Handover {
    /// With ballast: the handover itself is large, so it travels through
    /// the control connection's own ring, ring fds inside.
    Receiver(Receiver<Tagged>, Bytes),
    Endpoint(Endpoint<Tagged, Tagged>, Bytes),
}

/// The ballast of a handover.
const BALLAST: (u64, usize) = (77, 300 * KIB);

/// What a child reports: the tags it received in order, its error if any.
#[derive(Serialize, Deserialize, Debug, Default)]
struct Report {
    tags: Vec<u64>,
    error: Option<String>,
}

/// The size of travelling value `tag` (a few grow the ring).
fn travel_size(tag: u64) -> usize {
    match tag {
        15 => 3 * MIB,
        17 => 12 * MIB,
        _ => [300 * KIB, 700 * KIB, MIB - 5, 80 * KIB][tag as usize % 4],
    }
}

/// The last value of a stream to an endpoint (which has no end of stream).
const END: u64 = u64::MAX;
/// The values a child's endpoint sends back.
const ECHO_TAGS: std::ops::Range<u64> = 100..106;

/// Receives values on `next` until the end marker or end of stream,
/// checking each; `None` after an error (recorded in `report`).
fn drain(
    report: &mut Report,
    mut next: impl FnMut() -> Result<Tagged, RecvTimeoutError>,
) -> Option<()> {
    loop {
        match next() {
            Ok(t) if t.tag == END => return Some(()),
            Ok(t) => {
                if let Some(e) = pattern_error(&t.data, t.tag, travel_size(t.tag)) {
                    report.error = Some(e);
                    return None;
                }
                report.tags.push(t.tag);
            }
            Err(RecvTimeoutError::Disconnected) => return Some(()),
            Err(e) => {
                report.error = Some(format!("after {:?}: {e:?}", report.tags));
                return None;
            }
        }
    }
}

/// The child's side of a handover: the control endpoint, what the parent
/// handed over, and a report that already says whether the ballast that
/// came with it is intact.
fn take_handover() -> (Endpoint<Report, Handover>, Handover, Report) {
    let conn = connect_to_parent();
    let ctl = Endpoint::<Report, Handover>::from_socket(conn, Config::new());
    let handover = ctl.recv_timeout(LARGE_TIMEOUT).expect("handover");
    let ballast = match &handover {
        Handover::Receiver(_, ballast) | Handover::Endpoint(_, ballast) => ballast,
    };
    let report = Report {
        error: pattern_error(ballast, BALLAST.0, BALLAST.1),
        ..Report::default()
    };
    (ctl, handover, report)
}

fn travel_receiver() {
    let (ctl, handover, mut report) = take_handover();
    let Handover::Receiver(rx, _) = handover else {
        panic!("expected a receiver")
    };
    drain(&mut report, || rx.recv_timeout(LARGE_TIMEOUT));
    ctl.send(report).expect("report");
}

fn travel_endpoint() {
    let (ctl, handover, mut report) = take_handover();
    let Handover::Endpoint(ep, _) = handover else {
        panic!("expected an endpoint")
    };
    if drain(&mut report, || ep.recv_timeout(LARGE_TIMEOUT)).is_some() {
        for tag in ECHO_TAGS {
            if let Err(e) = ep.send(tagged(tag, travel_size(tag))) {
                report.error = Some(format!("echo {tag}: {e:?}"));
                break;
            }
        }
    }
    ctl.send(report).expect("report");
    // Stay until the parent has read the echoes (they live in this
    // process's ring, readable after it exits too, but be polite).
    let _ = ctl.recv_timeout(LARGE_TIMEOUT);
}

fn check_report(report: Report, from: u64, to: u64) {
    assert!(report.error.is_none(), "the child: {:?}", report.error);
    assert_eq!(
        report.tags,
        (from..to).collect::<Vec<_>>(),
        "tags the child received"
    );
}

#[test]
fn a_receiver_with_a_mapped_ring_and_queued_values_travels_to_a_child() {
    with_fd_baseline("travelling receiver", || {
        let (mut child, conn) = spawn_connected("travel_receiver");
        let ctl = Endpoint::<Handover, Report>::from_socket(conn, Config::new());
        let (tx, rx) = courier_channel::channel::<Tagged>().expect("channel");
        for tag in 0..4 {
            tx.send(tagged(tag, travel_size(tag))).expect("send");
        }
        for tag in 0..2 {
            let got = rx.recv_timeout(LARGE_TIMEOUT).expect("receive here");
            check_tagged(&got, tag, travel_size(tag), "before travel");
        }
        // The ring is mapped and acknowledged: these frames do not carry it.
        for tag in 4..10 {
            tx.send(tagged(tag, travel_size(tag))).expect("queue");
        }
        ctl.send(Handover::Receiver(rx, patterned(BALLAST.0, BALLAST.1)))
            .expect("hand the receiver over");
        for tag in 10..20 {
            tx.send(tagged(tag, travel_size(tag)))
                .expect("send after travel");
        }
        drop(tx);
        let report = ctl.recv_timeout(LARGE_TIMEOUT).expect("the child's report");
        check_report(report, 2, 20);
        child.wait_success();
    });
}

#[test]
fn an_endpoint_with_mapped_rings_and_queued_values_travels_to_a_child() {
    with_fd_baseline("travelling endpoint", || {
        let (mut child, conn) = spawn_connected("travel_endpoint");
        let ctl = Endpoint::<Handover, Report>::from_socket(conn, Config::new());
        let (here, there) = courier_channel::endpoints::<Tagged, Tagged>().expect("endpoints");
        for tag in 0..4 {
            here.send(tagged(tag, travel_size(tag))).expect("send");
        }
        for tag in 0..2 {
            let got = there.recv_timeout(LARGE_TIMEOUT).expect("receive");
            check_tagged(&got, tag, travel_size(tag), "before travel");
        }
        // The other way too: `here` maps the ring of `there`'s sending side.
        there.send(tagged(50, travel_size(50))).expect("send back");
        let got = here.recv_timeout(LARGE_TIMEOUT).expect("receive back");
        check_tagged(&got, 50, travel_size(50), "from the endpoint before travel");
        for tag in 4..10 {
            here.send(tagged(tag, travel_size(tag))).expect("queue");
        }
        ctl.send(Handover::Endpoint(there, patterned(BALLAST.0, BALLAST.1)))
            .expect("hand the endpoint over");
        for tag in 10..20 {
            here.send(tagged(tag, travel_size(tag)))
                .expect("send after travel");
        }
        here.send(Tagged {
            tag: END,
            data: Bytes::default(),
        })
        .expect("end");
        for tag in ECHO_TAGS {
            let got = here
                .recv_timeout(LARGE_TIMEOUT)
                .expect("an echo from the child");
            check_tagged(&got, tag, travel_size(tag), "from the travelled endpoint");
        }
        let report = ctl.recv_timeout(LARGE_TIMEOUT).expect("the child's report");
        check_report(report, 2, 20);
        drop(ctl);
        child.wait_success();
    });
}

// -------------------------------------------------- 8. many senders

/// What the parent tells a sender process.
#[derive(Serialize, Deserialize)]
enum Control {
    /// Send `count` values tagged `sender * 1000 + seq` on `out`.
    Job {
        sender: u64,
        count: u64,
        out: Sender<Tagged>,
        /// Keep `out` (and its ring) until told to exit.
        stay: bool,
    },
    Exit,
}

fn many_size(tag: u64) -> usize {
    100 * KIB + (tag as usize * 37 * KIB) % (1400 * KIB)
}

/// Sends its job's values, reports, and (if asked) stays until `Exit`.
fn ring_sender() {
    let ctl = Endpoint::<Report, Control>::from_socket(connect_to_parent(), Config::new());
    let Control::Job {
        sender,
        count,
        out,
        stay,
    } = ctl.recv_timeout(LARGE_TIMEOUT).expect("job")
    else {
        panic!("expected a job")
    };
    let mut report = Report::default();
    for seq in 0..count {
        let tag = sender * 1000 + seq;
        match out.send(tagged(tag, many_size(tag))) {
            Ok(()) => report.tags.push(tag),
            Err(e) => {
                report.error = Some(format!("sender {sender}, value {seq}: {e:?}"));
                break;
            }
        }
    }
    if !stay {
        drop(out);
    }
    ctl.send(report).expect("report");
    if stay {
        assert!(matches!(ctl.recv_timeout(LARGE_TIMEOUT), Ok(Control::Exit)));
    }
}

/// Receives `expected` values from senders `0..n`, each sender's in order.
fn receive_from_senders(rx: &Receiver<Tagged>, counts: &[u64]) {
    let mut next = vec![0u64; counts.len()];
    let total: u64 = counts.iter().sum();
    for n in 0..total {
        let got = rx
            .recv_timeout(LARGE_TIMEOUT)
            .unwrap_or_else(|e| panic!("value {n} of {total} (so far {next:?}): {e:?}"));
        let (sender, seq) = ((got.tag / 1000) as usize, got.tag % 1000);
        assert!(sender < counts.len(), "tag {}", got.tag);
        assert_eq!(seq, next[sender], "sender {sender}: out of order");
        check_pattern(&got.data, got.tag, many_size(got.tag), "many senders");
        next[sender] += 1;
    }
}

#[test]
fn ten_sender_processes_feed_one_receiver_through_their_rings() {
    with_fd_baseline("ten sender processes", || {
        const SENDERS: u64 = 10;
        const EACH: u64 = 6;
        let (tx, rx) = courier_channel::channel::<Tagged>().expect("channel");
        let mut children = Vec::new();
        for sender in 0..SENDERS {
            let (child, conn) = spawn_connected("ring_sender");
            let ctl = Endpoint::<Control, Report>::from_socket(conn, Config::new());
            let job = Control::Job {
                sender,
                count: EACH,
                out: tx.clone(),
                stay: true,
            };
            ctl.send(job).expect("job");
            children.push((child, ctl));
        }
        drop(tx);
        receive_from_senders(&rx, &[EACH; SENDERS as usize]);
        // Ten rings, all still open: the receiver keeps eight mapped, and
        // read the other two's frames through one-frame mappings.
        let rings = ring_fds();
        assert_eq!(rings.len(), 8, "rings the receiver keeps: {rings:?}");
        for (child, ctl) in &mut children {
            let report = ctl.recv_timeout(LARGE_TIMEOUT).expect("report");
            assert!(report.error.is_none(), "{:?}", report.error);
            ctl.send(Control::Exit).expect("exit");
            child.wait_success();
        }
        match rx.recv_timeout(LARGE_TIMEOUT) {
            Err(RecvTimeoutError::Disconnected) => {}
            other => panic!("after every sender exited: {other:?}"),
        }
    });
}

/// Sender clones handed to several processes: one that finishes and drops
/// its clone must not end the stream for the others.
#[test]
fn a_sender_process_that_finishes_first_does_not_cut_off_the_others() {
    with_fd_baseline("senders finishing at different times", || {
        let (tx, rx) = courier_channel::channel::<Tagged>().expect("channel");
        let counts = [1u64, 4, 4];
        let mut children = Vec::new();
        for (sender, &count) in counts.iter().enumerate() {
            let (child, conn) = spawn_connected("ring_sender");
            let ctl = Endpoint::<Control, Report>::from_socket(conn, Config::new());
            children.push((child, ctl, sender as u64, count));
        }
        // The first one finishes (and exits) before the others begin.
        let mut reports = Vec::new();
        for (child, ctl, sender, count) in &mut children {
            let job = Control::Job {
                sender: *sender,
                count: *count,
                out: tx.clone(),
                stay: false,
            };
            ctl.send(job).expect("job");
            reports.push(ctl.recv_timeout(LARGE_TIMEOUT).expect("report"));
            child.wait_success();
        }
        drop(tx);
        for report in &reports {
            assert!(
                report.error.is_none(),
                "a sender process: {:?}",
                report.error
            );
        }
        receive_from_senders(&rx, &counts);
        match rx.recv_timeout(LARGE_TIMEOUT) {
            Err(RecvTimeoutError::Disconnected) => {}
            other => panic!("after every sender exited: {other:?}"),
        }
    });
}

// -------------------------------------- 9. a sender killed mid-stream

fn endless_size(tag: u64) -> usize {
    200 * KIB + (tag as usize * 611 * KIB) % (3 * MIB)
}

/// Sends values until the parent kills it (or 20 s pass).
fn endless_sender() {
    let tx = Sender::<Tagged>::from_socket(connect_to_parent(), Config::new());
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut tag = 0;
    while Instant::now() < deadline && tx.send(tagged(tag, endless_size(tag))).is_ok() {
        tag += 1;
    }
}

#[test]
fn a_sender_killed_mid_stream_leaves_intact_values_then_disconnected() {
    with_fd_baseline("sender killed mid-stream", || {
        let (mut child, conn) = spawn_connected("endless_sender");
        let rx = Receiver::<Tagged>::from_socket(conn, Config::new());
        let mut tag = 0;
        while tag < 8 {
            let got = rx.recv_timeout(LARGE_TIMEOUT).expect("receive");
            check_tagged(&got, tag, endless_size(tag), "before the kill");
            tag += 1;
        }
        child.0.kill().expect("SIGKILL the sender");
        let status = child.wait();
        assert!(!status.success(), "the sender was not killed: {status:?}");
        let deadline = Instant::now() + LARGE_TIMEOUT;
        loop {
            assert!(Instant::now() < deadline, "no end of stream after the kill");
            match rx.recv_timeout(LARGE_TIMEOUT) {
                Ok(got) => check_tagged(&got, tag, endless_size(tag), "queued at the kill"),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(e) => panic!("after value {tag}: {e:?}"),
            }
            tag += 1;
        }
        drop(rx);
    });
}

// ----------------------------------------------------------- 10. DGRAM

#[test]
fn datagram_channels_carry_large_values_through_the_ring() {
    with_fd_baseline("DGRAM ring", || {
        // On the wire: a ring frame carrying the ring.
        let (a, raw) = DatagramSocket::pair().expect("dgram pair");
        let tx = Sender::<Tagged>::from_datagram_socket(a, Config::new());
        tx.send(tagged(0, 200 * KIB)).expect("send");
        let mut buf = Vec::new();
        let mut fds = Vec::new();
        raw.recv_frame(
            &mut buf,
            MAX_INLINE_FRAME,
            &mut fds,
            MAX_FDS,
            Wait::timeout(RECV_TIMEOUT),
        )
        .expect("raw receive")
        .expect("a frame");
        assert_eq!(
            (buf[3], buf[6], fds.len()),
            (2, 1, 1),
            "a DGRAM large value's frame"
        );
        drop((tx, raw, fds));

        let (tx, rx) = Config::new()
            .datagram(true)
            .channel::<Tagged>()
            .expect("channel");
        let sizes = [
            100 * KIB,
            MIB,
            3 * MIB,
            200 * KIB,
            12 * MIB,
            5 * MIB,
            70 * KIB,
        ];
        let sender = std::thread::spawn(move || {
            for (tag, &len) in sizes.iter().enumerate() {
                tx.send(tagged(tag as u64, len)).expect("dgram send");
            }
            tx
        });
        for (tag, &len) in sizes.iter().enumerate() {
            let got = rx.recv_timeout(LARGE_TIMEOUT).expect("dgram receive");
            check_tagged(&got, tag as u64, len, "DGRAM");
        }
        let tx = within(Duration::from_secs(10), "dgram sender", move || {
            sender.join()
        })
        .expect("sender thread");
        let inodes = ring_inodes();
        assert_eq!(
            inodes.len(),
            1,
            "DGRAM: the current ring only: {:?}",
            ring_maps()
        );
        drop(tx);
        assert!(
            matches!(
                rx.recv_timeout(Duration::from_millis(20)),
                Err(RecvTimeoutError::Timeout)
            ),
            "DGRAM has no end of stream"
        );
    });
}

// ----------------------------------------------------- 11. ring caps

/// A ring cap below what a receiver maps (4 KiB of data) must not make
/// values undeliverable.
#[test]
fn values_arrive_whatever_the_ring_cap() {
    with_fd_baseline("ring caps", || {
        let mut failures = Vec::new();
        for (threshold, cap, len) in [
            (16, 100, 40),
            (1024, 4000, 1500),
            (1024, 4096, 1500),
            (1024, 10_000, 3000),
            (1024, 0, 3000),
        ] {
            let config = Config::new().inline_threshold(threshold).shared_ring(cap);
            let (tx, rx) = config.channel::<Bytes>().expect("channel");
            tx.send(patterned(1, len)).expect("send");
            match rx.recv_timeout(RECV_TIMEOUT) {
                Ok(got) => check_pattern(&got, 1, len, "ring caps"),
                Err(e) => failures.push(format!(
                    "threshold {threshold}, ring cap {cap}, {len}-byte value: {e:?}"
                )),
            }
        }
        assert!(failures.is_empty(), "values lost: {failures:#?}");
    });
}

// ------------------------------------------------- sends from inside encoding

thread_local! {
    /// The sender a `SendsWhileEncoding` uses from inside its `Serialize`.
    static SIDE: std::cell::RefCell<Option<Sender<SendsWhileEncoding>>> =
        const { std::cell::RefCell::new(None) };
}

/// A value whose `Serialize` sends another large value on the same
/// sending end (the same ring) while it is itself being encoded into it.
/// A large value is serialized more than once (measured, then encoded into
/// the ring under its lock): the nested send happens on every pass, so also
/// while this thread holds the lock.
struct SendsWhileEncoding {
    data: Vec<u8>,
    nested: std::cell::Cell<bool>,
}

impl serde::Serialize for SendsWhileEncoding {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.nested.get() {
            SIDE.with(|side| {
                if let Some(tx) = side.borrow().as_ref() {
                    tx.send(SendsWhileEncoding {
                        data: vec![7; 200_000],
                        nested: false.into(),
                    })
                    .expect("nested send");
                }
            });
        }
        courier_channel::Bytes::from(self.data.clone()).serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for SendsWhileEncoding {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let data = courier_channel::Bytes::deserialize(d)?.into_vec();
        Ok(SendsWhileEncoding {
            data,
            nested: false.into(),
        })
    }
}

#[test]
fn a_serialize_impl_that_sends_on_the_same_ring_does_not_deadlock() {
    with_fd_baseline("a send from inside an encode", || {
        let (tx, rx) = courier_channel::channel::<SendsWhileEncoding>().expect("channel");
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let sender = std::thread::spawn(move || {
            SIDE.with(|s| *s.borrow_mut() = Some(tx.clone()));
            // A few times over: the ring exists (and is locked by the outer
            // send) from the second time on.
            for _ in 0..3 {
                tx.send(SendsWhileEncoding {
                    data: vec![1; 300_000],
                    nested: true.into(),
                })
                .expect("outer send");
            }
            SIDE.with(|s| s.borrow_mut().take());
            done_tx.send(()).expect("done");
        });
        let (mut outer, mut nested) = (0, 0);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while outer < 3 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let v = rx
                .recv_timeout(left)
                .expect("a value (the sender must not hang)");
            match v.data.len() {
                300_000 => outer += 1,
                200_000 => nested += 1,
                other => panic!("a value of {other} bytes"),
            }
        }
        done_rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the outer sends returned");
        sender.join().expect("sender thread");
        assert!(
            nested >= 3,
            "only {nested} nested values before the last outer one"
        );
    });
}

/// The receive after a value that came through the ring polls the socket
/// for a moment before it sleeps (large values tend to come one after the
/// other); otherwise it is a receive like any other: it ends at its
/// deadline, `try_recv` does not wait, a value sent long after is still
/// received, and the end of the channel is seen.
#[test]
fn the_receive_after_a_ring_value_times_out_waits_and_ends_as_any_other() {
    with_fd_baseline("receives after a ring value", || {
        let (tx, rx) = courier_channel::channel::<Tagged>().expect("channel");
        let len = 100 * KIB;
        let mut tag = 0;
        let mut ring_value = |what: &str| {
            tx.send(tagged(tag, len)).expect("send");
            let got = rx.recv_timeout(RECV_TIMEOUT).expect("a ring value");
            check_tagged(&got, tag, len, what);
            tag += 1;
        };
        ring_value("before a timeout");
        let t0 = Instant::now();
        match rx.recv_timeout(Duration::from_millis(50)) {
            Err(RecvTimeoutError::Timeout) => {}
            other => panic!("nothing was sent: {other:?}"),
        }
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_millis(50) && waited < RECV_TIMEOUT,
            "a 50 ms receive after a ring value took {waited:?}"
        );
        ring_value("before try_recv");
        match rx.try_recv() {
            Err(TryRecvError::Empty) => {}
            other => panic!("nothing was sent: {other:?}"),
        }
        ring_value("before a late value");
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(30));
                tx.send(tagged(100, 10)).expect("the late send");
            });
            check_tagged(&rx.recv().expect("the late value"), 100, 10, "late");
        });
        ring_value("before the end");
        drop(tx);
        match rx.recv() {
            Err(RecvError::Disconnected) => {}
            other => panic!("the sender is gone: {other:?}"),
        }
    });
}
