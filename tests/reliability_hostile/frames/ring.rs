//! Kind-2 frames, bodies in shared rings: valid ones in the sender's own
//! rings ([`Cat::RingOk`]), refused ones ([`Cat::RingBad`]), rings shrunk
//! after sending ([`Cat::RingShrunk`]) and rings rewritten or hole-punched
//! after sending ([`Cat::RingRewrite`]).

use std::os::unix::fs::FileExt;

use nix::fcntl::{fallocate, fcntl, FallocateFlags, FcntlArg, SealFlag};

use super::{
    shrink_after_send, Built, Hostile, BAD_RING_HUGE_ID, BAD_RING_NO_DATA, BAD_RING_TOO_BIG,
    BAD_RING_UNSEALED, BAD_SEALED_BODY,
};
use crate::categories::{Cat, Expect};
use crate::messages::{plain_body, V_ANY};
use crate::pool::FdRef;
use crate::settings::LIMIT;
use crate::support::memfd::{ring_file, ring_seals};
use crate::support::rng::Random;
use crate::support::wire::{ring_frame, Enc, RING_CLOSED, RING_CONTROL};

impl Hostile {
    /// Valid frames in the sender's own rings, sometimes with user fds,
    /// retiring another ring, or closing the ring.
    pub(super) fn ring_ok(&mut self) -> Built {
        let Some(k) = self.free_ring() else {
            return self.ring_bad();
        };
        let ring_cap = self.rings[k].cap;
        let with_fds = self.rng.chance(1, 10);
        let n = if with_fds { 1 + self.rng.index(8) } else { 0 };
        let body = if with_fds {
            let all: Vec<u64> = (0..n as u64).collect();
            Enc::default().var(V_ANY).list(&all).done()
        } else {
            let max = (ring_cap as usize).min(4096) - 16;
            plain_body(&mut self.rng, max)
        };
        let start = self.place(k, &body);
        let retire = if self.rng.chance(1, 10) {
            let other = 1 + self.rng.index(self.rings.len() - 1);
            if other == k {
                0
            } else {
                self.rings[other].id
            }
        } else {
            0
        };
        let f = ring_frame(
            n as u16,
            1,
            body.len() as u64,
            self.rings[k].id,
            start,
            retire,
        );
        let mut fds = self.pool.many(&mut self.rng, n);
        fds.push(FdRef::Ring(k));
        let mut built = Built::new(Cat::RingOk, Expect::Value, f).fds(fds);
        built.uses_ring = Some(k);
        if self.rng.chance(1, 10) {
            // The sender says it is done with the ring (the receiver drops
            // it at its next adoption), and takes that back later.
            let ring = self.rings[k].file.try_clone().expect("dup ring");
            let closed = u64::from(self.rng.chance(1, 2));
            built = built.after(move || {
                ring.write_all_at(&closed.to_le_bytes(), RING_CLOSED)
                    .expect("write closed");
                None
            });
        }
        built
    }

    /// Rings that must be refused: unsealed, of the wrong size, of another
    /// id, never sent, not a memfd, bodies outside the ring, flag bits set.
    pub(super) fn ring_bad(&mut self) -> Built {
        let e = Expect::Error;
        let k = self.rng.index(self.rings.len());
        let (id, cap) = (self.rings[k].id, self.rings[k].cap);
        let cat = Cat::RingBad;
        match self.rng.below(9) {
            0 => Built::new(cat, e, ring_frame(0, 1, 8, BAD_RING_HUGE_ID, 0, 0))
                .fds(vec![FdRef::Bad(BAD_RING_UNSEALED)]),
            1 => {
                let wrong = self.rng.next() | (1 << 62);
                Built::new(cat, e, ring_frame(0, 1, 8, wrong, 0, 0)).fds(vec![FdRef::Ring(k)])
            }
            2 => Built::new(cat, e, ring_frame(0, 1, 8, 0, 0, 0)).fds(vec![FdRef::Ring(k)]),
            3 => {
                let unknown = self.rng.next() | (1 << 62);
                Built::new(cat, e, ring_frame(0, 0, 8, unknown, 0, 0))
            }
            4 => {
                // Outside the ring: longer than it, across its end, or a
                // start that overflows.
                let (len, start) = match self.rng.below(3) {
                    0 => {
                        // Longer than the ring (or, for a ring as large as
                        // the limit, as long but not at its start).
                        let len = (cap + 1 + self.rng.below(1000)).min(LIMIT as u64);
                        let start = if len > cap {
                            self.rng.below(cap)
                        } else {
                            1 + self.rng.below(cap - 1)
                        };
                        (len, start)
                    }
                    1 => {
                        let len = 2 + self.rng.below(cap - 1);
                        (len, cap - len + 1 + self.rng.below(len - 1))
                    }
                    _ => (cap.min(4096), u64::MAX - self.rng.below(4096)),
                };
                Built::new(cat, e, ring_frame(0, 1, len, id, start, 0)).fds(vec![FdRef::Ring(k)])
            }
            5 => {
                let which = [BAD_RING_NO_DATA, BAD_RING_TOO_BIG][self.rng.index(2)];
                Built::new(cat, e, ring_frame(0, 1, 8, BAD_RING_HUGE_ID, 0, 0))
                    .fds(vec![FdRef::Bad(which)])
            }
            6 => {
                let not_memfd = self.pool.non_memfd(&mut self.rng);
                Built::new(cat, e, ring_frame(0, 1, 8, id, 0, 0)).fds(vec![FdRef::Pool(not_memfd)])
            }
            7 => {
                let flags = 2 + self.rng.below(254) as u8;
                Built::new(cat, e, ring_frame(0, flags, 8, id, 0, 0)).fds(vec![FdRef::Ring(k)])
            }
            _ => {
                // A kind-1 body memfd (write-sealed, no ring id in it).
                Built::new(cat, e, ring_frame(0, 1, 8, 0x00ba_dbad, 0, 0))
                    .fds(vec![FdRef::Bad(BAD_SEALED_BODY)])
            }
        }
    }

