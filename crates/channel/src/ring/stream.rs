//! Large bodies streamed through the ring: read while they are written.
//!
//! A body in one piece is written whole before its frame goes, so the
//! receiver starts copying out only once the sender has finished copying
//! in. A 16 MiB value then needs a ring four times its size, and both
//! copies run through memory long out of the caches. A streamed body's
//! frame goes first. The sender then writes the body in steps through a
//! ring of any size, wrapping as often as the body's length needs, and
//! publishes how far it got in `filled`; the receiver decodes as the bytes
//! come and gives them back (`consumed`) as soon as it has copied them out.
//! Both copies then run on ring memory that is still in the caches.
//!
//! The sender streams a value (see `large::send_in_ring`) when its encoding
//! is over [`STREAM_ABOVE`] bytes, it carries no fds (they travel with the
//! frame, which goes before the encoding), and the send may block.
//!
//! A stream its sender cannot finish is withdrawn: its encoding failed,
//! changed size or gained fds (or its `Serialize` impl panicked), or the
//! receiver freed no room for the sender's patience (it may be the same
//! thread, or not receiving). The
//! sender marks the body in `withdrawn` before publishing its last byte,
//! so no receiver has the whole value; the receiver drops what it decoded
//! and goes on to the next frame as if this one never came, and the sender
//! sends the value another way or returns its error. `withdrawn` names one
//! body at a time, so no body streams while a withdrawn one's frame may be
//! unread.
//!
//! A receiver waits for a stream's bytes while they keep coming: a sender
//! that makes no progress (a step) for [`STALL`], or whose body is not in
//! by [`STALL`] plus its length at [`MIN_RATE`], is taken to be gone, and
//! the receive fails with
//! [`FrameError::Stalled`](crate::FrameError::Stalled). So no peer holds a
//! receive for longer than that, however it moves `filled`.
//!
//! Waiting is a short spin (the other side is usually mid-copy on another
//! CPU), then a futex wait on a word the other side bumps: `wake` with
//! `wake_at` for room, as for bodies in one piece, `fill_wake` with
//! `fill_at` for bytes.

use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use super::{
    futex_wait, futex_wake, Corrupt, RingRx, RingTx, CONSUMED, CONTROL, FILLED, FILL_AT, FILL_WAKE,
    LINE, MIN_RING, WAKE, WAKE_AT, WITHDRAWN,
};

/// Bodies longer than this stream (when they may, see the module docs).
/// Shorter ones go in one piece, which costs no waiting on either side.
pub(crate) const STREAM_ABOVE: usize = MIN_RING / 2;

/// The sender publishes its progress every this many bytes (at most a
/// quarter of the ring), at positions that are multiples of it, and both
/// sides copy a step at a time: copies of 1 MiB, not of 128 KiB. glibc's
/// `memcpy` moves copies under 1 MiB with `rep movsb` on the AMD machine
/// of docs/measurements.md, which runs at half speed when the source and
/// the destination sit at different offsets in their cache lines (a ring
/// line against a `Vec` from `malloc`, 16 bytes into one), and larger
/// ones with a vector loop that does not care (docs/measurements.md,
/// "Streamed bodies copy a MiB at a time").
const PUBLISH: u64 = 1 << 20;

/// How long either side spins before it sleeps on a futex: about the time
/// the other side takes to copy a step (1 MiB at 20 GB/s). Only when this
/// thread may run on more than one CPU (see [`spin_time`]).
const SPIN: Duration = Duration::from_micros(50);

/// How long a receiver waits for a streamed body's sender to make progress
/// (see [`Watch`]) before it gives up on the body.
pub(crate) const STALL: Duration = Duration::from_secs(2);

/// How a streamed body ended, other than written whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Its sender withdrew it: there is no value.
    Withdrawn,
    /// Its sender published nothing new for [`STALL`].
    Stalled,
    /// Its sender went before finishing it: the value was never sent.
    SenderGone,
}

/// While a receiver sleeps waiting for a streamed body's bytes, it looks
/// this often whether the sender has gone.
const LOOK_GONE: Duration = Duration::from_millis(20);

/// A receiver gives a streamed body's bytes back every this many bytes: an
/// eighth of the ring, so a sender waiting for a quarter is woken after
/// two steps.
pub(crate) fn release_step(capacity: usize) -> usize {
    (capacity / 8).max(1)
}

