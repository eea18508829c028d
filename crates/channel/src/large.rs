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
use crate::ring::{Corrupt, RingRx, RingTx, MAX_RING, MIN_ACCEPTED, MIN_RING};
use crate::wire::{BodyKind, Header, RingRef, HEADER_LEN, RING_FIELDS};
use crate::{fdtable, ChannelError, FrameError};

/// How long a send that may wait waits for room in a full ring before its
/// value takes a memfd of its own instead. Bounded, so that a thread that
/// sends many large values before receiving any (from the same channel)
/// never deadlocks on its own ring.
const RING_WAIT: Duration = Duration::from_millis(10);

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

/// Sends `value`, whose encoding is `size` bytes with its largest byte
/// block at `skew`, through the ring. `None`
/// when the ring cannot take it (none allowed, no room in time, the lock
/// busy for a bounded send, an encoding that changed size): the caller
/// then sends it in a memfd.
pub(crate) fn send_in_ring<T: Serialize + ?Sized>(
    shared: &Shared,
    value: &T,
    (size, skew): (usize, usize),
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
    if state.off || !state.ready(size, shared.config.get_shared_ring()) {
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
    let attached = !ring.acked();
    let max = MAX_FDS - usize::from(attached);
    if fds.len() > max {
        return Some(Err(SendFail::Failed(ChannelError::TooManyFds {
            count: fds.len(),
            max,
        })));
    }
    bytes.clear();
    bytes.resize(HEADER_LEN + RING_FIELDS, 0);
    Header {
        kind: BodyKind::Ring,
        fd_count: fds.len(),
        body_len: size as u64,
        ring: Some(RingRef {
            id: ring.id(),
            start,
            retire: state.retire,
            attached,
        }),
    }
    .write(bytes);
    let all: Vec<BorrowedFd<'_>> = fds
        .iter()
        .map(AsFd::as_fd)
        .chain(attached.then(|| ring.fd()))
        .collect();
    let sent = shared.link.send_frame(&[IoSlice::new(bytes)], &all, wait);
    drop(all);
    if sent.is_ok() {
        ring.commit(start, size as u64);
        state.retire = 0;
    }
    Some(sent.map_err(send_fail))
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
}

impl RingSet {
    /// The ring a frame names: one mapped before, or adopted from the fd
    /// the frame carries, for a receiver whose limit is `limit`.
    pub(crate) fn ring_for(
        &mut self,
        r: RingRef,
        attached: Option<OwnedFd>,
        limit: usize,
    ) -> Result<RingUse<'_>, FrameError> {
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
