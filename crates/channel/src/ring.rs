//! Large bodies through a shared ring that is set up once and reused.
//!
//! A fresh sealed memfd per value (see [`shm`](crate::shm)) costs a page
//! allocation, a mapping and a page-table teardown per page of every value.
//! A sending link instead keeps one memfd, mapped once on each side: the
//! sender encodes a large value straight into it and sends a small frame
//! naming where the body is; the receiver decodes straight out of it and
//! then advances a counter in the ring's control page, which frees the
//! space. That is one copy on each side, the least any path that leaves
//! the receiver owning its bytes can do.
//!
//! The ring's memfd is sealed against shrinking and growing, so neither
//! side's mapping can lose its pages (no SIGBUS). It is not sealed against
//! writing: the sender must reuse it. The receiver therefore never forms a
//! reference into it: every byte it decodes is first copied into its own
//! memory (see [`RingBody`]), so a peer that rewrites the ring while it
//! is being read produces at worst a garbled value, which validation then
//! refuses like any other.
//!
//! Control page (the memfd's first 4 KiB; the data area follows):
//!
//! ```text
//! offset  field      written by  meaning
//!   0     id         sender      u64: the ring's id, random, never 0
//!  64     consumed   receiver    u64: position up to which bodies were read
//! 128     acked      receiver    u32: 1 once the receiver has mapped the ring
//! 192     wake       receiver    u32 futex word, bumped after each release
//! 256     wake_at    sender      u64: while the sender waits for room, the
//!                                consumed position to wake it at (0: not waiting)
//! 320     closed     sender      u64: once the sender has dropped the ring,
//!                                1 + the position after its last body (0: open)
//! 384     filled     sender      u64: position up to which a streamed body is written
//! 448     fill_wake  sender      u32 futex word, bumped to wake a receiver waiting
//!                                for streamed bytes
//! 512     fill_at    receiver    u64: while the receiver waits for streamed bytes,
//!                                the filled position to wake it at (0: not waiting)
//! 576     withdrawn  sender      u64: 1 + the start of the last streamed body its
//!                                sender gave up on (0: none)
//! ```
//!
//! Positions count bytes since the ring was made; a body occupies
//! `[start, start + len)` and never wraps: one that would is placed at the
//! next multiple of the capacity, the skipped tail counted as used. The
//! sender skips to the next lap early, too, to keep bodies near the start
//! of a ring that grew (see [`RingTx::place`]). A streamed body (see
//! [`stream`]) is the exception: it wraps, as many times as its length
//! needs, and is read while it is written.

use std::cell::Cell;
use std::ffi::c_void;
use std::io;
use std::marker::PhantomData;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::libc;
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use nix::sys::stat::fstat;
use nix::sys::statfs::{fstatfs, TMPFS_MAGIC};
use nix::unistd::ftruncate;

use crate::FrameError;

pub(crate) mod stream;
pub(crate) use stream::{Ended, SpinTime, STALL, STREAM_ABOVE};

/// The control page before the data area.
pub(crate) const CONTROL: usize = 4096;
/// The smallest ring a sender makes.
pub(crate) const MIN_RING: usize = 4 << 20;
/// The largest ring a sender makes and a receiver maps.
pub const MAX_RING: usize = 64 << 20;
/// The smallest data area a receiver maps (and so a sender makes).
pub(crate) const MIN_ACCEPTED: usize = 4096;

const ID: usize = 0;
const CONSUMED: usize = 64;
const ACKED: usize = 128;
const WAKE: usize = 192;
const WAKE_AT: usize = 256;
const CLOSED: usize = 320;
const FILLED: usize = 384;
const FILL_WAKE: usize = 448;
const FILL_AT: usize = 512;
const WITHDRAWN: usize = 576;
/// A cache line.
pub(crate) const LINE: u64 = 64;

/// The seals both sides rely on.
const SEALS: SealFlag = SealFlag::F_SEAL_SHRINK.union(SealFlag::F_SEAL_GROW);

