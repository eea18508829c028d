//! Frames whose lengths lie ([`Cat::LyingLen`]) and size claims of
//! terabytes ([`Cat::Terabyte`]).

use courier::channel::{HEADER_LEN, MAX_INLINE_FRAME};

use super::{Built, Hostile, BAD_RING_HUGE_ID, BAD_RING_TIB, BAD_SEALED_BODY, BAD_TIB_BODY};
use crate::categories::{Cat, Expect};
use crate::messages::{plain_body, text_body, V_PAIR, V_PIPES, V_TEXT};
use crate::pool::FdRef;
use crate::settings::{CLAIMS, LIMIT};
use crate::support::rng::Random;
use crate::support::wire::{header, inline_frame, ring_frame, Enc};

impl Hostile {
    /// Lengths that disagree: body_len vs the frame, inline bytes after a
    /// kind-1 or kind-2 header, headers cut short, frames longer than any
    /// inline frame.
    pub(super) fn lying_len(&mut self) -> Built {
        let body = plain_body(&mut self.rng, 200);
        let actual = body.len() as u64;
        let e = Expect::Error;
        match self.rng.below(25) {
            0..=7 => {
                let delta = 1 + self.rng.below(1000);
                let declared = if self.rng.chance(1, 2) || delta > actual {
                    actual + delta
                } else {
                    actual - delta
                };
                let mut f = header(0, 0, 0, declared);
                f.extend_from_slice(&body);
                Built::new(Cat::LyingLen, e, f)
            }
            8..=10 => {
                let mut f = header(0, 0, 0, 0);
                f.extend_from_slice(&body);
                Built::new(Cat::LyingLen, e, f)
            }
            11..=14 => {
                let mut f = header(1, 0, 0, self.bad_body.len() as u64);
                let extra = 1 + self.rng.index(100);
                f.extend(self.rng.bytes(extra));
                Built::new(Cat::LyingLen, e, f).fds(vec![FdRef::Bad(BAD_SEALED_BODY)])
            }
            15..=18 => {
                let k = self.rng.index(self.rings.len());
                let mut f = ring_frame(0, 1, 8, self.rings[k].id, 0, 0);
                let keep = loop {
                    let keep = self.rng.index(HEADER_LEN + 100);
                    if keep != f.len() {
                        break keep;
                    }
                };
                f.resize(keep.max(HEADER_LEN), 0);
                Built::new(Cat::LyingLen, e, f).fds(vec![FdRef::Ring(k)])
            }
            19..=23 => {
                let cut = 1 + self.rng.index(HEADER_LEN - 1);
                let mut f = inline_frame(0, &body);
                f.truncate(cut);
                let n = self.rng.index(3);
                let fds = self.pool.many(&mut self.rng, n);
                Built::new(Cat::LyingLen, e, f).fds(fds)
            }
            _ => {
                // Longer than any inline frame: discarded unread (TooLong).
                let len = MAX_INLINE_FRAME - HEADER_LEN + 1 + self.rng.index(4096);
                let text = vec![b'x'; len];
                let mut f = header(0, 0, 0, 0);
                let body = text_body(&text);
                f[8..16].copy_from_slice(&(body.len() as u64).to_le_bytes());
                f.extend_from_slice(&body);
                Built::new(Cat::LyingLen, e, f)
            }
        }
    }

    /// Size claims of terabytes, in headers (every kind) and inside bodies,
    /// and memfds of a terabyte.
    pub(super) fn terabyte(&mut self) -> Built {
        let claim = CLAIMS[self.rng.index(CLAIMS.len())];
        let e = Expect::Error;
        match self.rng.below(8) {
            0 => {
                let mut f = header(0, 0, 0, claim);
                let len = self.rng.index(64);
                f.extend(self.rng.bytes(len));
                Built::new(Cat::Terabyte, e, f)
            }
            1 => Built::new(Cat::Terabyte, e, header(1, 0, 0, claim))
                .fds(vec![FdRef::Bad(BAD_SEALED_BODY)]),
            2 => {
                let k = self.rng.index(self.rings.len());
                let f = ring_frame(0, 1, claim, self.rings[k].id, self.rng.next(), 0);
                Built::new(Cat::Terabyte, e, f).fds(vec![FdRef::Ring(k)])
            }
            3 => {
                // Lengths inside the body: a string, a sequence, a vector.
                let body = match self.rng.below(3) {
                    0 => Enc::default().var(V_TEXT).var(claim).raw(b"short").done(),
                    1 => Enc::default().var(V_PIPES).var(claim).var(0).done(),
                    _ => Enc::default().var(V_PAIR).var(0).var(claim).var(1).done(),
                };
                Built::new(Cat::Terabyte, e, inline_frame(0, &body))
            }
            4 => {
                // A memfd of a terabyte (sparse) holding a valid body.
                let f = header(1, 0, 0, self.bad_body.len() as u64);
                Built::new(Cat::Terabyte, Expect::Value, f).fds(vec![FdRef::Bad(BAD_TIB_BODY)])
            }
            5 => {
                // The same memfd, declared as large as the limit allows:
                // mapped (1 MiB), then refused for the bytes after the value.
                let f = header(1, 0, 0, LIMIT as u64);
                Built::new(Cat::Terabyte, e, f).fds(vec![FdRef::Bad(BAD_TIB_BODY)])
            }
            6 => {
                // A ring of a terabyte.
                let f = ring_frame(0, 1, 8, BAD_RING_HUGE_ID, 0, 0);
                Built::new(Cat::Terabyte, e, f).fds(vec![FdRef::Bad(BAD_RING_TIB)])
            }
            _ => {
                // A ring start and retire of terabytes, with a claim.
                let k = self.rng.index(self.rings.len());
                let f = ring_frame(0, 1, claim, self.rings[k].id, claim, claim);
                Built::new(Cat::Terabyte, e, f).fds(vec![FdRef::Ring(k)])
            }
        }
    }
}
