//! Frames whose fds disagree with the header ([`Cat::FdMismatch`]), up to
//! 253 fds of the wrong kinds ([`Cat::WrongFds`]) and zero-length
//! messages ([`Cat::Empty`]).

use courier::transport::MAX_FDS;

use super::{Built, Hostile, BAD_SEALED_BODY};
use crate::categories::{Cat, Expect};
use crate::messages::{number_body, V_ANY, V_PAIR, V_PIPES, V_SOCKET};
use crate::pool::{FdRef, POOL_PIPE_R};
use crate::support::rng::{Random, XorShiftStar};
use crate::support::wire::{header, inline_frame, ring_frame, Enc};

impl Hostile {
    /// fd counts that disagree with the header, for each kind.
    pub(super) fn fd_mismatch(&mut self) -> Built {
        let e = Expect::Error;
        let declared = |rng: &mut XorShiftStar| -> u16 {
            match rng.below(4) {
                0 => rng.below(6) as u16,
                1 => 253,
                2 => [254, 1000, u16::MAX][rng.index(3)],
                _ => rng.below(254) as u16,
            }
        };
        match self.rng.below(3) {
            0 => {
                let d = declared(&mut self.rng);
                let a = loop {
                    let a = self.rng.index(MAX_FDS + 1);
                    if a != usize::from(d) {
                        break a;
                    }
                };
                let fds = self.pool.many(&mut self.rng, a);
                let mut f = header(0, d, 0, 0);
                let body = number_body(self.rng.next());
                f[8..16].copy_from_slice(&(body.len() as u64).to_le_bytes());
                f.extend_from_slice(&body);
                Built::new(Cat::FdMismatch, e, f).fds(fds)
            }
            1 => {
                let d = declared(&mut self.rng);
                let a = loop {
                    let a = 1 + self.rng.index(MAX_FDS);
                    if a != usize::from(d) + 1 {
                        break a;
                    }
                };
                let mut fds = self.pool.many(&mut self.rng, a - 1);
                fds.push(FdRef::Bad(BAD_SEALED_BODY));
                let f = header(1, d, 0, self.bad_body.len() as u64);
                Built::new(Cat::FdMismatch, e, f).fds(fds)
            }
            _ => {
                let k = self.rng.index(self.rings.len());
                let id = self.rings[k].id;
                match self.rng.below(3) {
                    // The flag says the ring is attached; nothing is.
                    0 => Built::new(Cat::FdMismatch, e, ring_frame(0, 1, 8, id, 0, 0)),
                    // No flag, but an fd.
                    1 => Built::new(Cat::FdMismatch, e, ring_frame(0, 0, 8, id, 0, 0))
                        .fds(vec![FdRef::Ring(k)]),
                    // Three user fds declared, one arrives with the ring.
                    _ => Built::new(Cat::FdMismatch, e, ring_frame(3, 1, 8, id, 0, 0))
                        .fds(vec![FdRef::Pool(POOL_PIPE_R), FdRef::Ring(k)]),
                }
            }
        }
    }

    /// Up to 253 fds of the wrong kinds, behind honest headers.
    pub(super) fn wrong_fds(&mut self) -> Built {
        let n = if self.rng.chance(1, 3) {
            MAX_FDS
        } else {
            1 + self.rng.index(MAX_FDS)
        };
        let mut fds = self.pool.many(&mut self.rng, n);
        let all: Vec<u64> = (0..n as u64).collect();
        let (expect, body) = match self.rng.below(6) {
            0 => {
                // Pipes only, but one is not a pipe.
                let at = self.rng.index(n);
                fds[at] = FdRef::Pool(self.pool.non_fifo(&mut self.rng));
                (Expect::Error, Enc::default().var(V_PIPES).list(&all).done())
            }
            1 => {
                fds[0] = FdRef::Pool(self.pool.non_seqpacket(&mut self.rng));
                let e = Enc::default().var(V_SOCKET).var(0).done();
                (Expect::Error, e)
            }
            2 => (Expect::Error, number_body(self.rng.next())),
            3 => {
                // A File takes any fd: fine with one, left over with more.
                let e = Enc::default().var(V_PAIR).var(1).var(0).var(0).done();
                let expect = if n == 1 { Expect::Value } else { Expect::Error };
                (expect, e)
            }
            4 => (
                Expect::Value,
                Enc::default().var(V_ANY).list(&all).done(), // taken, then closed
            ),
            _ => {
                // An index out of range, or one used twice.
                let mut idx = all;
                let at = self.rng.index(n);
                idx[at] = if n > 1 && self.rng.chance(1, 2) {
                    ((at + 1) % n) as u64
                } else {
                    n as u64 + self.rng.below(1000)
                };
                (Expect::Error, Enc::default().var(V_ANY).list(&idx).done())
            }
        };
        Built::new(Cat::WrongFds, expect, inline_frame(n as u16, &body)).fds(fds)
    }

    /// Zero-length messages, with no fds up to 253.
    pub(super) fn empty(&mut self) -> Built {
        let n = match self.rng.below(4) {
            0 => 0,
            1 => 1,
            2 => 1 + self.rng.index(MAX_FDS),
            _ => MAX_FDS,
        };
        let fds = self.pool.many(&mut self.rng, n);
        Built::new(Cat::Empty, Expect::Error, Vec::new()).fds(fds)
    }
}
