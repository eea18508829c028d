//! Raw shared memory: the "best raw path" candidate for large payloads.
//!
//! A memfd of `2 * RING` bytes is created, sized and mapped once
//! (`MAP_POPULATE`, so no page faults later) by the parent, and its fd is
//! passed to the child once at setup; the child maps it too. The first half
//! is the parent-to-child ring, the second the child-to-parent ring.
//!
//! Each ring is a ring of variable-size slots: a payload goes as pieces of
//! at most one of [`PIECES`] bytes (one contender each), each in the next free stretch of the ring
//! (64-byte aligned; a piece that would straddle the end starts again at
//! the beginning). Sending a piece: wait for room (credits), copy it in,
//! send a 24-byte notification (offset, length, last piece or not) over a
//! SEQPACKET socket. Receiving: take the next notification, copy the bytes
//! out into the receiver's own reused buffer (so it owns them, as a typed
//! receiver owns its `Vec`), and owe the space back. Credits (in bytes) go
//! back once a quarter of the ring is owed, or ride on the next
//! notification the receiver sends anyway (the echo, the ack), so a small
//! round trip is one SEQPACKET message each way and a stream of small
//! payloads returns credits rarely. Many pieces fit in the ring, so the
//! sender fills one while the receiver empties another.

use std::collections::VecDeque;
use std::ffi::c_void;
use std::io::IoSlice;
use std::num::NonZeroUsize;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Stdio;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use courier::transport::SeqPacketSocket;
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use nix::sys::socket::{recv, send, sendmsg, ControlMessage, MsgFlags};

use super::{Contender, Kind, Reaped};

/// The largest piece a payload is split into, for each of the two raw shm
/// contenders. The piece is the pipelining step: smaller pieces let the
/// receiver copy out sooner and stay in the caches, larger ones take fewer
/// notifications (a syscall and often a wakeup each). Which wins depends
/// on the machine: 128 KiB to 256 KiB were fastest on an Intel Xeon with
/// 2.5 MiB of L2 where the bench was written; on an AMD EPYC with 2 MiB of
/// L2 and dear syscalls, 2 MiB pieces moved 1 MiB payloads at 27.8 GB/s
/// against 12.6 GB/s with 256 KiB pieces. Both run, and the best raw path
/// at each size is the faster of them.
pub const PIECES: [usize; 2] = [256 << 10, 2 << 20];

/// Bytes per ring (one per direction).
pub const RING: usize = 8 << 20;

/// Credits go back once this many bytes are owed. With pieces of at most a
/// quarter ring, a sender waiting for room always has a receiver that
/// either has data to read or owes it a flush: no deadlock.
const FLUSH: usize = RING / 4;

/// Pieces start at multiples of this (no cache line shared by two pieces).
const ALIGN: usize = 64;

const _: () = assert!(PIECES[0] <= PIECES[1] && PIECES[1] <= RING / 4 && RING <= u32::MAX as usize);

const CTL_LEN: usize = 24;
const SETUP: u32 = 0x5348_4d31;
const ECHO: u32 = 1;
const SINK: u32 = 2;
const DATA: u32 = 3;
const CREDIT: u32 = 4;
const ACK: u32 = 5;

/// A control message: a kind, the credits it returns, two arguments.
#[derive(Clone, Copy, Debug)]
struct Ctl {
    kind: u32,
    credits: u32,
    a: u64,
    b: u64,
}

impl Ctl {
    fn encode(self) -> [u8; CTL_LEN] {
        let mut out = [0u8; CTL_LEN];
        out[..4].copy_from_slice(&self.kind.to_le_bytes());
        out[4..8].copy_from_slice(&self.credits.to_le_bytes());
        out[8..16].copy_from_slice(&self.a.to_le_bytes());
        out[16..].copy_from_slice(&self.b.to_le_bytes());
        out
    }