/// Bytes from ring position `at` to the next step of a ring of `capacity`
/// bytes: a streamed body's copies, on either side, end there.
pub(crate) fn to_step(at: u64, capacity: u64) -> u64 {
    let step = publish_step(capacity);
    step - at % step
}

/// The step of a streamed body in a ring of `capacity` bytes: it divides
/// the capacity (both are powers of two) when the capacity is at least 4.
pub(crate) fn publish_step(capacity: u64) -> u64 {
    PUBLISH.min(capacity / 4).max(1)
}

/// How long to spin before sleeping, looked up once per body: [`SPIN`] when
/// this thread may run on more than one CPU, else nothing (the other side
/// could only run once this one stops: measured on one CPU, spinning made
/// a 16 MiB round trip half as slow again; on two it moved 16 MiB values
/// about 6 % faster).
pub(crate) fn spin_time() -> Duration {
    use nix::sched::{sched_getaffinity, CpuSet};
    let Ok(set) = sched_getaffinity(nix::unistd::Pid::from_raw(0)) else {
        return Duration::ZERO;
    };
    let cpus = (0..CpuSet::count()).filter(|&cpu| set.is_set(cpu).unwrap_or(false));
    if cpus.take(2).count() > 1 {
        SPIN
    } else {
        Duration::ZERO
    }
}

/// [`spin_time`] for a receiver, looked up again at most every 100 ms (its
/// thread's CPUs may change while it runs).
#[derive(Default)]
pub(crate) struct SpinTime {
    spin: Duration,
    looked: Option<Instant>,
}

impl SpinTime {
    pub(crate) fn get(&mut self) -> Duration {
        let now = Instant::now();
        if self
            .looked
            .is_none_or(|at| now.duration_since(at) > Duration::from_millis(100))
        {
            (self.spin, self.looked) = (spin_time(), Some(now));
        }
        self.spin
    }
}

impl RingTx {
    /// Where a streamed body would start (its byte `skew` on a cache line,
    /// as for [`place`](RingTx::place)), or `None` while the frame of a
    /// withdrawn one may be unread.
    pub(crate) fn stream_start(&mut self, skew: u64) -> Result<Option<u64>, Corrupt> {
        let consumed = self.consumed()?;
        if self.withdrawn_until != 0 {
            if consumed < self.withdrawn_until {
                return Ok(None);
            }
            self.withdrawn_until = 0;
        }
        let skew = skew % LINE;
        Ok(Some((self.written + skew).next_multiple_of(LINE) - skew))
    }

    /// The writer of a body of `len` bytes streamed from `start`, whose
    /// frame has been sent: a postcard output flavor (as `&mut`). It gives
    /// up when the receiver frees no room for `patience`.
    ///
    /// From here the body counts as sent, and as withdrawn until
    /// [`StreamWriter::finish`]: a writer dropped without it (an encoding
    /// that failed, changed size or gained fds, no room in time, or a
    /// `Serialize` impl that panicked) withdraws the body, so that the
    /// receiver drops it and the ring's positions stay right.
    pub(crate) fn stream(&mut self, start: u64, len: u64, patience: Duration) -> StreamWriter<'_> {
        self.written = start + len;
        self.withdrawn_until = start + len;
        StreamWriter {
            ring: self,
            start,
            len,
            pos: 0,
            published: 0,
            room: 0,
            patience,
            spin: spin_time(),
            finished: false,
        }
    }

    /// Tells a receiver that a streamed body is written up to `filled`,
    /// waking it if it waits for that.
    fn publish(&self, filled: u64) {
        self.map.u64_at(FILLED).store(filled, SeqCst);
        let wanted = self.map.u64_at(FILL_AT).load(SeqCst);
        if wanted != 0 && filled >= wanted {
            let wake = self.map.u32_at(FILL_WAKE);
            wake.fetch_add(1, SeqCst);
            futex_wake(wake);
        }
    }
}

/// Where a streamed body is encoded: a postcard output flavor that writes
/// into the ring as room frees, and publishes its progress as it goes.
pub(crate) struct StreamWriter<'a> {
    ring: &'a mut RingTx,
    start: u64,
    len: u64,
    /// Bytes written.
    pos: u64,
    /// Bytes published: never the last one (see [`finish`](Self::finish)).
    published: u64,
    /// The position up to which the ring is known to be free.
    room: u64,
    patience: Duration,
    /// How long to spin before sleeping.
    spin: Duration,
    /// The whole body was written and published.
    finished: bool,
}

