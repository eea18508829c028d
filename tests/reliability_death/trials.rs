//! One trial each: a `send`, `large` or `fds` trial spawns a streaming
//! child with a channel and kills it while receiving (or, in `fds`,
//! before), then drains to `Disconnected`; a `handshake` trial kills the
//! child while the parent's handshake runs. Both check the child died of
//! SIGKILL.

use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use courier::transport::SeqPacketSocket;
use courier::{ConnectError, RecvTimeoutError, CHANNEL_ENV};

use crate::common::{self, Guard};
use crate::support::child::spawn_endpoint;
use crate::support::rng::SplitMix;
use crate::support::wait_within;
use crate::tally::{Phase, Tally};
use crate::values::{check_value, ParentEnd, CARRIES};
use crate::{config, BOUND, PROGRESS_ENV, RING_OFF_ENV, SLEEP_ENV, TRIAL_SEED_ENV};

/// The shared inputs of one trial.
pub struct Trial<'a> {
    pub number: u64,
    pub phase: Phase,
    pub delay: Duration,
    pub child_seed: u64,
    pub progress: &'a Path,
    pub base: &'a [u8],
}

impl Trial<'_> {
    fn reset_progress(&self) {
        std::fs::write(self.progress, 0u64.to_le_bytes()).expect("reset progress");
    }

    fn confirmed(&self) -> u64 {
        let bytes = std::fs::read(self.progress).expect("read progress");
        u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"))
    }
}

/// A `send`, `large` or `fds` trial: spawn with a channel, kill after the
/// delay (receiving meanwhile, except in `fds`), then drain to
/// `Disconnected`.
pub fn stream_trial(t: &Trial<'_>, tally: &mut Tally) {
    t.reset_progress();
    let role = match t.phase {
        Phase::Send => "stream_small",
        Phase::Large => "stream_large",
        Phase::Fds => "fds_in_flight",
        Phase::Handshake => unreachable!(),
    };
    let mut cmd = common::role(role);
    cmd.env(PROGRESS_ENV, t.progress)
        .env(TRIAL_SEED_ENV, t.child_seed.to_string());
    if t.phase == Phase::Large && !(t.number / 4).is_multiple_of(2) {
        cmd.env(RING_OFF_ENV, "1");
    }
    let (mut child, ep): (Guard, ParentEnd) = match spawn_endpoint(cmd, config()) {
        Ok(spawned) => spawned,
        Err(e) => return tally.fail(t.number, t.phase, format!("spawn_endpoint: {e}")),
    };
    let kill_at = Instant::now() + t.delay;
    let mut shapes = SplitMix(t.child_seed);
    let mut received = 0u64;
    let mut killed: Option<Instant> = None;
    let outcome = loop {
        if killed.is_none() && (t.phase == Phase::Fds || Instant::now() >= kill_at) {
            if t.phase == Phase::Fds {
                // Nothing is read before the death: the values and their
                // fds stay in flight.
                std::thread::sleep(kill_at.saturating_duration_since(Instant::now()));
            }
            let at = Instant::now();
            child.0.kill().expect("SIGKILL");
            killed = Some(at);
        }
        let deadline = match killed {
            Some(at) => at + BOUND,
            None => kill_at,
        };
        match ep.recv_deadline(deadline) {
            Ok(value) => match check_value(value, received, &mut shapes, t.base, tally) {
                Ok(fds) => {
                    received += 1;
                    tally.fds_received += fds;
                    if t.phase == Phase::Large && received == 1 {
                        let maps = std::fs::read_to_string("/proc/self/maps").expect("maps");
                        if maps.contains("/memfd:courier-ring") {
                            tally.large_via_ring += 1;
                        } else {
                            tally.large_via_memfd += 1;
                        }
                    }
                }
                Err(e) => break Err(e),
            },
            Err(RecvTimeoutError::Timeout) if killed.is_none() => {}
            Err(RecvTimeoutError::Timeout) => {
                tally.hangs += 1;
                break Err(format!(
                    "hang: no Disconnected within {BOUND:?} of the kill ({received} values)"
                ));
            }
            Err(RecvTimeoutError::Disconnected) => match killed {
                Some(at) => break Ok(at.elapsed()),
                None => {
                    let status = wait_within(&mut child, Duration::from_secs(5));
                    break Err(format!(
                        "Disconnected before the kill after {received} values; child {status:?}"
                    ));
                }
            },
            Err(RecvTimeoutError::Failed(e)) => {
                break Err(format!("receive failed after {received} values: {e:?}"))
            }
            Err(e) => break Err(format!("unexpected receive error {e:?}")),
        }
    };
    drop(ep);
    tally.values += received;
    if t.phase == Phase::Fds && received < CARRIES {
        tally.fds_mid_send += 1;
    }
    match outcome {
        Ok(latency) => tally.latency(t.phase, latency),
        Err(e) => tally.fail(t.number, t.phase, e),
    }
    reap_killed(t, &mut child, tally);
    let confirmed = t.confirmed();
    if confirmed > received {
        tally.lost += confirmed - received;
        tally.fail(
            t.number,
            t.phase,
            format!("the child's send confirmed {confirmed} values, {received} arrived"),
        );
    }
}