/// A read-write shared mapping of a whole ring memfd.
struct Map {
    ptr: NonNull<c_void>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory, accessed only through atomics
// (control page) or raw copies (data area); no thread-affine state.
#[allow(unsafe_code)]
unsafe impl Send for Map {}
// SAFETY: as above: every access through `&Map` is an atomic or a raw copy.
#[allow(unsafe_code)]
unsafe impl Sync for Map {}

impl Map {
    #[allow(unsafe_code)]
    fn new(fd: BorrowedFd<'_>, len: usize) -> io::Result<Map> {
        let length = NonZeroUsize::new(len).ok_or(io::ErrorKind::InvalidInput)?;
        let prot = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
        // SAFETY: a new mapping at an address the kernel picks aliases no
        // Rust object; the memfd is sealed against shrinking, so its pages
        // stay for as long as the mapping does.
        let ptr = unsafe { mmap(None, length, prot, MapFlags::MAP_SHARED, fd, 0) }?;
        Ok(Map { ptr, len })
    }

    fn at(&self, offset: usize) -> *mut u8 {
        self.ptr.as_ptr().cast::<u8>().wrapping_add(offset)
    }

    #[allow(unsafe_code)]
    fn u64_at(&self, offset: usize) -> &AtomicU64 {
        debug_assert!(offset.is_multiple_of(8) && offset + 8 <= CONTROL);
        // SAFETY: the offset is 8-aligned inside the control page of a
        // page-aligned mapping that lives as long as `&self`; the other
        // process touches it only atomically too.
        unsafe { AtomicU64::from_ptr(self.at(offset).cast::<u64>()) }
    }

    #[allow(unsafe_code)]
    fn u32_at(&self, offset: usize) -> &AtomicU32 {
        debug_assert!(offset.is_multiple_of(4) && offset + 4 <= CONTROL);
        // SAFETY: as in `u64_at`.
        unsafe { AtomicU32::from_ptr(self.at(offset).cast::<u32>()) }
    }
}

impl Drop for Map {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped only here; nothing
        // borrowed from it outlives `self`.
        let _ = unsafe { munmap(self.ptr, self.len) };
    }
}

/// The sending side of a ring.
pub(crate) struct RingTx {
    fd: OwnedFd,
    map: Map,
    id: u64,
    capacity: u64,
    /// The position after the last body sent.
    written: u64,
    /// The end of the last streamed body withdrawn, while its frame may be
    /// unread (0: none): no body streams until then (see [`stream`]).
    withdrawn_until: u64,
}

impl Drop for RingTx {
    fn drop(&mut self) {
        // Frames naming the ring may still be queued: the receiver keeps
        // it until it has read up to here.
        self.map.u64_at(CLOSED).store(self.written + 1, SeqCst);
    }
}

/// The receiver's counter says something impossible: the ring is dropped.
#[derive(Debug)]
pub(crate) struct Corrupt;