    fn decode(b: &[u8; CTL_LEN]) -> Ctl {
        Ctl {
            kind: u32::from_le_bytes(b[..4].try_into().unwrap()),
            credits: u32::from_le_bytes(b[4..8].try_into().unwrap()),
            a: u64::from_le_bytes(b[8..16].try_into().unwrap()),
            b: u64::from_le_bytes(b[16..].try_into().unwrap()),
        }
    }
}

/// A read-write shared mapping of the whole memfd.
struct Mapping {
    ptr: NonNull<c_void>,
    len: usize,
}

impl Mapping {
    fn new(memfd: &OwnedFd, len: usize) -> Mapping {
        let length = NonZeroUsize::new(len).expect("non-empty ring");
        let flags = MapFlags::MAP_SHARED | MapFlags::MAP_POPULATE;
        let prot = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
        // SAFETY: a new mapping at an address the kernel picks aliases no
        // Rust object. The memfd is sized to `len` before it is mapped and
        // nobody shrinks it (only this bench holds it), so no access faults.
        let ptr = unsafe { mmap(None, length, prot, flags, memfd, 0) }.expect("mmap");
        Mapping { ptr, len }
    }

    /// Copies `data` to `offset`.
    fn write(&self, offset: usize, data: &[u8]) {
        assert!(offset + data.len() <= self.len);
        let dst = self.ptr.as_ptr().cast::<u8>().wrapping_add(offset);
        // SAFETY: `dst..dst + data.len()` lies inside the mapping (checked
        // above), which no Rust reference covers, and the protocol gives
        // this slot to this side alone until it is notified to the peer.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) };
    }

