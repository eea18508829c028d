//! Frame categories: what each hostile frame is meant to test ([`Cat`],
//! with its share of the frames) and what it must produce at the receiver
//! ([`Expect`]). Both travel as codes in the lock step's batch notices.

/// What a frame should produce at the receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Expect {
    /// A value or a typed error.
    Any = 0,
    /// A typed error.
    Error = 1,
    /// A value.
    Value = 2,
    /// The next probe, intact.
    Probe = 3,
}

impl Expect {
    pub fn from_code(code: u8) -> Expect {
        match code {
            0 => Expect::Any,
            1 => Expect::Error,
            2 => Expect::Value,
            3 => Expect::Probe,
            other => panic!("expectation code {other}"),
        }
    }
}

/// The categories of frames, with their share of the hostile frames (in
/// percent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Cat {
    Probe = 0,
    Random,
    Shaped,
    LyingLen,
    Terabyte,
    FdMismatch,
    WrongFds,
    Empty,
    ShmBad,
    ShmShrunk,
    RingOk,
    RingBad,
    RingShrunk,
    RingRewrite,
}

pub const CATS: [(Cat, &str, u64); 14] = [
    (Cat::Probe, "probe", 0),
    (Cat::Random, "random", 20),
    (Cat::Shaped, "shaped", 12),
    (Cat::LyingLen, "lying_len", 10),
    (Cat::Terabyte, "terabyte", 8),
    (Cat::FdMismatch, "fd_mismatch", 10),
    (Cat::WrongFds, "wrong_fds", 8),
    (Cat::Empty, "empty", 5),
    (Cat::ShmBad, "shm_bad", 8),
    (Cat::ShmShrunk, "shm_shrunk", 4),
    (Cat::RingOk, "ring_ok", 5),
    (Cat::RingBad, "ring_bad", 6),
    (Cat::RingShrunk, "ring_shrunk", 2),
    (Cat::RingRewrite, "ring_rewrite", 2),
];

pub fn cat_name(code: u8) -> &'static str {
    CATS.get(usize::from(code))
        .map(|c| c.1)
        .unwrap_or_else(|| panic!("category code {code}"))
}
