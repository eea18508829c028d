//! Where bodies above the inline threshold go: the sending end's shared
//! ring when it has room, otherwise a sealed memfd of their own; and, on
//! the receiving side, the rings a receiver has mapped.

use std::cell::Cell;
use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use courier_transport::{Wait, MAX_FDS};
use serde::Serialize;

use crate::codec::{send_fail, Scratch, SendFail, Shared};
use crate::ring::{Corrupt, RingRx, RingTx, MAX_RING, MIN_ACCEPTED, MIN_RING, STREAM_ABOVE};
use crate::wire::{self, BodyKind, Header, RingRef, HEADER_LEN, RING_FIELDS};
use crate::{fdtable, ChannelError, FrameError};

/// How long a send that may wait waits for room in a full ring before its
/// value takes a memfd of its own instead. Bounded, so that a thread that
/// sends many large values before receiving any (from the same channel)
/// never deadlocks on its own ring.
const RING_WAIT: Duration = Duration::from_millis(10);

/// How long a streaming sender waits for the receiver to free room before
/// it withdraws the body (and sends the value in a memfd). Longer than
/// [`RING_WAIT`]: the body's frame has gone, and a receiver decoding it
/// slowly (a debug build, many small fields) frees room only every eighth
/// of the ring. A thread that streams to itself loses this once: until the
/// withdrawn frame is read, its large values go in one piece.
const STREAM_PATIENCE: Duration = Duration::from_millis(100);

/// Rings a receiver keeps mapped: one per sending process (normally one).
/// Beyond that, a new ring is mapped for its frame only and not
/// acknowledged, so its frames keep carrying its fd: slower, never lost.
const MAX_RINGS: usize = 8;

/// A sending end's ring, behind the lock that keeps ring order equal to
/// frame order.
#[derive(Default)]
pub(crate) struct RingState {
    tx: Option<RingTx>,
    /// A replaced ring the next frame tells the receiver to drop (0: none).
    retire: u64,
    /// Set when the receiver broke the protocol: no ring any more.
    off: bool,
}

impl RingState {
    /// Makes sure there is a ring for a body of `size` bytes: the current
    /// one if the body is at most half of it, else a new one four times the
    /// body, within `cap`. False when the body is too large for any.
    fn ready(&mut self, size: usize, cap: usize) -> bool {
        let fits = |ring: &RingTx| size <= ring.capacity() / 2;
        if !self.tx.as_ref().is_some_and(fits) {
            if size > cap / 2 || cap < MIN_ACCEPTED {
                return false;
            }
            let capacity = size
                .saturating_mul(4)
                .checked_next_power_of_two()
                .unwrap_or(usize::MAX)
                .clamp(MIN_RING.min(cap), cap);
            let Ok(ring) = RingTx::create(capacity) else {
                return false;
            };
            if let Some(old) = self.tx.replace(ring) {
                self.retire = old.id();
            }
        }
        true
    }
}

thread_local! {
    /// Set while this thread holds a ring's lock: a `Serialize` impl that
    /// sends (on any channel) from inside an encode must not wait for a
    /// ring lock this thread may hold. Its value takes the memfd path.
    static IN_RING: Cell<bool> = const { Cell::new(false) };
}

fn lock(ring: &Mutex<RingState>, wait: Wait) -> Option<MutexGuard<'_, RingState>> {
    if IN_RING.get() {
        return None;
    }
    match wait {
        Wait::Block => Some(ring.lock().unwrap_or_else(|p| p.into_inner())),
        // A bounded send does not queue behind another thread's send: its
        // value takes the memfd path.
        Wait::Never | Wait::Until(_) => match ring.try_lock() {
            Ok(guard) => Some(guard),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        },
    }
}

/// What the measuring pass found out about a value's encoding.
pub(crate) struct Sizing {
    /// Its length in bytes.
    pub(crate) size: usize,
    /// The body's byte to put on a cache-line boundary in a ring (see
    /// `codec::Measure`).
    pub(crate) skew: usize,
    /// How many fd fields it has.
    pub(crate) fd_fields: u32,
}