impl RingTx {
    /// A new ring with `capacity` bytes of data area.
    pub(crate) fn create(capacity: usize) -> io::Result<RingTx> {
        let fd = memfd_create(
            c"courier-ring",
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )?;
        let total = CONTROL + capacity;
        ftruncate(
            &fd,
            i64::try_from(total).map_err(|_| io::ErrorKind::InvalidInput)?,
        )?;
        fcntl(&fd, FcntlArg::F_ADD_SEALS(SEALS | SealFlag::F_SEAL_SEAL))?;
        let map = Map::new(fd.as_fd(), total)?;
        let id = random_id()?;
        map.u64_at(ID).store(id, SeqCst);
        Ok(RingTx {
            fd,
            map,
            id,
            capacity: capacity as u64,
            written: 0,
            withdrawn_until: 0,
        })
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity as usize
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Whether the receiver has mapped the ring (frames then stop carrying
    /// its fd).
    pub(crate) fn acked(&self) -> bool {
        self.map.u32_at(ACKED).load(SeqCst) == 1
    }

    /// Where a body of `len` bytes would start now, or `None` without room.
    /// The start is chosen so that byte `skew` of the body falls on a
    /// cache-line boundary: the sender picks `skew` so that the body's
    /// largest byte block lands at the same offset in its ring line as in
    /// the line it is copied from (see `codec::Measure`).
    ///
    /// Bodies are kept near the start of the data area, in its first
    /// [`window`](Self::window) while the receiver keeps up (and a body or
    /// two past it while the receiver is that far behind): a ring that grew
    /// for one large value would otherwise have every later small body walk
    /// all of it, through memory long out of the caches (and, on the first
    /// lap, pages the kernel has yet to allocate). Measured here before this
    /// rule: after one 16 MiB value, 1 MiB values went from 36 GB/s to
    /// 10-11 GB/s.
    pub(crate) fn place(&self, len: u64, skew: u64) -> Result<Option<u64>, Corrupt> {
        let consumed = self.consumed()?;
        let skew = skew % LINE;
        let aligned = |p: u64| (p + skew).next_multiple_of(LINE) - skew;
        // The first aligned position of the lap after the one `p` is in.
        let next_lap = |p: u64| aligned(p - p % self.capacity + self.capacity);
        let fits = |start: u64| {
            start % self.capacity + len <= self.capacity && start + len - consumed <= self.capacity
        };
        let window = self.window(len);
        let mut start = aligned(self.written);
        if start % self.capacity + len > self.capacity {
            // It would wrap: start the next lap instead.
            start = next_lap(start);
        } else if start % self.capacity + len > window
            && (next_lap(start) + window - consumed <= self.capacity
                || (consumed == self.written && fits(next_lap(start))))
        {
            // Past the window, and the receiver has freed the window at the
            // ring's start (a whole window of room there: with less, a
            // sender ahead of its receiver would only wait sooner), or has
            // read everything (then the room left is where the receiver is,
            // at least the window less this body).
            start = next_lap(start);
        }
        Ok(fits(start).then_some(start))
    }

    /// The receiver's progress, checked: it can only have freed what was
    /// sent, and what was sent fits the ring (unless it is a withdrawn
    /// stream, whose length counts as sent, written or not).
    fn consumed(&self) -> Result<u64, Corrupt> {
        let consumed = self.map.u64_at(CONSUMED).load(SeqCst);
        let unread = self.written.saturating_sub(consumed);
        if consumed > self.written || (unread > self.capacity && self.withdrawn_until == 0) {
            return Err(Corrupt);
        }
        Ok(consumed)
    }

    /// Whether the receiver's counter says something impossible.
    pub(crate) fn corrupt(&self) -> bool {
        self.consumed().is_err()
    }

    /// The stretch at the start of the data area that bodies of `len` bytes
    /// are kept in when they can be: the size of a ring made for them (four
    /// times the body, at least [`MIN_RING`]).
    fn window(&self, len: u64) -> u64 {
        len.saturating_mul(4)
            .max(MIN_RING as u64)
            .min(self.capacity)
    }

    /// Waits until a body of `len` bytes has room or `until` passes.
    pub(crate) fn wait_room(&self, len: u64, until: Instant) -> Result<bool, Corrupt> {
        let wake = self.map.u32_at(WAKE);
        let wake_at = self.map.u64_at(WAKE_AT);
        let room = loop {
            let seen = wake.load(SeqCst);
            // Woken once a quarter of the ring (at least this body) is
            // free, not at every release: a receiver that frees bodies one
            // by one would otherwise pay a futex wake for each, and the
            // sender a context switch per body.
            let consumed = self.map.u64_at(CONSUMED).load(SeqCst);
            let want = (len + 2 * LINE).max(self.capacity / 4);
            wake_at.store(
                consumed.saturating_add(want).min(self.written).max(1),
                SeqCst,
            );
            if self.place(len, 0)?.is_some() {
                break true;
            }
            let now = Instant::now();
            if now >= until {
                break false;
            }
            futex_wait(wake, seen, until - now);
        };
        wake_at.store(0, SeqCst);
        Ok(room)
    }

    /// The data area for a body placed at `start` (by [`place`](Self::place)).
    pub(crate) fn region(&mut self, start: u64, len: usize) -> Region<'_> {
        let offset = (start % self.capacity) as usize;
        debug_assert!(offset + len <= self.capacity as usize);
        Region {
            ptr: self.map.at(CONTROL + offset),
            len,
            pos: 0,
            ring: PhantomData,
        }
    }

    /// Records that the body at `start` was sent.
    pub(crate) fn commit(&mut self, start: u64, len: u64) {
        self.written = start + len;
    }
}

/// Where one body is encoded: a postcard output flavor over ring memory.
pub(crate) struct Region<'a> {
    ptr: *mut u8,
    len: usize,
    pos: usize,
    ring: PhantomData<&'a mut RingTx>,
}

