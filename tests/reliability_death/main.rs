//! Suite 3 of issue 7 (reliability): peer death.
//!
//! A child (this test binary re-executed in a role) is killed with
//! SIGKILL at a random point of one of four phases:
//!
//! * `send`: mid-send of an endless stream of small values;
//! * `large`: mid-large-message: values of 1 to 6 MiB, through the sending
//!   end's shared ring (half the trials) or a sealed memfd per value (the
//!   other half: the child's ring is off);
//! * `handshake`: before or while the child answers the hello (a child
//!   that answers at once, one that sleeps first, and one that reads the
//!   parent's hello and never answers);
//! * `fds`: holding fds in flight: the child has sent values carrying
//!   pipes and a channel's receiving end, which the parent reads only
//!   after the kill.
//!
//! Each trial asserts: the parent's receive reaches `Disconnected` (or
//! the handshake fails with `ConnectError::Closed`) within [`BOUND`] of the
//! kill (else the trial is a hang); every value received is intact and in
//! order (a prefix of what the child sent); nothing the child's `send`
//! confirmed is lost (the child records each confirmed send in a file the
//! parent reads after reaping it); every fd received is open,
//! close-on-exec and the one sent (its pipe holds the expected text, its
//! channel the expected value, then `Disconnected`); the child died of
//! SIGKILL; and afterwards the parent's fd table and its memfd mappings
//! are back to what they were before the trial.
//!
//! The kill delays come from a seeded RNG: the seed is printed, and
//! `COURIER_DEATH_SEED=<u64>` replays a run's choices (the timing of the
//! kills relative to the child's progress still varies). The time measured
//! is from just before the `kill(2)` call to `Disconnected` (or the
//! handshake's error), draining of the values queued before the death
//! included. `COURIER_SOAK=1` runs the long version.
//!
//! Layout: the test and the settings are here; [`values`] holds what
//! travels and how the parent checks it, [`roles`] the children,
//! [`trials`] one trial of each kind, [`tally`] the bookkeeping.

#[path = "../../crates/transport/tests/common/mod.rs"]
mod common;
#[path = "../support/mod.rs"]
mod support;

mod roles;
mod tally;
mod trials;
mod values;

use std::time::{Duration, Instant};

use courier::Config;
use support::child::protocol_config;
use support::env::seed;
use support::fds::differing;
use support::figures::{median_max, scaled, Figures};
use support::rng::{Random, SplitMix};
use tally::{Phase, Snapshot, Tally, PHASES};
use trials::{handshake_trial, stream_trial, Trial};
use values::base;

const PROTOCOL: &str = "courier-death-test";

/// What both ends use.
fn config() -> Config {
    protocol_config(PROTOCOL)
}

/// How long after the kill the parent waits for `Disconnected` (or the
/// handshake's error) before calling the trial a hang.
const BOUND: Duration = Duration::from_secs(10);

/// A run stops after this many failed trials (each may have waited up to
/// [`BOUND`]), so that a systematic defect cannot stall CI for long.
const MAX_FAILURES: usize = 10;

/// How long a child role lives if no one kills it.
const LIFETIME: Duration = Duration::from_secs(30);

/// Overrides the seed of the kill delays (and the children's draws).
const SEED_ENV: &str = "COURIER_DEATH_SEED";
const DEFAULT_SEED: u64 = 0x5EED_DEA7_0000_0003;

/// A file where the child records how many sends were confirmed.
const PROGRESS_ENV: &str = "COURIER_DEATH_PROGRESS";
/// The seed of a child's own draws (big value shapes).
const TRIAL_SEED_ENV: &str = "COURIER_DEATH_TRIAL_SEED";
/// Set for a `large` child whose shared ring is off (memfd per value).
const RING_OFF_ENV: &str = "COURIER_DEATH_RING_OFF";
/// Microseconds a `slow_hello` child sleeps before its handshake.
const SLEEP_ENV: &str = "COURIER_DEATH_SLEEP_US";

// ---- roles ------------------------------------------------------------------

const ROLES: &[(&str, fn())] = &[
    ("stream_small", roles::stream_small),
    ("stream_large", roles::stream_large),
    ("fds_in_flight", roles::fds_in_flight),
    ("quick_hello", roles::quick_hello),
    ("slow_hello", roles::slow_hello),
    ("stall_hello", roles::stall_hello),
];

#[test]
#[ignore = "child role: run by the other tests of this file"]
fn role_entry() {
    common::run_role(ROLES)
}