impl Drop for StreamWriter<'_> {
    fn drop(&mut self) {
        if !self.finished {
            // The receiver drops the body; its space stays counted as used
            // and no body streams until its frame has been read (see
            // `RingTx::stream`).
            self.ring
                .map
                .u64_at(WITHDRAWN)
                .store(self.start + 1, SeqCst);
            let wake = self.ring.map.u32_at(FILL_WAKE);
            wake.fetch_add(1, SeqCst);
            futex_wake(wake);
        }
    }
}

impl StreamWriter<'_> {
    /// Publishes the body's last bytes, once all `len` are written: the
    /// receiver can now read it whole.
    pub(crate) fn finish(mut self) {
        debug_assert_eq!(self.pos, self.len);
        self.ring.publish(self.start + self.len);
        self.ring.withdrawn_until = 0;
        self.finished = true;
    }

    /// How many bytes (at least 1, at most `want`) can be copied to the
    /// current position in one go, up to the next step, waiting for room
    /// first if need be.
    fn writable(&mut self, want: u64) -> postcard::Result<u64> {
        let at = self.start + self.pos;
        if at >= self.room {
            self.wait_room(at)?;
        }
        let capacity = self.ring.capacity;
        Ok(want
            .min(self.room - at)
            .min(capacity - at % capacity)
            .min(to_step(at, capacity)))
    }

    /// The receiver's progress, checked: it can only have freed bodies
    /// sent before this one, and this one.
    fn consumed(&self) -> postcard::Result<u64> {
        let consumed = self.ring.map.u64_at(CONSUMED).load(SeqCst);
        if consumed > self.start + self.len {
            return Err(postcard::Error::SerializeBufferFull);
        }
        Ok(consumed)
    }

    /// Waits until the receiver has freed room at `at`: a quarter of the
    /// ring (or the rest of the body), not a byte, so that neither side
    /// wakes the other for every step. Fails after `patience` without any
    /// room freed.
    #[cold]
    fn wait_room(&mut self, at: u64) -> postcard::Result<()> {
        let capacity = self.ring.capacity;
        let consumed = self.consumed()?;
        if consumed + capacity > at {
            self.room = consumed + capacity;
            return Ok(());
        }
        // The receiver can only free what it can read.
        self.publish();
        let goal = at + (capacity / 4).min(self.start + self.len - at) - capacity;
        let wake = self.ring.map.u32_at(WAKE);
        let wake_at = self.ring.map.u64_at(WAKE_AT);
        let spin_until = Instant::now() + self.spin;
        let (mut last, mut deadline) = (consumed, None);
        let freed = loop {
            let consumed = match self.consumed() {
                Ok(consumed) if consumed >= goal => break Ok(consumed),
                Ok(consumed) => consumed,
                Err(e) => break Err(e),
            };
            let now = Instant::now();
            if now < spin_until {
                std::hint::spin_loop();
                continue;
            }
            if consumed != last || deadline.is_none() {
                (last, deadline) = (consumed, Some(now + self.patience));
            }
            let until = deadline.unwrap_or(now);
            if now >= until {
                break Err(postcard::Error::SerializeBufferFull);
            }
            let seen = wake.load(SeqCst);
            wake_at.store(goal.max(1), SeqCst);
            if self.consumed().is_ok_and(|c| c < goal) {
                futex_wait(wake, seen, until - now);
            }
        };
        wake_at.store(0, SeqCst);
        self.room = freed? + capacity;
        Ok(())
    }

    /// Publishes what is written, short of the body's last byte (see
    /// [`finish`](Self::finish)).
    fn publish(&mut self) {
        let upto = self.pos.min(self.len.saturating_sub(1));
        if upto > self.published {
            self.published = upto;
            self.ring.publish(self.start + upto);
        }
    }
}

