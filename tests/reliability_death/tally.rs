//! The parent's bookkeeping: the four phases, what the trials found
//! ([`Tally`]) and what a trial must leave as it found ([`Snapshot`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::common;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Phase {
    Send,
    Large,
    Handshake,
    Fds,
}

pub const PHASES: [Phase; 4] = [Phase::Send, Phase::Large, Phase::Handshake, Phase::Fds];

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Send => "send",
            Phase::Large => "large",
            Phase::Handshake => "handshake",
            Phase::Fds => "fds",
        }
    }
}

/// What the trials found.
#[derive(Default)]
pub struct Tally {
    pub trials: BTreeMap<&'static str, u64>,
    pub failures: Vec<String>,
    pub hangs: u64,
    pub fds_leaked: u64,
    pub maps_leaked: u64,
    pub lost: u64,
    pub values: u64,
    pub fds_received: u64,
    pub big_bytes: u64,
    /// Handshake trials that ended in `Closed` / that completed and then
    /// saw `Disconnected`.
    pub closed_in_handshake: u64,
    pub after_handshake: u64,
    /// `large` trials whose first value came through the sending end's
    /// ring (the parent mapped a `courier-ring` memfd) / did not.
    pub large_via_ring: u64,
    pub large_via_memfd: u64,
    /// `fds` trials whose child was killed before it had sent all its
    /// values (the others died holding all of them in flight).
    pub fds_mid_send: u64,
    pub latencies: Vec<Duration>,
    pub by_phase: BTreeMap<&'static str, Vec<Duration>>,
}

impl Tally {
    pub fn fail(&mut self, trial: u64, phase: Phase, what: impl std::fmt::Display) {
        let line = format!("trial {trial} ({}): {what}", phase.name());
        eprintln!("death: {line}");
        self.failures.push(line);
    }

    pub fn latency(&mut self, phase: Phase, d: Duration) {
        self.latencies.push(d);
        self.by_phase.entry(phase.name()).or_default().push(d);
    }
}

/// What a trial must leave as it found: the fd table and the memfd
/// mappings (the rings a receiver mapped).
#[derive(PartialEq, Eq)]
pub struct Snapshot {
    pub fds: BTreeMap<i32, PathBuf>,
    pub memfd_maps: usize,
}

impl Snapshot {
    pub fn now() -> Snapshot {
        let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
        Snapshot {
            fds: common::fd_table(),
            memfd_maps: maps.lines().filter(|l| l.contains("/memfd:")).count(),
        }
    }
}
