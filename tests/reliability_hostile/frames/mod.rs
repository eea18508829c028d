//! The hostile frames: [`Hostile`] builds one frame of a category at a
//! time ([`Built`]: bytes, fds, and what to do to them after sending),
//! from its pool of wrong fds, its valid rings and its long-lived bad
//! memfds. The builders of each family of categories are in the
//! submodules.

mod bodies;
mod fd_counts;
mod lengths;
mod ring;
mod shm;

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;

use nix::fcntl::SealFlag;

use crate::categories::{Cat, Expect, CATS};
use crate::messages::number_body;
use crate::pool::{FdRef, Pool};
use crate::settings::RING_CAPS;
use crate::support::memfd::{body_seals, memfd, ring_file, ring_seals};
use crate::support::rng::{Random, XorShiftStar};
use crate::support::wire::RING_CONTROL;

/// What to do after the frame was sent and before the receiver reads it;
/// returns a note to count (e.g. that the kernel refused a shrink).
pub type After = Box<dyn FnOnce() -> Option<&'static str>>;

/// One hostile frame.
pub struct Built {
    pub cat: Cat,
    pub expect: Expect,
    pub bytes: Vec<u8>,
    pub fds: Vec<FdRef>,
    pub own: Vec<File>,
    pub after: Option<After>,
    /// The valid ring whose data area this frame writes (one such frame
    /// per ring per batch, so that bodies do not overwrite each other).
    pub uses_ring: Option<usize>,
}

impl Built {
    fn new(cat: Cat, expect: Expect, bytes: Vec<u8>) -> Built {
        Built {
            cat,
            expect,
            bytes,
            fds: Vec::new(),
            own: Vec::new(),
            after: None,
            uses_ring: None,
        }
    }

    fn fds(mut self, fds: Vec<FdRef>) -> Built {
        self.fds = fds;
        self
    }

    fn own(mut self, file: File) -> Built {
        self.fds.push(FdRef::Own(self.own.len()));
        self.own.push(file);
        self
    }

    fn after(mut self, after: impl FnOnce() -> Option<&'static str> + 'static) -> Built {
        self.after = Some(Box::new(after));
        self
    }
}

/// A valid ring of the hostile sender.
struct HRing {
    file: File,
    id: u64,
    cap: u64,
}

/// Long-lived bad memfds (indices for [`FdRef::Bad`]).
const BAD_SEALED_BODY: usize = 0;
const BAD_UNSEALED_BODY: usize = 1;
const BAD_PARTIAL_BODY: usize = 2;
const BAD_TIB_BODY: usize = 3;
const BAD_RING_UNSEALED: usize = 4;
const BAD_RING_NO_DATA: usize = 5;
const BAD_RING_TOO_BIG: usize = 6;
const BAD_RING_TIB: usize = 7;
const BAD_RING_HUGE_ID: u64 = 0x0bad_0bad_0bad_0bad;

/// The hostile sender's state: its randomness, its fds and rings.
pub struct Hostile {
    rng: XorShiftStar,
    pool: Pool,
    rings: Vec<HRing>,
    bad: Vec<File>,
    /// The body in the bad body memfds.
    bad_body: Vec<u8>,
    /// Rings whose data area the current batch writes.
    pub rings_in_batch: Vec<bool>,
}

impl Hostile {
    pub fn new(seed: u64) -> Hostile {
        let mut rng = XorShiftStar::new(seed);
        let rings = RING_CAPS
            .iter()
            .map(|&cap| {
                let id = rng.next() | 1;
                HRing {
                    file: ring_file(cap, id, ring_seals()),
                    id,
                    cap,
                }
            })
            .collect::<Vec<_>>();
        let bad_body = number_body(0x00ba_dbad);
        let len = bad_body.len() as u64;
        let partial = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW;
        let bad = vec![
            memfd(&bad_body, len, body_seals()),
            memfd(&bad_body, len, SealFlag::empty()),
            memfd(&bad_body, len, partial),
            memfd(&bad_body, 1 << 40, body_seals()),
            ring_file(4096, BAD_RING_HUGE_ID, SealFlag::empty()),
            ring_file(0, BAD_RING_HUGE_ID, ring_seals()),
            ring_file((64 << 20) + 4096, BAD_RING_HUGE_ID, ring_seals()),
            ring_file(1 << 40, BAD_RING_HUGE_ID, ring_seals()),
        ];
        Hostile {
            rng,
            pool: Pool::new(),
            rings_in_batch: vec![false; rings.len()],
            rings,
            bad,
            bad_body,
        }
    }

    pub fn fd(&self, r: FdRef) -> BorrowedFd<'_> {
        match r {
            FdRef::Pool(i) => self.pool.fd(i),
            FdRef::Ring(i) => self.rings[i].file.as_fd(),
            FdRef::Bad(i) => self.bad[i].as_fd(),
            FdRef::Own(_) => unreachable!("own fds are borrowed from the frame"),
        }
    }

    /// A category by weight.
    pub fn pick(&mut self) -> Cat {
        let total: u64 = CATS.iter().map(|c| c.2).sum();
        let mut at = self.rng.below(total);
        for (cat, _, weight) in CATS {
            if at < weight {
                return cat;
            }
            at -= weight;
        }
        unreachable!()
    }

    /// A valid ring (not the rewrite ring) that this batch has not written
    /// to yet, if any.
    fn free_ring(&mut self) -> Option<usize> {
        let free: Vec<usize> = (1..self.rings.len())
            .filter(|&i| !self.rings_in_batch[i])
            .collect();
        (!free.is_empty()).then(|| free[self.rng.index(free.len())])
    }

    /// Places `body` in ring `k` at a random position (of a random lap);
    /// returns the position.
    fn place(&mut self, k: usize, body: &[u8]) -> u64 {
        let ring = &self.rings[k];
        let len = body.len() as u64;
        assert!(len <= ring.cap, "body larger than ring {k}");
        let offset = self.rng.below(ring.cap - len + 1);
        let lap = self.rng.below(1 << 24);
        ring.file
            .write_all_at(body, RING_CONTROL + offset)
            .expect("write ring body");
        lap * ring.cap + offset
    }

    pub fn build(&mut self, cat: Cat) -> Built {
        match cat {
            Cat::Probe => unreachable!("probes come from the real sender"),
            Cat::Random => self.random(),
            Cat::Shaped => self.shaped(),
            Cat::LyingLen => self.lying_len(),
            Cat::Terabyte => self.terabyte(),
            Cat::FdMismatch => self.fd_mismatch(),
            Cat::WrongFds => self.wrong_fds(),
            Cat::Empty => self.empty(),
            Cat::ShmBad => self.shm_bad(),
            Cat::ShmShrunk => self.shm_shrunk(),
            Cat::RingOk => self.ring_ok(),
            Cat::RingBad => self.ring_bad(),
            Cat::RingShrunk => self.ring_shrunk(),
            Cat::RingRewrite => self.ring_rewrite(),
        }
    }
}

/// Shrinks `file` to nothing; when `sealed`, the kernel must refuse.
fn shrink_after_send(file: &File, sealed: bool, blocked: &'static str) -> Option<&'static str> {
    match nix::unistd::ftruncate(file, 0) {
        Ok(()) if !sealed => None,
        Ok(()) => panic!("a memfd sealed against shrinking was shrunk"),
        Err(nix::errno::Errno::EPERM) if sealed => Some(blocked),
        Err(e) => panic!("ftruncate after send: {e}"),
    }
}
