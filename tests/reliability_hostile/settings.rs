//! The suite's settings: seeds and the environment variables the parent
//! hands its roles, the limit under attack, the lock-step and handshake
//! waits, batch sizes, the hostile sender's rings and size claims, and the
//! memory the attacked processes may grow by.

use std::time::Duration;

use crate::support;

/// Overrides the seed (decimal or `0x` hex).
pub const SEED_ENV: &str = "COURIER_HOSTILE_SEED";
pub const DEFAULT_SEED: u64 = 0x00c0_0e1e_5eed_0001;
/// How many hostile frames the sender role sends (set by the parent).
pub const FRAMES_ENV: &str = "COURIER_HOSTILE_FRAMES";
/// How many hostile connections the connector role opens (set by the parent).
pub const CONNECTIONS_ENV: &str = "COURIER_HOSTILE_CONNECTIONS";

/// The receive limit of every courier end under attack.
pub const LIMIT: usize = 1 << 20;
/// One valid value from a real sender after this many hostile frames.
pub const PROBE_EVERY: u64 = 25;
/// How long the receiver waits for a frame the sender has already sent.
pub const FRAME_WAIT: Duration = Duration::from_secs(10);
/// How long either side of the lock step waits for the other.
pub const STEP_WAIT: Duration = Duration::from_secs(30);
/// The listener's handshake timeout: short, so that stalls cost little.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(200);
/// How long after its handshake timeout a listener may take to close a
/// stalled or lying connection before it counts as a hang.
pub const CLOSE_SLACK: Duration = Duration::from_secs(10);
pub const PROTOCOL: &str = "courier-hostile-suite";
pub const PROTOCOL_VERSION: u32 = 7;
/// What the valid client's last message carries.
pub const FINISH: u64 = 0x00f1_7157;

/// A batch (frames sent before the receiver reads them) stays below these,
/// so that it never fills the socket buffer and never has more fds in
/// flight than a 1024-fd RLIMIT_NOFILE allows (ETOOMANYREFS).
pub const BATCH_FRAMES: usize = 32;
pub const BATCH_BYTES: usize = 64 << 10;
pub const BATCH_FDS: usize = 512;

/// Data areas of the hostile sender's valid rings (kind 2); the first is
/// the one it rewrites after sending.
pub const RING_CAPS: [u64; 10] = [
    64 << 10,
    4 << 10,
    16 << 10,
    64 << 10,
    256 << 10,
    1 << 20,
    4 << 10,
    16 << 10,
    64 << 10,
    256 << 10,
];

/// Size claims of terabytes and beyond (and just above the limit).
pub const CLAIMS: [u64; 8] = [
    u64::MAX,
    u64::MAX - 15,
    1 << 63,
    1 << 50,
    1 << 40,
    (1 << 40) + 1,
    1 << 32,
    LIMIT as u64 + 1,
];

/// How much the receiver's peak RSS (`VmHWM`) may grow over its baseline:
/// derived from the limit and the sizes this suite lets through, not from
/// any size a frame claims (claims go up to 2^64 - 1).
///
/// * 4 x limit: a body being decoded (at most the limit), the value it
///   becomes, a kind-1 memfd mapping (at most the limit, MAP_POPULATE) and
///   the 128 KiB receive buffer;
/// * 4 MiB: the probe sender's ring (its minimum size), which the probes
///   cycle through and the receiver reads all of;
/// * 8 MiB: the hostile rings the receiver may keep mapped (at most 8) and
///   read from, each at most 1 MiB of data area here (rings larger than a
///   courier sender makes for the limit are read once and unmapped: the
///   ring walk that checks that is in `reliability_security/memory.rs`);
/// * 16 MiB: slack for code pages first touched during the run and the
///   allocator, in a debug build.
pub fn receiver_rss_bound_kib() -> u64 {
    (4 * LIMIT as u64 + (4 << 20) + (8 << 20) + (16 << 20)) / 1024
}

/// The listener process's allowance, on the same terms: it decodes at most
/// one value (at most the limit) at a time, through a 128 KiB buffer.
pub fn listener_rss_bound_kib() -> u64 {
    (4 * LIMIT as u64 + (16 << 20)) / 1024
}

/// The seed of this run: [`SEED_ENV`] or [`DEFAULT_SEED`].
pub fn seed() -> u64 {
    support::env::seed(SEED_ENV, DEFAULT_SEED)
}