/// Sends `value`, whose encoding `sizing` describes, through the ring:
/// streamed (see [`stream`](crate::ring::stream)) when it is large, has no
/// fds and the send may block, else in one piece. `None` when the ring
/// cannot take it (none allowed, no room in time, the lock busy for a
/// bounded send, an encoding that changed size, a withdrawn stream): the
/// caller then sends it in a memfd.
pub(crate) fn send_in_ring<T: Serialize + ?Sized>(
    shared: &Shared,
    value: &T,
    sizing: Sizing,
    wait: Wait,
    scratch: &mut Scratch,
) -> Option<Result<(), SendFail>> {
    let mut guard = lock(shared.ring.as_ref()?, wait)?;
    struct Held;
    impl Drop for Held {
        fn drop(&mut self) {
            IN_RING.set(false);
        }
    }
    IN_RING.set(true);
    let _held = Held;
    let state: &mut RingState = &mut guard;
    if state.off {
        return None;
    }
    let Sizing {
        size,
        skew,
        fd_fields,
    } = sizing;
    if size > STREAM_ABOVE && fd_fields == 0 && matches!(wait, Wait::Block) {
        match stream(shared, state, value, (size, skew), scratch) {
            Streamed::Sent(sent) => return Some(sent),
            Streamed::Withdrawn => return None,
            Streamed::NotNow => {}
        }
    }
    if !state.ready(size, shared.config.get_shared_ring()) {
        return None;
    }
    let ring = state.tx.as_mut()?;
    let start = match place(ring, size as u64, skew as u64, wait) {
        Ok(start) => start?,
        Err(Corrupt) => {
            state.tx = None;
            state.off = true;
            return None;
        }
    };
    let Scratch { bytes, fds } = scratch;
    let written = fdtable::encoding(fds, || {
        postcard::serialize_with_flavor(value, ring.region(start, size))
    });
    if written != Ok(size) {
        fds.clear();
        return None;
    }
    let body = RingBodyRef {
        start,
        size,
        streamed: false,
        retire: state.retire,
    };
    let sent = send_ring_frame(shared, ring, body, fds, bytes, wait);
    if sent.is_ok() {
        ring.commit(start, size as u64);
        state.retire = 0;
    }
    Some(sent)
}

/// How a value went as a streamed body.
enum Streamed {
    /// Its frame went (and, when that succeeded, the whole body).
    Sent(Result<(), SendFail>),
    /// The receiver drops it: the value has to go another way.
    Withdrawn,
    /// Not streamed: a withdrawn body's frame may be unread.
    NotNow,
}

/// Streams `value` (`size` bytes, placed by `skew`)
/// through the ring: the frame first, then the body as room frees.
fn stream<T: Serialize + ?Sized>(
    shared: &Shared,
    state: &mut RingState,
    value: &T,
    (size, skew): (usize, usize),
    scratch: &mut Scratch,
) -> Streamed {
    // Any ring will do: a streamed body wraps around it.
    if !state.ready(1, shared.config.get_shared_ring()) {
        return Streamed::NotNow;
    }
    let Some(ring) = state.tx.as_mut() else {
        return Streamed::NotNow;
    };
    let start = match ring.stream_start(skew as u64) {
        Ok(Some(start)) => start,
        Ok(None) => return Streamed::NotNow,
        Err(Corrupt) => {
            state.tx = None;
            state.off = true;
            return Streamed::Withdrawn;
        }
    };
    let Scratch { bytes, fds } = scratch;
    let body = RingBodyRef {
        start,
        size,
        streamed: true,
        retire: state.retire,
    };
    if let Err(e) = send_ring_frame(shared, ring, body, &[], bytes, Wait::Block) {
        return Streamed::Sent(Err(e));
    }
    state.retire = 0;
    let mut writer = ring.stream(start, size as u64, STREAM_PATIENCE);
    let written = fdtable::encoding(fds, || postcard::serialize_with_flavor(value, &mut writer));
    if written == Ok(size) && fds.is_empty() {
        writer.finish();
        return Streamed::Sent(Ok(()));
    }
    // The encoding failed, changed size or gained fds (a `Serialize` impl
    // that differs between two calls), or the receiver freed no room: the
    // writer withdraws the body as it goes.
    drop(writer);
    fds.clear();
    if ring.corrupt() {
        state.tx = None;
        state.off = true;
    }
    Streamed::Withdrawn
}

/// Where a ring frame's body is.
struct RingBodyRef {
    start: u64,
    size: usize,
    streamed: bool,
    /// The ring the frame retires (0: none).
    retire: u64,
}

/// Sends the frame naming `body` in `ring`, with `fds` (and the ring's
/// memfd after them until the receiver has acknowledged it).
fn send_ring_frame(
    shared: &Shared,
    ring: &RingTx,
    body: RingBodyRef,
    fds: &[OwnedFd],
    bytes: &mut Vec<u8>,
    wait: Wait,
) -> Result<(), SendFail> {
    let attached = !ring.acked();
    let max = MAX_FDS - usize::from(attached);
    if fds.len() > max {
        return Err(SendFail::Failed(ChannelError::TooManyFds {
            count: fds.len(),
            max,
        }));
    }
    bytes.clear();
    bytes.resize(HEADER_LEN + RING_FIELDS, 0);
    Header {
        kind: BodyKind::Ring,
        fd_count: fds.len(),
        body_len: body.size as u64,
        ring: Some(RingRef {
            id: ring.id(),
            start: body.start,
            retire: body.retire,
            attached,
            streamed: body.streamed,
        }),
    }
    .write(bytes);
    let all: Vec<BorrowedFd<'_>> = fds
        .iter()
        .map(AsFd::as_fd)
        .chain(attached.then(|| ring.fd()))
        .collect();
    shared
        .link
        .send_frame(&[IoSlice::new(bytes)], &all, wait)
        .map_err(send_fail)
}

/// Where the body goes, waiting a little for room if the send may wait.
fn place(ring: &RingTx, size: u64, skew: u64, wait: Wait) -> Result<Option<u64>, Corrupt> {
    if let Some(start) = ring.place(size, skew)? {
        return Ok(Some(start));
    }
    let until = match wait {
        Wait::Never => return Ok(None),
        Wait::Block => Instant::now() + RING_WAIT,
        Wait::Until(deadline) => deadline.min(Instant::now() + RING_WAIT),
    };
    if ring.wait_room(size + 64, until)? {
        ring.place(size, skew)
    } else {
        Ok(None)
    }
}