impl postcard::ser_flavors::Flavor for Region<'_> {
    type Output = usize;

    #[allow(unsafe_code)]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        if self.pos >= self.len {
            return Err(postcard::Error::SerializeBufferFull);
        }
        // SAFETY: `pos < len`, inside the placed body of a live mapping that
        // `'a` borrows mutably; raw writes race only with a peer's reads.
        unsafe { self.ptr.wrapping_add(self.pos).write(data) };
        self.pos += 1;
        Ok(())
    }

    #[allow(unsafe_code)]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if data.len() > self.len - self.pos {
            return Err(postcard::Error::SerializeBufferFull);
        }
        let to = self.ptr.wrapping_add(self.pos);
        // SAFETY: `data.len()` bytes from `pos` fit the placed body; ring
        // memory never overlaps a Rust slice.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), to, data.len()) };
        self.pos += data.len();
        Ok(())
    }

    fn finalize(self) -> postcard::Result<usize> {
        Ok(self.pos)
    }
}

/// The receiving side of a ring.
pub(crate) struct RingRx {
    fd: OwnedFd,
    map: Map,
    id: u64,
    capacity: u64,
}

impl RingRx {
    /// Checks a ring memfd a frame announced as `id` and maps it; `keep`
    /// tells its sender that frames need not carry it any more.
    ///
    /// The id is random and only the ring's sender and this receiver see
    /// it (in the ring and in the frames), so another sender on the same
    /// socket cannot name, read, free or retire this ring.
    pub(crate) fn adopt(fd: OwnedFd, id: u64, keep: bool) -> Result<RingRx, FrameError> {
        let refuse = |reason| FrameError::BadSharedMemory { reason };
        let seals =
            fcntl(&fd, FcntlArg::F_GET_SEALS).map_err(|_| refuse("not a sealable memfd"))?;
        if !SealFlag::from_bits_retain(seals).contains(SEALS) {
            return Err(refuse("ring is not sealed against shrink and grow"));
        }
        // Plain shared memory only: a hugetlbfs memfd could have its pages
        // punched out (it is not sealed against writing) and leave this
        // side to fault with SIGBUS on an empty huge page pool.
        let fs = fstatfs(&fd).map_err(|_| refuse("fstatfs failed"))?;
        if fs.filesystem_type() != TMPFS_MAGIC {
            return Err(refuse("ring is not plain shared memory"));
        }
        let stat = fstat(&fd).map_err(|_| refuse("fstat failed"))?;
        let size = usize::try_from(stat.st_size).unwrap_or(0);
        if !(CONTROL + MIN_ACCEPTED..=CONTROL + MAX_RING).contains(&size) {
            return Err(refuse("ring size out of bounds"));
        }
        let map = Map::new(fd.as_fd(), size).map_err(|_| refuse("mmap failed"))?;
        if id == 0 || map.u64_at(ID).load(SeqCst) != id {
            return Err(refuse("ring fd is not the ring the frame names"));
        }
        if keep {
            map.u32_at(ACKED).store(1, SeqCst);
        }
        Ok(RingRx {
            fd,
            map,
            id,
            capacity: (size - CONTROL) as u64,
        })
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The body a frame places at `start`, checked against the ring: in
    /// one piece, or `streamed` (wrapping, read while it is written).
    /// A wait for a streamed body's bytes gives up when `peer_gone` says
    /// its sender has gone.
    pub(crate) fn body<'a>(
        &'a self,
        start: u64,
        len: u64,
        streamed: bool,
        peer_gone: &'a dyn Fn() -> bool,
    ) -> Result<RingBody<'a>, FrameError> {
        let outside = FrameError::BadSharedMemory {
            reason: "body outside the ring",
        };
        let Ok(size) = usize::try_from(len) else {
            return Err(outside);
        };
        if start.checked_add(len).is_none()
            || (!streamed && len > self.capacity - start % self.capacity)
        {
            return Err(outside);
        }
        Ok(RingBody {
            ring: self,
            start,
            len: size,
            ready: Cell::new(if streamed { 0 } else { size }),
            released: Cell::new(0),
            streamed,
            ended: Cell::new(None),
            watch: Cell::new(None),
            peer_gone,
        })
    }

    /// Frees everything up to `end` for the sender, waking it if it waits
    /// and enough is free.
    pub(crate) fn release(&self, end: u64) {
        let consumed = self.map.u64_at(CONSUMED).fetch_max(end, SeqCst).max(end);
        let wake = self.map.u32_at(WAKE);
        wake.fetch_add(1, SeqCst);
        let wake_at = self.map.u64_at(WAKE_AT).load(SeqCst);
        if wake_at != 0 && consumed >= wake_at {
            futex_wake(wake);
        }
    }

    /// The size of the ring's data area.
    pub(crate) fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Tells the sender this receiver keeps the ring mapped: its frames
    /// need not carry the fd any more.
    pub(crate) fn acknowledge(&self) {
        self.map.u32_at(ACKED).store(1, SeqCst);
    }

    /// Tells the sender this receiver no longer maps the ring: its next
    /// frames carry the fd again.
    pub(crate) fn forget(&self) {
        self.map.u32_at(ACKED).store(0, SeqCst);
    }

    /// Whether the sender has dropped the ring and every body it sent has
    /// been read: no frame will name it again.
    pub(crate) fn finished(&self) -> bool {
        match self.map.u64_at(CLOSED).load(SeqCst) {
            0 => false,
            closed => self.map.u64_at(CONSUMED).load(SeqCst) >= closed - 1,
        }
    }
}