impl postcard::ser_flavors::Flavor for &mut StreamWriter<'_> {
    type Output = usize;

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.try_extend(&[data])
    }

    #[allow(unsafe_code)]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if data.len() as u64 > self.len - self.pos {
            return Err(postcard::Error::SerializeBufferFull);
        }
        let capacity = self.ring.capacity;
        let mut rest = data;
        while !rest.is_empty() {
            let n = self.writable(rest.len() as u64)? as usize;
            let offset = ((self.start + self.pos) % capacity) as usize;
            let to = self.ring.map.at(CONTROL + offset);
            // SAFETY: `n` bytes from `offset` lie inside the data area
            // (`writable` stops at its end) and inside room the receiver
            // has freed; ring memory never overlaps a Rust slice; raw
            // writes race only with a peer's copies.
            unsafe { std::ptr::copy_nonoverlapping(rest.as_ptr(), to, n) };
            self.pos += n as u64;
            rest = &rest[n..];
            if (self.start + self.pos).is_multiple_of(publish_step(capacity)) {
                self.publish();
            }
        }
        Ok(())
    }

    fn finalize(self) -> postcard::Result<usize> {
        Ok(self.pos as usize)
    }
}

/// How a receiver's waits for one streamed body's bytes stand: what counts
/// as progress, and when it gives up.
#[derive(Clone, Copy)]
pub(crate) struct Watch {
    start: u64,
    end: u64,
    /// How far `filled` must rise past `best` to count as progress: the
    /// sender's step (a sender publishes at least that much at a time, or
    /// the body's end), so that a peer dripping bytes, or moving `filled`
    /// back and forth, does not keep a receiver waiting.
    step: u64,
    /// The furthest `filled` that counted as progress.
    best: u64,
    /// Stalled unless progress comes by then.
    stall_at: Instant,
    /// However it goes, the body must be in by then: [`STALL`] plus its
    /// length at [`MIN_RATE`].
    give_up_at: Instant,
    /// How long to spin before sleeping.
    spin: Duration,
}

/// The slowest a streamed body may come, on average, before a receiver
/// gives up on it (past the first [`STALL`]): far below what any sender
/// copies at, and a bound on how long a peer can hold a receive.
const MIN_RATE: u64 = 8 << 20;

impl Watch {
    pub(crate) fn new(ring: &RingRx, start: u64, len: u64) -> Watch {
        let now = Instant::now();
        Watch {
            start,
            end: start + len,
            step: publish_step(ring.capacity),
            best: start,
            stall_at: now + STALL,
            // Whole milliseconds, capped (a limit the user set near
            // `u64::MAX` must not overflow an `Instant`).
            give_up_at: now
                + STALL
                + Duration::from_millis((len / (MIN_RATE / 1000)).min(u64::from(u32::MAX))),
            spin: spin_time(),
        }
    }

    /// Takes note of `filled` as seen at `now`.
    fn observe(&mut self, filled: u64, now: Instant) {
        let filled = filled.clamp(self.start, self.end);
        if filled >= self.best.saturating_add(self.step).min(self.end) && filled > self.best {
            self.best = filled;
            self.stall_at = now + STALL;
        }
    }
}