/// The largest ring a sender makes for values of at most `limit` bytes (see
/// `RingState::ready`): four times the value, rounded up to a power of
/// two, between `MIN_RING` and `MAX_RING`.
fn largest_ring_within(limit: usize) -> u64 {
    limit
        .saturating_mul(4)
        .checked_next_power_of_two()
        .unwrap_or(usize::MAX)
        .clamp(MIN_RING, MAX_RING) as u64
}

/// The rings a receiver has mapped, most recently used last.
#[derive(Default)]
pub(crate) struct RingSet {
    rings: Vec<RingRx>,
    /// A ring frame came since [`took_frame`](Self::took_frame) last looked.
    frame_came: bool,
}

impl RingSet {
    /// Whether a ring frame came since the last call.
    #[inline]
    pub(crate) fn took_frame(&mut self) -> bool {
        std::mem::take(&mut self.frame_came)
    }

    /// The ring a frame names: one mapped before, or adopted from the fd
    /// the frame carries, for a receiver whose limit is `limit`.
    pub(crate) fn ring_for(
        &mut self,
        r: RingRef,
        attached: Option<OwnedFd>,
        limit: usize,
    ) -> Result<RingUse<'_>, FrameError> {
        self.frame_came = true;
        if let Some(index) = self.rings.iter().position(|ring| ring.id() == r.id) {
            return Ok(RingUse::Kept(&self.rings[index])); // a resent fd closes on return
        }
        let fd = attached.ok_or(FrameError::BadSharedMemory {
            reason: "frame names a ring that was never sent",
        })?;
        // Rings their senders have dropped and whose every body has been
        // read go now (a retiring frame may have been refused, or never
        // sent).
        self.drop_where(RingRx::finished);
        let ring = RingRx::adopt(fd, r.id, false)?;
        // Every page of a kept ring that a body was read from stays
        // resident here, and reading the holes of a sparse ring allocates
        // them. So the rings kept mapped together are at most MAX_RINGS
        // times the largest ring a sender makes for values within this
        // receiver's limit; a ring past that is read for its frame only
        // (its frames keep carrying the fd), and no peer can make a
        // receiver keep more mapped.
        let kept: u64 = self.rings.iter().map(RingRx::capacity).sum();
        let budget = largest_ring_within(limit).saturating_mul(MAX_RINGS as u64);
        if self.rings.len() == MAX_RINGS || kept.saturating_add(ring.capacity()) > budget {
            return Ok(RingUse::Once(ring));
        }
        ring.acknowledge();
        self.rings.push(ring);
        Ok(RingUse::Kept(&self.rings[self.rings.len() - 1]))
    }

    /// A ring frame refused before its body was read (too large for this
    /// receiver, a wrong fd count): its body's space still goes back to
    /// the sender when the frame names a ring kept here, else a streamed
    /// body the sender still writes would never get room. Only the ring's
    /// sender knows its id, so no one else can free its space.
    pub(crate) fn release_refused(&self, frame: &[u8]) {
        let Some((r, body_len)) = wire::ring_fields(frame) else {
            return;
        };
        if let Some(ring) = self.rings.iter().find(|ring| ring.id() == r.id) {
            ring.release(r.start.saturating_add(body_len));
        }
    }

    /// Drops the ring a valid frame retires (its sender moved to the
    /// frame's ring; every frame naming the old one came before).
    pub(crate) fn retire(&mut self, r: RingRef) {
        if r.retire != 0 && r.retire != r.id {
            self.drop_where(|ring| ring.id() == r.retire);
        }
    }

    /// Unmaps the rings `which` selects, telling their senders.
    fn drop_where(&mut self, which: impl Fn(&RingRx) -> bool) {
        self.rings.retain(|ring| {
            let gone = which(ring);
            if gone {
                ring.forget();
            }
            !gone
        });
    }

    /// The rings' ids and fds (for a receiver that travels).
    pub(crate) fn rings(&self) -> impl Iterator<Item = (u64, BorrowedFd<'_>)> {
        self.rings.iter().map(|ring| (ring.id(), ring.fd()))
    }

    /// Adds a ring that arrived with a travelling receiver (one past the
    /// limit closes: its sender's frames carry it again as they need).
    pub(crate) fn insert(&mut self, ring: RingRx) {
        if self.rings.len() < MAX_RINGS {
            self.rings.push(ring);
        }
    }
}

/// A ring a receiver reads a frame from.
pub(crate) enum RingUse<'a> {
    /// Mapped for as long as the receiver lives.
    Kept(&'a RingRx),
    /// Mapped for this frame only.
    Once(RingRx),
}

impl std::ops::Deref for RingUse<'_> {
    type Target = RingRx;

    fn deref(&self) -> &RingRx {
        match self {
            RingUse::Kept(ring) => ring,
            RingUse::Once(ring) => ring,
        }
    }
}