/// A body in ring memory that the peer may still write to: read only by
/// copying out, front to back.
///
/// A streamed body is read while its sender writes it: a read past what is
/// written waits for it (see [`stream`]), and what was read goes back to
/// the sender as the read goes on. A read the stream cannot satisfy (its
/// sender withdrew it, or stopped writing) fails, and [`ended`](Self::ended)
/// says why. Dropped, it gives the whole body's space back.
pub(crate) struct RingBody<'a> {
    ring: &'a RingRx,
    start: u64,
    len: usize,
    /// Bytes from the start known to be written: all of a body in one
    /// piece.
    ready: Cell<usize>,
    /// Bytes from the start given back to the sender (streamed bodies).
    released: Cell<usize>,
    streamed: bool,
    ended: Cell<Option<Ended>>,
    /// The waits for a streamed body's bytes, from the first on.
    watch: Cell<Option<stream::Watch>>,
    peer_gone: &'a dyn Fn() -> bool,
}

impl Drop for RingBody<'_> {
    /// Read or refused, or its decode panicked: either way the body's space
    /// goes back to the sender.
    fn drop(&mut self) {
        self.ring.release(self.start + self.len as u64);
    }
}

impl RingBody<'_> {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Where byte `at` of the body is in the data area.
    fn offset(&self, at: usize) -> usize {
        let capacity = self.ring.capacity;
        let offset = if self.streamed {
            (self.start + at as u64) % capacity
        } else {
            self.start % capacity + at as u64
        };
        offset as usize
    }

    /// Where byte `at` of the body is in the mapping.
    fn source(&self, at: usize) -> *const u8 {
        self.ring.map.at(CONTROL + self.offset(at)).cast_const()
    }

    /// The byte at `at` (< `len`), or `None` when the stream ended first.
    #[allow(unsafe_code)]
    pub(crate) fn byte(&self, at: usize) -> Option<u8> {
        assert!(at < self.len);
        if at >= self.ready.get() && !self.fill(at) {
            return None;
        }
        if self.streamed
            && at.saturating_sub(self.released.get())
                >= stream::release_step(self.ring.capacity as usize)
        {
            // Reads go front to back: everything before `at` is read.
            self.release(at);
        }
        // SAFETY: `at < len`, inside the checked body (of a streamed body,
        // at an offset reduced modulo the capacity) of a live mapping; a
        // volatile read copies the byte out whatever the peer does.
        Some(unsafe { self.source(at).read_volatile() })
    }

    /// Appends `count` bytes from `at` to `out`; false when the stream
    /// ended first (`out` then holds a part).
    #[allow(unsafe_code)]
    pub(crate) fn copy_to(&self, at: usize, count: usize, out: &mut Vec<u8>) -> bool {
        assert!(at <= self.len && count <= self.len - at);
        out.reserve(count);
        let capacity = self.ring.capacity as usize;
        let mut from = at;
        while from < at + count {
            if from >= self.ready.get() && !self.fill(from) {
                return false;
            }
            let offset = self.offset(from);
            let mut n = (at + count - from)
                .min(self.ready.get() - from)
                .min(capacity - offset);
            if self.streamed {
                // A step at a time (see `stream::PUBLISH`): the room goes
                // back as the copy goes, and the copies are large.
                n = n.min(stream::to_step(self.start + from as u64, capacity as u64) as usize);
            }
            let to = out.spare_capacity_mut().as_mut_ptr().cast::<u8>();
            // SAFETY: the source range lies inside the data area (`n`
            // stops at its end) and inside what the sender has written;
            // the destination is `n` reserved bytes of `out`, which no
            // other reference sees. The peer may write the source
            // meanwhile; the copy is then garbled, never out of bounds.
            unsafe { std::ptr::copy_nonoverlapping(self.source(from), to, n) };
            let len = out.len() + n;
            // SAFETY: the `n` bytes after the old length were just written.
            unsafe { out.set_len(len) };
            from += n;
            if self.streamed && from - self.released.get() >= stream::release_step(capacity) {
                self.release(from);
            }
        }
        true
    }

    /// Waits until byte `at` of a streamed body is written; false (and
    /// [`ended`](Self::ended) set) when it never will be.
    #[cold]
    fn fill(&self, at: usize) -> bool {
        if !self.streamed || self.ended.get().is_some() {
            return false;
        }
        // Reads go front to back: everything before `at` is read, and the
        // sender may need that room to write `at`.
        self.release(at);
        let need = self.start + at as u64 + 1;
        let mut watch = self
            .watch
            .get()
            .unwrap_or_else(|| stream::Watch::new(self.ring, self.start, self.len as u64));
        let result = stream::wait_filled(self.ring, need, &mut watch, self.peer_gone);
        self.watch.set(Some(watch));
        match result {
            Ok(filled) => {
                let written = filled.saturating_sub(self.start).min(self.len as u64);
                self.ready.set(self.ready.get().max(written as usize));
                true
            }
            Err(ended) => {
                self.ended.set(Some(ended));
                false
            }
        }
    }

    fn release(&self, upto: usize) {
        if upto > self.released.get() {
            self.released.set(upto);
            self.ring.release(self.start + upto as u64);
        }
    }

    /// Whether a streamed body came to an end other than being written
    /// whole, waiting (and giving the room back) for the rest of a body
    /// whose reading stopped early, so that its fate is known.
    pub(crate) fn ended(&self) -> Option<Ended> {
        while self.streamed && self.ended.get().is_none() && self.ready.get() < self.len {
            self.fill(self.ready.get());
        }
        self.ended.get()
    }
}

