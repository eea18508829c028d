//! Helpers shared by the courier-channel integration tests: fd-table
//! snapshots and the lock that serialises the tests comparing them, a raw
//! SEQPACKET peer wired to a typed [`Receiver`], hand-written frame headers
//! (valid or deliberately wrong, see the layout in `src/wire.rs`), raw sends
//! that never wait unboundedly, memfds with chosen seals, the checks a
//! refused frame must pass, and a seeded PRNG.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::File;
use std::io::{IoSlice, PipeReader, Write};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use courier_channel::{
    ChannelError, Config, Fd, FrameError, Receiver, RecvTimeoutError, HEADER_LEN, WIRE_VERSION,
};
use courier_transport::{SendMsg, SeqPacketSocket, Wait};
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::socket::{self, ControlMessage, MsgFlags};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// How long a test waits for a frame that has already been sent.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// Header kind byte: the body follows the header in the frame.
pub const KIND_INLINE: u8 = 0;
/// Header kind byte: the body is in a sealed memfd, the frame's last fd.
pub const KIND_SHARED: u8 = 1;

/// The transport's test helpers (fd table, fd lock, child roles), shared
/// rather than copied.
#[path = "../../../transport/tests/common/mod.rs"]
mod transport_common;

pub use transport_common::{fd_lock, fd_table};

/// Asserts that the fd table is `baseline` again, naming the fds that
/// appeared or vanished.
pub fn assert_fds_back(baseline: &BTreeMap<i32, PathBuf>, what: &str) {
    let now = fd_table();
    let opened: Vec<_> = now
        .iter()
        .filter(|(fd, _)| !baseline.contains_key(fd))
        .collect();
    let closed: Vec<_> = baseline
        .iter()
        .filter(|(fd, _)| !now.contains_key(fd))
        .collect();
    assert!(
        now == *baseline,
        "{what}: fd table not back to its baseline; still open: {opened:?}; closed: {closed:?}"
    );
}

/// A raw SEQPACKET socket connected to a typed receiver with `config`: the
/// test writes frames by hand on the socket.
pub fn raw_peer<T: DeserializeOwned>(config: Config) -> (SeqPacketSocket, Receiver<T>) {
    let (peer, sock) = SeqPacketSocket::pair().expect("socketpair");
    (peer, Receiver::from_socket(sock, config))
}

/// A frame header field by field, so that a test can get any of them wrong.
#[derive(Clone, Copy, Debug)]
pub struct RawHeader {
    /// Bytes 0..2, `b"CR"` when valid.
    pub magic: [u8; 2],
    /// Byte 2, [`WIRE_VERSION`] when valid.
    pub version: u8,
    /// Byte 3: [`KIND_INLINE`] or [`KIND_SHARED`] when valid.
    pub kind: u8,
    /// Bytes 4..6 (LE): user fds, not counting the memfd.
    pub fd_count: u16,
    /// Bytes 6..8: zero when valid.
    pub reserved: [u8; 2],
    /// Bytes 8..16 (LE): the body length.
    pub body_len: u64,
}

impl RawHeader {
    /// A valid header for an inline body of `body_len` bytes.
    pub fn inline(fd_count: u16, body_len: u64) -> Self {
        RawHeader {
            magic: *b"CR",
            version: WIRE_VERSION,
            kind: KIND_INLINE,
            fd_count,
            reserved: [0, 0],
            body_len,
        }
    }

    /// A valid header for a body of `body_len` bytes in a memfd.
    pub fn shared(fd_count: u16, body_len: u64) -> Self {
        RawHeader {
            kind: KIND_SHARED,
            ..Self::inline(fd_count, body_len)
        }
    }

    /// The 16 bytes on the wire.
    pub fn bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0; HEADER_LEN];
        out[0..2].copy_from_slice(&self.magic);
        out[2] = self.version;
        out[3] = self.kind;
        out[4..6].copy_from_slice(&self.fd_count.to_le_bytes());
        out[6..8].copy_from_slice(&self.reserved);
        out[8..16].copy_from_slice(&self.body_len.to_le_bytes());
        out
    }

    /// This header followed by `body`.
    pub fn frame(&self, body: &[u8]) -> Vec<u8> {
        let mut frame = self.bytes().to_vec();
        frame.extend_from_slice(body);
        frame
    }
}

/// An honest inline frame: a valid header declaring `fd_count` fds and the
/// length of `body`, then `body`.
pub fn inline_frame(fd_count: u16, body: &[u8]) -> Vec<u8> {
    RawHeader::inline(fd_count, body.len() as u64).frame(body)
}

/// postcard's encoding of `value` (which must hold no fd field).
pub fn body_of<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("postcard encoding")
}