    /// Appends `len` bytes at `offset` to `out`.
    fn read_into(&self, offset: usize, len: usize, out: &mut Vec<u8>) {
        assert!(offset + len <= self.len);
        let src = self
            .ptr
            .as_ptr()
            .cast::<u8>()
            .cast_const()
            .wrapping_add(offset);
        // SAFETY: `src..src + len` lies inside the mapping (checked above);
        // the peer wrote it before notifying us and does not touch the slot
        // again before we return its credit, so the bytes do not change
        // while the slice lives (it ends with this function).
        let bytes = unsafe { std::slice::from_raw_parts(src, len) };
        out.extend_from_slice(bytes);
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` is the mapping made in `new`, unmapped only
        // here; no slice of it outlives the methods that made them.
        let _ = unsafe { munmap(self.ptr, self.len) };
    }
}

/// One side of the ring pair: its socket, the mapping, and the counters of
/// both directions (in bytes, padding included, never wrapping).
struct Link {
    sock: OwnedFd,
    map: Mapping,
    /// The largest piece, one of [`PIECES`].
    piece: usize,
    tx_base: usize,
    rx_base: usize,
    /// Bytes of our sending ring taken, and given back by the peer.
    tx_head: u64,
    tx_credited: u64,
    /// Bytes of our receiving ring consumed.
    rx_tail: u64,
    /// Bytes consumed but not yet given back.
    owed: u32,
    /// Notifications of pieces not yet copied out: (offset, length, last).
    data: VecDeque<(usize, usize, bool)>,
    /// Other control messages not yet handled.
    other: VecDeque<Ctl>,
}

const LAST: u64 = 1 << 63;

impl Link {
    fn new(sock: OwnedFd, map: Mapping, piece: usize, parent: bool) -> Link {
        let (tx_base, rx_base) = if parent { (0, RING) } else { (RING, 0) };
        Link {
            sock,
            map,
            piece,
            tx_base,
            rx_base,
            tx_head: 0,
            tx_credited: 0,
            rx_tail: 0,
            owed: 0,
            data: VecDeque::with_capacity(64),
            other: VecDeque::with_capacity(4),
        }
    }

    /// Sends a control message, returning every credit owed with it.
    fn send_ctl(&mut self, kind: u32, a: u64, b: u64) {
        let ctl = Ctl {
            kind,
            credits: std::mem::take(&mut self.owed),
            a,
            b,
        };
        let n = send(self.sock.as_raw_fd(), &ctl.encode(), MsgFlags::MSG_NOSIGNAL).expect("send");
        assert_eq!(n, CTL_LEN);
    }

    /// Receives one control message and files it; `false` at end of stream.
    fn pump(&mut self) -> bool {
        let mut bytes = [0u8; CTL_LEN];
        let n = recv(self.sock.as_raw_fd(), &mut bytes, MsgFlags::empty()).expect("recv");
        if n == 0 {
            return false;
        }
        assert_eq!(n, CTL_LEN, "bad control message");
        let ctl = Ctl::decode(&bytes);
        self.tx_credited += u64::from(ctl.credits);
        match ctl.kind {
            DATA => {
                let offset = (ctl.b & !LAST) as usize;
                self.data
                    .push_back((offset, ctl.a as usize, ctl.b & LAST != 0));
            }
            CREDIT => {}
            _ => self.other.push_back(ctl),
        }
        true
    }

    /// Sends `payload` through the ring.
    fn send_msg(&mut self, payload: &[u8]) {
        let pieces = payload.len().div_ceil(self.piece);
        for (i, piece) in payload.chunks(self.piece).enumerate() {
            let span = piece.len().next_multiple_of(ALIGN);
            let pos = (self.tx_head % RING as u64) as usize;
            let (pad, offset) = if pos + span > RING {
                (RING - pos, 0)
            } else {
                (0, pos)
            };
            let need = (pad + span) as u64;
            while self.tx_head + need - self.tx_credited > RING as u64 {
                assert!(self.pump(), "peer gone");
            }
            self.map.write(self.tx_base + offset, piece);
            self.tx_head += need;
            let last = if i + 1 == pieces { LAST } else { 0 };
            self.send_ctl(DATA, piece.len() as u64, offset as u64 | last);
        }
    }

    /// Receives one payload into `out` (cleared first; its capacity is
    /// reused); `false` at end of stream.
    fn recv_msg(&mut self, out: &mut Vec<u8>) -> bool {
        out.clear();
        loop {
            while self.data.is_empty() {
                if !self.pump() {
                    return false;
                }
            }
            let (offset, len, last) = self.data.pop_front().unwrap();
            let pos = (self.rx_tail % RING as u64) as usize;
            // The sender starts again at 0 when a piece would straddle the
            // end; the skipped tail is consumed too.
            let pad = if offset == pos { 0 } else { RING - pos };
            assert!(len <= self.piece && (offset == pos || offset == 0));
            self.map.read_into(self.rx_base + offset, len, out);
            let consumed = pad + len.next_multiple_of(ALIGN);
            self.rx_tail += consumed as u64;
            self.owed += consumed as u32;
            if self.owed as usize >= FLUSH {
                self.send_ctl(CREDIT, 0, 0);
            }
            if last {
                return true;
            }
        }
    }

    /// The next control message other than data and credits; `None` at end
    /// of stream.
    fn recv_ctl(&mut self) -> Option<Ctl> {
        while self.other.is_empty() {
            if !self.pump() {
                return None;
            }
        }
        self.other.pop_front()
    }
}

/// A receive buffer with [`super::MAX_SIZE`] bytes of capacity, every page
/// touched, and length 0.
fn empty_buffer() -> Vec<u8> {
    let mut buf = super::receive_buffer();
    buf.clear();
    buf
}

/// The parent side.
pub struct RawShm {
    kind: Kind,
    link: Link,
    buf: Vec<u8>,
    payloads: super::Payloads<Vec<u8>>,
    child: Reaped,
}

impl RawShm {
    /// Creates and maps the memfd, spawns the child with its socket end as
    /// stdin, and passes it the memfd; payloads go in pieces of at most
    /// `piece` bytes (one of [`PIECES`]), `kind` names the contender.
    pub fn start(kind: Kind, piece: usize) -> Self {
        assert!(PIECES.contains(&piece));
        let memfd = memfd_create(c"courier-bench-ring", MFdFlags::MFD_CLOEXEC).expect("memfd");
        nix::unistd::ftruncate(&memfd, (2 * RING) as i64).expect("ftruncate");
        let map = Mapping::new(&memfd, 2 * RING);
        let (ours, theirs) = super::raw_socket::pair();
        let child = super::child_command("raw-shm")
            .stdin(Stdio::from(theirs))
            .spawn()
            .expect("spawn raw shm child");
        let setup = Ctl {
            kind: SETUP,
            credits: 0,
            a: RING as u64,
            b: piece as u64,
        }
        .encode();
        let fds = [memfd.as_raw_fd()];
        sendmsg::<()>(
            ours.as_raw_fd(),
            &[IoSlice::new(&setup)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .expect("send the memfd");
        drop(memfd); // the mappings keep the memory
        RawShm {
            kind,
            link: Link::new(ours, map, piece, true),
            buf: empty_buffer(),
            payloads: super::Payloads::default(),
            child: Reaped(child),
        }
    }
}

impl Contender for RawShm {
    fn kind(&self) -> Kind {
        self.kind
    }

    fn rtt_small(&mut self, iters: u64) -> Duration {
        self.link.send_ctl(ECHO, 8, iters);
        let start = Instant::now();
        for i in 0..iters {
            self.link.send_msg(&i.to_le_bytes());
            assert!(self.link.recv_msg(&mut self.buf), "child gone");
            assert_eq!(self.buf[..], i.to_le_bytes());
        }
        start.elapsed()
    }

    fn rtt_bytes(&mut self, size: usize, iters: u64) -> Duration {
        self.link.send_ctl(ECHO, size as u64, iters);
        let payload = self.payloads.get(size, |v| v);
        let start = Instant::now();
        for _ in 0..iters {
            self.link.send_msg(payload);
            assert!(self.link.recv_msg(&mut self.buf), "child gone");
        }
        let elapsed = start.elapsed();
        assert_eq!(self.buf.len(), size);
        assert_eq!(self.buf[size - 1], payload[size - 1]);
        elapsed
    }

    fn rtt_fds(&mut self, _fds: usize, _iters: u64) -> Duration {
        unreachable!("the shm ring passes no fds")
    }

    fn tput(&mut self, size: usize, count: u64) -> Duration {
        self.link.send_ctl(SINK, size as u64, count);
        let payload = self.payloads.get(size, |v| v);
        let start = Instant::now();
        for _ in 0..count {
            self.link.send_msg(payload);
        }
        let ack = self.link.recv_ctl().expect("child gone");
        let elapsed = start.elapsed();
        assert_eq!((ack.kind, ack.a), (ACK, count));
        elapsed
    }

    fn pids(&self) -> Vec<u32> {
        vec![self.child.0.id()]
    }
}

/// The child: takes the memfd, maps it, runs commands until end of stream.
pub fn child() {
    let sock = SeqPacketSocket::try_from(super::stdin_fd()).expect("a SEQPACKET stdin");
    let mut setup = [0u8; CTL_LEN];
    let mut fds = Vec::new();
    let got = sock
        .recv_with_fds(&mut setup, &mut fds, 1)
        .expect("setup message");
    if got.len == 0 {
        return; // the parent went away before setup
    }
    let ctl = Ctl::decode(&setup);
    let piece = ctl.b as usize;
    assert_eq!((ctl.kind, ctl.a, fds.len()), (SETUP, RING as u64, 1));
    assert!(PIECES.contains(&piece), "piece size {piece}");
    let map = Mapping::new(&fds[0], 2 * RING);
    drop(fds);
    let mut link = Link::new(OwnedFd::from(sock), map, piece, false);
    let mut buf = empty_buffer();
    while let Some(ctl) = link.recv_ctl() {
        match ctl.kind {
            ECHO => {
                for _ in 0..ctl.b {
                    if !link.recv_msg(&mut buf) {
                        return;
                    }
                    assert_eq!(buf.len() as u64, ctl.a);
                    link.send_msg(&buf);
                }
            }
            SINK => {
                for _ in 0..ctl.b {
                    if !link.recv_msg(&mut buf) {
                        return;
                    }
                }
                link.send_ctl(ACK, ctl.b, 0);
            }
            other => panic!("unexpected control message {other}"),
        }
    }
}