#[test]
fn peer_death_at_random_points_ends_in_disconnected() {
    let _lock = common::fd_lock();
    let seed = seed(SEED_ENV, DEFAULT_SEED);
    println!("death: seed {seed:#x} (replay with {SEED_ENV}={seed:#x})");
    let per_phase = scaled(60, 500);
    let dir = common::temp_dir();
    let progress = dir.path().join("progress");
    let base = base();
    let mut rng = SplitMix(seed);
    let mut tally = Tally::default();
    let started = Instant::now();
    for number in 0..per_phase * PHASES.len() as u64 {
        if tally.failures.len() >= MAX_FAILURES {
            eprintln!("death: stopping after {MAX_FAILURES} failures");
            break;
        }
        let phase = PHASES[(number % PHASES.len() as u64) as usize];
        let max_delay = match phase {
            Phase::Send => Duration::from_millis(30),
            Phase::Large => Duration::from_millis(60),
            Phase::Handshake => Duration::from_millis(40),
            // Half the kills come while the child is still sending
            // (usually), half once all its values are in flight.
            Phase::Fds if (number / 4).is_multiple_of(2) => Duration::from_millis(3),
            Phase::Fds => Duration::from_millis(20),
        };
        let trial = Trial {
            number,
            phase,
            delay: rng.delay(max_delay),
            child_seed: rng.next(),
            progress: &progress,
            base: &base,
        };
        let before = Snapshot::now();
        match phase {
            Phase::Handshake => handshake_trial(&trial, &mut tally),
            _ => stream_trial(&trial, &mut tally),
        }
        *tally.trials.entry(phase.name()).or_default() += 1;
        let after = Snapshot::now();
        if after != before {
            let added = differing(&after.fds, &before.fds);
            let removed = differing(&before.fds, &after.fds);
            tally.fds_leaked += added.len() as u64;
            tally.maps_leaked += after.memfd_maps.saturating_sub(before.memfd_maps) as u64;
            tally.fail(
                number,
                phase,
                format!(
                    "fd table or mappings changed: fds opened {added:?}, closed {removed:?}; \
                     memfd mappings {} -> {}",
                    before.memfd_maps, after.memfd_maps
                ),
            );
        }
    }
    let elapsed = started.elapsed();

    let trials: u64 = tally.trials.values().sum();
    let mut figures = Figures::new("death");
    figures.add("trials", trials);
    for phase in PHASES {
        figures.add(
            phase.name(),
            tally.trials.get(phase.name()).copied().unwrap_or(0),
        );
    }
    figures
        .add("hangs", tally.hangs)
        .add("fds_leaked", tally.fds_leaked)
        .add("maps_leaked", tally.maps_leaked)
        .add("lost", tally.lost)
        .add("values_received", tally.values)
        .add("big_mib_received", tally.big_bytes >> 20)
        .add("fds_received", tally.fds_received)
        .add("handshake_closed", tally.closed_in_handshake)
        .add("handshake_completed", tally.after_handshake)
        .add("large_via_ring", tally.large_via_ring)
        .add("large_via_memfd", tally.large_via_memfd)
        .add("fds_killed_mid_send", tally.fds_mid_send);
    if !tally.latencies.is_empty() {
        let (median, max) = median_max(&mut tally.latencies);
        figures
            .add_ms("death_to_disconnected_median", median)
            .add_ms("death_to_disconnected_max", max);
    }
    for (phase, samples) in &mut tally.by_phase {
        let (median, max) = median_max(samples);
        figures
            .add_ms(&format!("{phase}_median"), median)
            .add_ms(&format!("{phase}_max"), max);
    }
    figures
        .add("measured_from", "kill_call")
        .add("seed", format!("{seed:#x}"))
        .add_ms("time", elapsed);
    figures.report();

    assert!(
        tally.failures.is_empty(),
        "{} of {trials} trials failed:\n{}",
        tally.failures.len(),
        tally.failures.join("\n")
    );
    assert_eq!(tally.hangs, 0, "hangs");
    assert_eq!(tally.fds_leaked, 0, "fds leaked");
    assert_eq!(tally.lost, 0, "values lost");
    assert_eq!(trials, per_phase * PHASES.len() as u64);
    assert_eq!(tally.latencies.len() as u64, trials, "a latency per trial");
    // Each phase must really have exercised what it is about.
    assert!(tally.values > 0 && tally.big_bytes > 0 && tally.fds_received > 0);
    assert!(
        tally.large_via_ring > 0 && tally.large_via_memfd > 0,
        "large values must take both paths: ring {}, memfd {}",
        tally.large_via_ring,
        tally.large_via_memfd
    );
    assert!(
        tally.closed_in_handshake > 0,
        "no kill landed before the child's hello: the delays miss the handshake"
    );
}
