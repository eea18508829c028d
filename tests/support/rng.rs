//! Small seeded generators for the reliability suites: reproducible from
//! a printed seed, no dependency. [`Random`] gives both the same draws
//! (`below`, `index`, `chance`, `bytes`, `delay`) on top of their `next`.
//! The generators differ on purpose: each suite's seeds replay exactly the
//! runs they always did.

use std::time::Duration;

/// Draws built on a source of 64 random bits.
pub trait Random {
    /// The next 64 random bits.
    fn next(&mut self) -> u64;

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// An index in `0..n`.
    fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    /// `true` with probability `num / den`.
    fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    /// `len` random bytes.
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }

    /// A delay from zero to `max`, in whole microseconds.
    fn delay(&mut self, max: Duration) -> Duration {
        Duration::from_micros(self.below(max.as_micros() as u64 + 1))
    }
}

/// xorshift64*, its state mixed from the seed (`reliability_hostile`).
pub struct XorShiftStar(u64);

impl XorShiftStar {
    /// The generator of `seed`.
    pub fn new(seed: u64) -> XorShiftStar {
        XorShiftStar((seed ^ 0x9e37_79b9_7f4a_7c15) | 1)
    }
}

impl Random for XorShiftStar {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// splitmix64, its state the seed itself (`reliability_death`).
pub struct SplitMix(pub u64);

impl Random for SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}