/// Waits until the streamed body `watch` follows is written up to `need`,
/// and returns how far it is written, or how it ended first (`peer_gone`
/// says whether its sender has gone). Spins first where that can help (see
/// [`spin_time`]).
///
/// Once it sleeps, it asks to be woken when a quarter of the ring more (or
/// the rest of the body) is written, which in a ring over 4 MiB is more
/// than the next step: where both sides share a CPU, each wake switches
/// between them. A sender that can write that much without waiting for
/// room (everything before `need` is given back) always gets there; one
/// that stops short is looked at again every [`LOOK_GONE`].
pub(crate) fn wait_filled(
    ring: &RingRx,
    need: u64,
    watch: &mut Watch,
    peer_gone: &dyn Fn() -> bool,
) -> Result<u64, Ended> {
    let filled = ring.map.u64_at(FILLED);
    let start = watch.start;
    let withdrawn = || ring.map.u64_at(WITHDRAWN).load(SeqCst) == start.wrapping_add(1);
    let wake = ring.map.u32_at(FILL_WAKE);
    let fill_at = ring.map.u64_at(FILL_AT);
    let spin_until = Instant::now() + watch.spin;
    let mut look_gone = Instant::now() + LOOK_GONE;
    let result = loop {
        let now_filled = filled.load(SeqCst);
        let now = Instant::now();
        watch.observe(now_filled, now);
        if now_filled >= need {
            break Ok(now_filled);
        }
        if withdrawn() {
            break Err(Ended::Withdrawn);
        }
        if now < spin_until {
            std::hint::spin_loop();
            continue;
        }
        let deadline = watch.stall_at.min(watch.give_up_at);
        if now >= deadline {
            break Err(Ended::Stalled);
        }
        if now >= look_gone {
            // Gone means the socket's last other holder closed it; bytes
            // published before are still read (looked at again first).
            if peer_gone() && filled.load(SeqCst) < need && !withdrawn() {
                break Err(Ended::SenderGone);
            }
            look_gone = now + LOOK_GONE;
        }
        let seen = wake.load(SeqCst);
        let enough = need.saturating_add((ring.capacity / 4).saturating_sub(1));
        fill_at.store(enough.min(watch.end).max(1), SeqCst);
        if filled.load(SeqCst) < need && !withdrawn() {
            futex_wait(wake, seen, deadline.min(look_gone) - now);
        }
    };
    fill_at.store(0, SeqCst);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use postcard::ser_flavors::Flavor;
    use std::os::fd::AsFd;

    fn pair(capacity: usize) -> (RingTx, RingRx) {
        let tx = RingTx::create(capacity).unwrap();
        let rx =
            RingRx::adopt(tx.fd().as_fd().try_clone_to_owned().unwrap(), tx.id(), true).unwrap();
        (tx, rx)
    }

    fn consumed(rx: &RingRx) -> u64 {
        rx.map.u64_at(CONSUMED).load(SeqCst)
    }

    #[test]
    fn byte_by_byte_reads_give_room_back_as_they_go() {
        let capacity = 64 << 10;
        let (mut tx, rx) = pair(capacity);
        // Written and published whole first: the reads below never wait,
        // so only the reads themselves can give room back.
        let len = capacity as u64;
        let mut writer = tx.stream(0, len, Duration::from_secs(10));
        let bytes: Vec<u8> = (0..len).map(|i| i as u8).collect();
        (&mut writer).try_extend(&bytes).unwrap();
        writer.finish();
        let here = || false;
        let body = rx.body(0, len, true, &here).unwrap();
        let step = release_step(capacity);
        for at in 0..len as usize {
            assert_eq!(body.byte(at), Some(at as u8), "byte {at}");
            if at == 3 * step {
                assert!(
                    consumed(&rx) >= 2 * step as u64,
                    "after {at} bytes read one by one, {} given back",
                    consumed(&rx)
                );
            }
        }
        assert_eq!(body.ended(), None);
    }

    #[test]
    fn a_writer_publishes_at_the_rings_step_boundaries() {
        let capacity = 256 << 10;
        let step = publish_step(capacity);
        let (mut tx, rx) = pair(capacity as usize);
        let filled = || rx.map.u64_at(FILLED).load(SeqCst);
        // A body that starts off a step, written in slices that end off
        // one: `filled` only ever stops on a multiple of the step, the
        // last one the writer has passed, until the end.
        let (start, len) = (1000, 3 * step + 500);
        let mut writer = tx.stream(start, len, Duration::from_secs(10));
        let mut pos = 0;
        while pos < len {
            let n = 3000.min(len - pos);
            (&mut writer).try_extend(&vec![1; n as usize]).unwrap();
            pos += n;
            if pos < len {
                assert_eq!(
                    filled(),
                    (start + pos) / step * step,
                    "published after {pos} bytes"
                );
            }
        }
        writer.finish();
        assert_eq!(filled(), start + len);
    }

    #[test]
    fn a_writer_dropped_unfinished_withdraws_its_body() {
        let (mut tx, rx) = pair(64 << 10);
        let len = 1 << 20;
        let here = || false;
        {
            let mut writer = tx.stream(0, len, Duration::from_millis(10));
            // One step (a quarter of the ring) is published, the rest not.
            (&mut writer).try_extend(&[7; 20_000]).unwrap();
        }
        let body = rx.body(0, len, true, &here).unwrap();
        assert_eq!(body.byte(0), Some(7));
        assert_eq!(body.byte(16_383), Some(7));
        assert_eq!(body.byte(19_999), None, "written, never published");
        assert_eq!(body.ended(), Some(Ended::Withdrawn));
        drop(body);
        assert_eq!(
            consumed(&rx),
            len,
            "the withdrawn body's space comes back whole"
        );
        // Another stream waits for the withdrawn frame to be read: it is.
        assert_eq!(tx.stream_start(0).unwrap(), Some(len));
    }
}
