//! Frames of random bytes ([`Cat::Random`]) and bodies of the receiver's
//! shape with random contents ([`Cat::Shaped`]).

use courier::channel::{HEADER_LEN, WIRE_VERSION};

use super::{Built, Hostile};
use crate::categories::{Cat, Expect};
use crate::messages::{
    number_body, text_body, V_ANY, V_NESTED, V_NUMBER, V_PAIR, V_PIPES, V_SOCKET,
};
use crate::support::rng::{Random, XorShiftStar};
use crate::support::wire::{inline_frame, Enc};

impl Hostile {
    /// Random bytes, sometimes behind a valid prefix, with a few fds.
    pub(super) fn random(&mut self) -> Built {
        let rng = &mut self.rng;
        let len = 1 + rng.index(300);
        let mut bytes = rng.bytes(len);
        match rng.below(3) {
            0 => {}
            1 if len >= 4 => {
                bytes[..3].copy_from_slice(&[b'C', b'R', WIRE_VERSION]);
                bytes[3] = rng.below(3) as u8;
            }
            _ => {
                // An honest header before a random body.
                bytes = inline_frame(0, &bytes);
            }
        }
        let n = rng.index(4);
        if bytes.len() >= HEADER_LEN && rng.chance(1, 2) {
            bytes[4..6].copy_from_slice(&(n as u16).to_le_bytes());
        }
        let fds = self.pool.many(&mut self.rng, n);
        Built::new(Cat::Random, Expect::Any, bytes).fds(fds)
    }

    /// Bodies of the receiver's shape with random contents: fd indices in
    /// and out of range, unknown variants, trailing bytes, depth bombs.
    pub(super) fn shaped(&mut self) -> Built {
        let rng = &mut self.rng;
        let n = rng.index(4);
        let index = |rng: &mut XorShiftStar| rng.below(n as u64 + 2);
        let mut expect = Expect::Any;
        let body = match rng.below(9) {
            0 => number_body(rng.next()),
            1 => {
                let len = rng.index(40);
                text_body(&rng.bytes(len)) // often not UTF-8
            }
            2 => {
                let idx: Vec<u64> = (0..rng.below(4)).map(|_| index(rng)).collect();
                Enc::default().var(V_PIPES).list(&idx).done()
            }
            3 => Enc::default().var(V_SOCKET).var(index(rng)).done(),
            4 => {
                let idx: Vec<u64> = (0..rng.below(5)).map(|_| index(rng)).collect();
                Enc::default().var(V_ANY).list(&idx).done()
            }
            5 => {
                let a = rng.chance(1, 2).then(|| index(rng));
                let b: Vec<u64> = (0..rng.below(5)).map(|_| rng.below(1 << 17)).collect();
                let e = Enc::default().var(V_PAIR);
                let e = match a {
                    Some(i) => e.var(1).var(i),
                    None => e.var(0),
                };
                e.list(&b).done()
            }
            6 => {
                let depth = 1 + rng.below(400);
                if depth >= 200 {
                    expect = Expect::Error; // deeper than MAX_DEPTH
                }
                let mut e = Enc::default();
                for _ in 0..depth {
                    e = e.var(V_NESTED).var(1);
                }
                e.var(V_NUMBER).var(depth).done()
            }
            7 => {
                expect = Expect::Error; // no such variant
                Enc::default().var(8 + rng.below(1 << 20)).done()
            }
            _ => {
                expect = Expect::Error; // bytes after the value
                let extra = 1 + rng.index(20);
                let mut body = number_body(rng.next());
                body.extend(rng.bytes(extra));
                body
            }
        };
        let fds = self.pool.many(&mut self.rng, n);
        Built::new(Cat::Shaped, expect, inline_frame(n as u16, &body)).fds(fds)
    }
}