    /// Fresh rings shrunk after sending (those not sealed against it), or
    /// sealed ones the sender fails to shrink.
    pub(super) fn ring_shrunk(&mut self) -> Built {
        let cap = [4096, 65536][self.rng.index(2)];
        let id = self.rng.next() | 1;
        let (seals, expect) = match self.rng.below(4) {
            0 => (SealFlag::empty(), Expect::Error),
            1 => (SealFlag::F_SEAL_GROW, Expect::Error),
            2 => (
                SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_WRITE,
                Expect::Error,
            ),
            _ => (ring_seals(), Expect::Value),
        };
        let file = ring_file(cap, id, SealFlag::empty());
        let body = plain_body(&mut self.rng, 1000);
        let offset = self.rng.below(cap - body.len() as u64 + 1);
        file.write_all_at(&body, RING_CONTROL + offset)
            .expect("write ring body");
        if !seals.is_empty() {
            fcntl(&file, FcntlArg::F_ADD_SEALS(seals)).expect("seal ring");
        }
        let f = ring_frame(0, 1, body.len() as u64, id, offset, 0);
        let shrink = file.try_clone().expect("dup ring");
        Built::new(Cat::RingShrunk, expect, f)
            .own(file)
            .after(move || {
                let sealed = expect == Expect::Value;
                let note = shrink_after_send(&shrink, sealed, "ring_shrink_blocked");
                if sealed {
                    // Done with it: the receiver drops it at its next adoption.
                    shrink
                        .write_all_at(&1u64.to_le_bytes(), RING_CLOSED)
                        .expect("write closed");
                }
                note
            })
    }

    /// Valid frames in ring 0, whose body (or control page) the sender
    /// rewrites or punches a hole in after sending.
    pub(super) fn ring_rewrite(&mut self) -> Built {
        if self.rings_in_batch[0] {
            return self.random();
        }
        let body = plain_body(&mut self.rng, 2000);
        let start = self.place(0, &body);
        let ring = &self.rings[0];
        let f = ring_frame(0, 1, body.len() as u64, ring.id, start, 0);
        let file = ring.file.try_clone().expect("dup ring");
        let offset = RING_CONTROL + start % ring.cap;
        let len = body.len() as u64;
        let garbage = self.rng.bytes(body.len());
        let how = self.rng.below(3);
        let control = self.rng.bytes(64);
        let mut built = Built::new(Cat::RingRewrite, Expect::Any, f)
            .fds(vec![FdRef::Ring(0)])
            .after(move || {
                match how {
                    0 => file.write_all_at(&garbage, offset).expect("rewrite body"),
                    1 => fallocate(
                        &file,
                        FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
                        offset as i64,
                        len as i64,
                    )
                    .expect("punch a hole in the ring"),
                    _ => {
                        // consumed, acked, wake, wake_at, closed: garbage.
                        for at in [64u64, 128, 192, 256, 320] {
                            file.write_all_at(&control[..8], at).expect("write control");
                        }
                    }
                }
                None
            });
        built.uses_ring = Some(0);
        built
    }
}