/// A random, non-zero ring id.
fn random_id() -> io::Result<u64> {
    use std::io::Read;
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(u64::from_ne_bytes(bytes).max(1))
}

#[allow(unsafe_code)]
fn futex_wait(word: &AtomicU32, seen: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: FUTEX_WAIT (shared, not PRIVATE: the other side is another
    // process) on a live, aligned u32 of a shared mapping with a relative
    // timeout that outlives the call. Any outcome (woken, EAGAIN because
    // the word moved, timeout, EINTR) just makes the caller look again.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            seen,
            &ts as *const libc::timespec,
        )
    };
}

#[allow(unsafe_code)]
fn futex_wake(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE of at most one waiter on a live u32 of a shared
    // mapping; it reads nothing but the address.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, 1) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use postcard::ser_flavors::Flavor;

    #[test]
    fn bodies_fill_wrap_and_are_freed() {
        let mut tx = RingTx::create(MIN_ACCEPTED * 4).unwrap();
        let rx = RingRx::adopt(tx.fd().try_clone_to_owned().unwrap(), tx.id(), true).unwrap();
        assert!(tx.acked());
        let len = MIN_ACCEPTED as u64 + 100;
        let mut starts = Vec::new();
        while let Some(start) = tx.place(len, 0).unwrap() {
            let mut region = tx.region(start, len as usize);
            region
                .try_extend(&vec![starts.len() as u8; len as usize])
                .unwrap();
            tx.commit(start, len);
            starts.push(start);
        }
        assert_eq!(starts.len(), 3, "three bodies of a bit over a quarter fit");
        let here = || false;
        let body = rx.body(starts[1], len, false, &here).unwrap();
        let mut out = Vec::new();
        assert!(body.copy_to(0, body.len(), &mut out));
        assert!(out.iter().all(|&b| b == 1));
        rx.release(starts[0] + len);
        let next = tx.place(len, 0).unwrap().expect("room after a release");
        assert_eq!(next % tx.capacity, 0, "a body that would wrap starts over");
        assert!(rx.body(next, len, false, &here).is_ok());
        assert!(rx.body(next + 1, tx.capacity, false, &here).is_err());
        assert!(
            rx.body(next + 1, tx.capacity, true, &here).is_ok(),
            "a stream wraps"
        );
        assert!(rx.body(u64::MAX - 2, 4, true, &here).is_err());
    }

    #[test]
    fn small_bodies_stay_in_the_window_of_a_grown_ring() {
        let mut tx = RingTx::create(4 * MIN_RING).unwrap();
        let rx = RingRx::adopt(tx.fd().try_clone_to_owned().unwrap(), tx.id(), true).unwrap();
        // A size that does not divide the window, placed with a skew.
        let len = MIN_RING as u64 / 7 + 13;
        let skew = 17;
        let window = MIN_RING as u64;
        // A receiver that lags: the window's start is unread, so bodies go
        // on past the window's end into the rest of the ring rather than
        // wait, never over an unread one, until the ring is full.
        let mut unread: Vec<u64> = Vec::new();
        while let Some(start) = tx.place(len, skew).unwrap() {
            assert!(
                unread.iter().all(|&u| start >= u + len),
                "a body placed over an unread one"
            );
            tx.commit(start, len);
            unread.push(start);
            assert!(unread.len() < 1000, "the ring never filled");
        }
        assert!(
            unread.len() as u64 >= 2 * (window / len),
            "only {} bodies before the ring was full",
            unread.len()
        );
        // A receiver that keeps up (every body is read before the next is
        // placed): no body reaches past the window's end.
        rx.release(unread.last().unwrap() + len);
        for i in 0..40 {
            let start = tx.place(len, skew).unwrap().expect("room");
            assert!(
                start % tx.capacity + len <= window,
                "body {i} at offset {} reaches past the window",
                start % tx.capacity
            );
            tx.commit(start, len);
            rx.release(start + len);
        }
        // A receiver one body behind: at most one body past the window's
        // end before the next starts over.
        let mut behind = None;
        let mut past = 0;
        for _ in 0..40 {
            let start = tx.place(len, skew).unwrap().expect("room");
            tx.commit(start, len);
            if start % tx.capacity + len > window {
                past += 1;
                assert!(past <= 2, "three bodies in a row past the window");
            } else {
                past = 0;
            }
            if let Some(end) = behind.replace(start + len) {
                rx.release(end);
            }
        }
    }

    #[test]
    fn impossible_counters_and_wrong_fds_are_refused() {
        let tx = RingTx::create(MIN_ACCEPTED).unwrap();
        let rx = RingRx::adopt(tx.fd().try_clone_to_owned().unwrap(), tx.id(), true).unwrap();
        rx.release(1 << 40);
        assert!(tx.place(1, 0).is_err());
        let other = RingTx::create(MIN_ACCEPTED).unwrap();
        let fd = other.fd().try_clone_to_owned().unwrap();
        assert!(
            RingRx::adopt(fd, tx.id(), true).is_err(),
            "inode mismatch accepted"
        );
        let file: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
        assert!(RingRx::adopt(file, tx.id(), true).is_err());
    }

    #[test]
    fn a_waiting_sender_is_woken_by_a_release() {
        let mut tx = RingTx::create(MIN_ACCEPTED).unwrap();
        let rx = RingRx::adopt(tx.fd().try_clone_to_owned().unwrap(), tx.id(), true).unwrap();
        let len = MIN_ACCEPTED as u64;
        let start = tx.place(len, 0).unwrap().unwrap();
        tx.commit(start, len);
        assert_eq!(tx.place(1, 0).unwrap(), None);
        let t0 = Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(20));
                rx.release(len);
            });
            assert!(tx
                .wait_room(len, Instant::now() + Duration::from_secs(10))
                .unwrap());
        });
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert!(!tx
            .wait_room(2 * len, Instant::now() + Duration::from_millis(10))
            .unwrap());
    }
}