/// Sends `frame` with `fds` as one message, waiting at most
/// [`RECV_TIMEOUT`] for room.
pub fn send_raw(peer: &SeqPacketSocket, frame: &[u8], fds: &[BorrowedFd<'_>]) {
    let bufs = [IoSlice::new(frame)];
    let sent = peer
        .send_msg(
            &SendMsg::new(&bufs).with_fds(fds),
            Wait::timeout(RECV_TIMEOUT),
        )
        .expect("raw send");
    assert_eq!(sent, frame.len(), "raw send was short");
}

/// Sends a zero-length message (which courier's transport refuses to send)
/// carrying `fds`, with a raw `sendmsg`.
pub fn send_empty(peer: &SeqPacketSocket, fds: &[BorrowedFd<'_>]) {
    let raw: Vec<_> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let sent = if raw.is_empty() {
        socket::send(peer.as_raw_fd(), &[], MsgFlags::MSG_NOSIGNAL)
    } else {
        socket::sendmsg::<()>(
            peer.as_raw_fd(),
            &[],
            &[ControlMessage::ScmRights(&raw)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
    };
    assert_eq!(sent.expect("raw empty send"), 0);
}

/// A memfd holding `body` with `seals` added (none when empty).
pub fn memfd(body: &[u8], seals: SealFlag) -> OwnedFd {
    let fd = memfd_create(
        c"courier-test",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )
    .expect("memfd_create");
    let mut file = File::from(fd);
    file.write_all(body).expect("write memfd");
    if !seals.is_empty() {
        fcntl(&file, FcntlArg::F_ADD_SEALS(seals)).expect("F_ADD_SEALS");
    }
    file.into()
}

/// A memfd holding `body`, sealed as a courier sender seals it.
pub fn sealed_memfd(body: &[u8]) -> OwnedFd {
    memfd(
        body,
        SealFlag::F_SEAL_SHRINK
            | SealFlag::F_SEAL_GROW
            | SealFlag::F_SEAL_WRITE
            | SealFlag::F_SEAL_SEAL,
    )
}

/// Runs `body` with the fd lock held, the fd baseline taken before anything
/// is created, and the fd table compared once everything is dropped.
pub fn with_fd_baseline(what: &str, body: impl FnOnce()) {
    let _lock = fd_lock();
    let baseline = fd_table();
    body();
    assert_fds_back(&baseline, what);
}

/// Runs `send`, expects the next receive to fail with `Failed`, and checks
/// that every fd the refused frame brought has been closed again.
pub fn expect_failure<T: DeserializeOwned + Debug>(
    rx: &Receiver<T>,
    what: &str,
    send: impl FnOnce(),
) -> ChannelError {
    let before = fd_table();
    send();
    let error = match rx.recv_timeout(RECV_TIMEOUT) {
        Err(RecvTimeoutError::Failed(e)) => e,
        Ok(v) => panic!("{what}: frame accepted as {v:?}"),
        Err(e) => panic!("{what}: expected a refused frame, got {e:?}"),
    };
    assert_fds_back(&before, &format!("fds of the refused frame ({what})"));
    error
}

/// As [`expect_failure`], for a frame that must fail validation.
pub fn expect_frame_error<T: DeserializeOwned + Debug>(
    rx: &Receiver<T>,
    what: &str,
    send: impl FnOnce(),
) -> FrameError {
    match expect_failure(rx, what, send) {
        ChannelError::Frame(e) => e,
        other => panic!("{what}: expected ChannelError::Frame, got {other:?}"),
    }
}

/// A value without fds, for receivers that are sent bad frames.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct Plain {
    pub id: u32,
    pub name: String,
}

/// A valid encoding of a [`Plain`].
pub fn plain_body() -> Vec<u8> {
    body_of(&Plain {
        id: 1,
        name: "a body".into(),
    })
}

/// A valid [`Plain`] sent after bad frames still arrives, unchanged.
pub fn still_usable(peer: &SeqPacketSocket, rx: &Receiver<Plain>) {
    let value = Plain {
        id: 77,
        name: "still usable".into(),
    };
    send_raw(peer, &inline_frame(0, &body_of(&value)), &[]);
    let got = rx
        .recv_timeout(RECV_TIMEOUT)
        .expect("a valid frame after the bad one was refused");
    assert_eq!(
        got, value,
        "the valid frame after the bad one arrived changed"
    );
}

/// `/dev/null`, opened for reading.
pub fn devnull() -> File {
    File::open("/dev/null").expect("open /dev/null")
}

/// xorshift64: a seeded, reproducible source of hostile bytes.
pub struct XorShift(pub u64);

impl XorShift {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// What random frames are decoded as: several shapes, fd fields of two kinds.
#[derive(Serialize, Deserialize, Debug)]
pub enum Fuzzed {
    Empty,
    Number(u64),
    Text(String),
    File(Fd<File>),
    Pipe(Fd<PipeReader>),
    Pair { a: Option<Fd>, b: Vec<u16> },
}

/// [`Fuzzed`] with raw fd indices: the same postcard encoding.
#[derive(Serialize)]
pub enum Shape {
    Empty,
    Number(u64),
    Text(String),
    File(u32),
    Pipe(u32),
    Pair { a: Option<u32>, b: Vec<u16> },
}

/// A random frame for a message carrying `fd_count` fds: random bytes, a
/// random body behind an honest header, a well-formed [`Shape`] with random
/// fd indices, a header with one byte overwritten, or a shared-memory header
/// (then `true`: the caller attaches a body fd last) declaring `shared_len`
/// or a random length.
pub fn random_frame(rng: &mut XorShift, fd_count: u16, shared_len: u64) -> (Vec<u8>, bool) {
    let frame = match rng.below(5) {
        0 => {
            let len = rng.below(300) as usize;
            rng.bytes(len)
        }
        1 => {
            let len = rng.below(284) as usize;
            let mut body = rng.bytes(len);
            if let Some(tag) = body.first_mut() {
                *tag = rng.below(7) as u8; // mostly a valid variant
            }
            RawHeader::inline(fd_count, len as u64).frame(&body)
        }
        2 => {
            let index = rng.below(3) as u32;
            let body = body_of(&match rng.below(6) {
                0 => Shape::Empty,
                1 => Shape::Number(rng.next()),
                2 => Shape::Text(String::from_utf8_lossy(&rng.bytes(8)).into()),
                3 => Shape::File(index),
                4 => Shape::Pipe(index),
                _ => Shape::Pair {
                    a: (rng.below(2) == 0).then_some(index),
                    b: vec![rng.next() as u16; rng.below(4) as usize],
                },
            });
            inline_frame(fd_count, &body)
        }
        3 => {
            let len = rng.below(32) as usize;
            let mut frame = inline_frame(fd_count, &rng.bytes(len));
            frame[rng.below(16) as usize] = rng.next() as u8;
            frame
        }
        _ => {
            let len = if rng.below(3) == 0 {
                shared_len
            } else {
                rng.below(400)
            };
            return (RawHeader::shared(fd_count, len).bytes().to_vec(), true);
        }
    };
    (frame, false)
}

// ------------------------------------------------- shared rings (kind 2)

/// The transport's child-process helpers, for test files that re-execute
/// the test binary in a role.
#[allow(unused_imports)] // each test file uses some
pub use transport_common::{
    connect_to_parent, role, run_role, spawn_connected, Guard, CHILD_TIMEOUT,
};

/// Header kind byte: the body is in the sender's shared ring.
pub const KIND_RING: u8 = 2;
/// A ring memfd's control page, before its data area.
pub const RING_CONTROL: u64 = 4096;
/// Offset of the receiver's `consumed` counter (u64) in the control page.
pub const RING_CONSUMED: u64 = 64;
/// Offset of the receiver's `acked` word (u32) in the control page.
pub const RING_ACKED: u64 = 128;

/// A kind-2 frame: a header with `fd_count`, the flags byte `flags` (bit 0:
/// the ring's memfd is the last fd) and `body_len`, then the ring id, the
/// body's start position and the retired ring id (u64 LE each).
pub fn ring_frame(
    fd_count: u16,
    flags: u8,
    body_len: u64,
    id: u64,
    start: u64,
    retire: u64,
) -> Vec<u8> {
    let header = RawHeader {
        kind: KIND_RING,
        reserved: [flags, 0],
        ..RawHeader::inline(fd_count, body_len)
    };
    let mut frame = header.bytes().to_vec();
    for field in [id, start, retire] {
        frame.extend_from_slice(&field.to_le_bytes());
    }
    frame
}

/// A memfd of `len` bytes (sparse) with `seals` added (none when empty).
pub fn sized_memfd(len: u64, seals: SealFlag) -> File {
    let fd = memfd_create(
        c"courier-test-ring",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )
    .expect("memfd_create");
    let file = File::from(fd);
    file.set_len(len).expect("size memfd");
    if !seals.is_empty() {
        fcntl(&file, FcntlArg::F_ADD_SEALS(seals)).expect("F_ADD_SEALS");
    }
    file
}

/// The inode number of what `fd` refers to (a ring's id on the wire).
pub fn inode(fd: impl std::os::fd::AsFd) -> u64 {
    nix::sys::stat::fstat(fd.as_fd()).expect("fstat").st_ino
}

/// The fds of this process open on memfds named `name` (as courier names
/// them: "courier-ring", "courier-body"), each with (inode, size).
pub fn named_memfds(name: &str) -> Vec<(i32, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let wanted = format!("/memfd:{name} ");
    fd_table()
        .into_iter()
        .filter(|(_, target)| target.to_string_lossy().starts_with(&wanted))
        .filter_map(|(fd, _)| {
            let meta = std::fs::metadata(format!("/proc/self/fd/{fd}")).ok()?;
            Some((fd, meta.ino(), meta.size()))
        })
        .collect()
}

/// The mappings of this process of memfds named `name`, each as (length,
/// inode), from `/proc/self/maps`.
pub fn named_mappings(name: &str) -> Vec<(u64, u64)> {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    let wanted = format!("/memfd:{name} ");
    maps.lines()
        .filter(|line| line.contains(&wanted))
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (start, end) = fields[0].split_once('-').expect("address range");
            let start = u64::from_str_radix(start, 16).expect("start address");
            let end = u64::from_str_radix(end, 16).expect("end address");
            (end - start, fields[4].parse().expect("inode"))
        })
        .collect()
}