/// Waits (bounded) for a killed child and checks it died of SIGKILL.
fn reap_killed(t: &Trial<'_>, child: &mut Guard, tally: &mut Tally) {
    match wait_within(child, BOUND) {
        Some(status) if status.signal() == Some(9) => {}
        Some(status) => tally.fail(t.number, t.phase, format!("child ended {status:?}")),
        None => tally.fail(t.number, t.phase, "child not reaped after SIGKILL"),
    }
}

/// How a handshake trial's parent side ended, and when.
enum Handshake {
    /// `ConnectError::Closed`.
    Closed(Instant),
    /// The handshake completed; `Disconnected` came later.
    Answered(Instant),
    Bad(String),
}

/// A `handshake` trial: the parent runs the handshake itself ("connected
/// otherwise": its own socketpair, the child's end inherited as
/// `spawn_endpoint` does) in a thread, while this thread kills the child
/// after the delay counted from the spawn.
pub fn handshake_trial(t: &Trial<'_>, tally: &mut Tally) {
    let (variant, role) = match t.number / 4 % 3 {
        0 => ("quick", "quick_hello"),
        1 => ("slow", "slow_hello"),
        _ => ("stall", "stall_hello"),
    };
    let (ours, theirs) = SeqPacketSocket::pair().expect("socketpair");
    let mut cmd = common::role(role);
    cmd.env(SLEEP_ENV, (t.child_seed % 20_000).to_string());
    let passed = courier::transport::inherit(&mut cmd, OwnedFd::from(theirs)).expect("inherit");
    cmd.env(CHANNEL_ENV, format!("seqpacket:{}", passed.number()));
    let spawned_at = Instant::now();
    let child = cmd.spawn();
    drop(passed);
    drop(cmd);
    let mut child = Guard(child.expect("spawn"));
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let outcome = match ParentEnd::handshake(ours, config()) {
            Ok(ep) => match ep.recv_timeout(BOUND + BOUND) {
                Err(RecvTimeoutError::Disconnected) => Handshake::Answered(Instant::now()),
                Err(e) => Handshake::Bad(format!("after the handshake: {e:?}")),
                Ok(_) => Handshake::Bad("a value from a child that sends none".into()),
            },
            Err(ConnectError::Closed) => Handshake::Closed(Instant::now()),
            Err(e) => Handshake::Bad(format!("handshake: {e:?}")),
        };
        // The endpoint (or socket) is closed by now.
        let _ = tx.send(outcome);
    });
    std::thread::sleep((spawned_at + t.delay).saturating_duration_since(Instant::now()));
    let killed = Instant::now();
    child.0.kill().expect("SIGKILL");
    match rx.recv_timeout(BOUND) {
        Ok(outcome) => {
            worker.join().expect("handshake thread");
            let at = match outcome {
                Handshake::Closed(at) => {
                    tally.closed_in_handshake += 1;
                    Some(at)
                }
                Handshake::Answered(at) => {
                    tally.after_handshake += 1;
                    Some(at)
                }
                Handshake::Bad(e) => {
                    tally.fail(t.number, t.phase, format!("{variant}: {e}"));
                    None
                }
            };
            if let Some(at) = at {
                if at < killed {
                    tally.fail(
                        t.number,
                        t.phase,
                        format!("{variant}: ended before the kill"),
                    );
                } else {
                    tally.latency(t.phase, at - killed);
                }
            }
        }
        Err(_) => {
            tally.hangs += 1;
            tally.fail(
                t.number,
                t.phase,
                format!("{variant}: hang: no outcome within {BOUND:?} of the kill"),
            );
            // The thread ends by its own bounds; the fd check below will
            // see its socket.
        }
    }
    reap_killed(t, &mut child, tally);
}
