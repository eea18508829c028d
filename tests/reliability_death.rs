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

#[path = "../crates/transport/tests/common/mod.rs"]
mod common;
mod support;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{PipeReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Guard, CHILD_TIMEOUT};
use courier::transport::SeqPacketSocket;
use courier::{
    from_env, Bytes, CommandExt, Config, ConnectError, Endpoint, Fd, Receiver, RecvTimeoutError,
    CHANNEL_ENV,
};
use serde::{Deserialize, Serialize};
use support::figures::{median_max, scaled, Figures};
use support::wait_within;

// ---- what travels -------------------------------------------------------

/// Child to parent. The parent sends nothing (`()`).
#[derive(Serialize, Deserialize)]
enum Up {
    /// `send` phase: value `seq` of the stream; `text` is [`small_text`].
    Small { seq: u64, text: String },
    /// `large` phase: `data` is [`base`]`[offset..offset + len]`, with
    /// `offset` and `len` the `seq`-th draw of [`big_shape`].
    Big { seq: u64, offset: u64, data: Bytes },
    /// `fds` phase: `1 + seq % 3` pipes, each holding [`pipe_text`], and a
    /// channel's receiving end holding `seq` whose sender the child keeps.
    Carry {
        seq: u64,
        pipes: Vec<Fd<PipeReader>>,
        nested: Receiver<u64>,
    },
}

type ParentEnd = Endpoint<(), Up>;
type ChildEnd = Endpoint<Up, ()>;

const PROTOCOL: &str = "courier-death-test";

fn config() -> Config {
    Config::new()
        .protocol(PROTOCOL, 1)
        .handshake_timeout(CHILD_TIMEOUT)
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

/// Values an `fds` child sends before it waits to be killed.
const CARRIES: u64 = 48;

/// Big values: from 1 to 6 MiB, slices of an 8 MiB pseudo-random block.
const BIG_MIN: u64 = 1 << 20;
const BIG_MAX: u64 = 6 << 20;
const BASE_LEN: usize = 8 << 20;

// ---- a small seeded RNG ---------------------------------------------------

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn delay(&mut self, max: Duration) -> Duration {
        Duration::from_micros(self.below(max.as_micros() as u64 + 1))
    }
}

fn seed() -> u64 {
    match std::env::var(SEED_ENV) {
        Ok(text) => {
            let text = text.trim();
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("{SEED_ENV}={text:?} is not a u64"))
        }
        Err(_) => DEFAULT_SEED,
    }
}

// ---- the expected contents -------------------------------------------------

fn small_text(seq: u64) -> String {
    format!("small-{seq}-{}", "x".repeat((seq % 61) as usize))
}

fn pipe_text(seq: u64, j: usize) -> String {
    format!("pipe {j} of value {seq}")
}

/// The 8 MiB block big values are cut from (the same in both processes).
fn base() -> Vec<u8> {
    let mut rng = Rng(0xB16_B10C);
    let mut block = vec![0u8; BASE_LEN];
    for chunk in block.chunks_exact_mut(8) {
        chunk.copy_from_slice(&rng.next().to_le_bytes());
    }
    block
}

/// The offset and length of the next big value.
fn big_shape(rng: &mut Rng) -> (u64, u64) {
    let len = BIG_MIN + rng.below(BIG_MAX - BIG_MIN + 1);
    let offset = rng.below(BASE_LEN as u64 - len + 1);
    (offset, len)
}

// ---- roles ------------------------------------------------------------------

const ROLES: &[(&str, fn())] = &[
    ("stream_small", stream_small),
    ("stream_large", stream_large),
    ("fds_in_flight", fds_in_flight),
    ("quick_hello", quick_hello),
    ("slow_hello", slow_hello),
    ("stall_hello", stall_hello),
];

#[test]
#[ignore = "child role: run by the other tests of this file"]
fn role_entry() {
    common::run_role(ROLES)
}

/// In a child: records in the progress file that `count` sends were
/// confirmed.
struct Progress(File);

impl Progress {
    fn open() -> Progress {
        let path = std::env::var(PROGRESS_ENV).expect("progress file");
        Progress(
            File::options()
                .write(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("open {path}: {e}")),
        )
    }

    fn confirmed(&self, count: u64) {
        self.0
            .write_all_at(&count.to_le_bytes(), 0)
            .expect("write progress");
    }
}

fn env_u64(name: &str) -> u64 {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is set"))
        .parse()
        .unwrap_or_else(|_| panic!("{name} is a number"))
}

/// Sends what `next(seq)` makes until killed (or the parent goes away, or
/// [`LIFETIME`] passes), recording every confirmed send.
fn stream(ep: &ChildEnd, mut next: impl FnMut(u64) -> Up) {
    let progress = Progress::open();
    let end = Instant::now() + LIFETIME;
    let mut seq = 0;
    while Instant::now() < end {
        match ep.send_timeout(next(seq), LIFETIME) {
            Ok(()) => progress.confirmed(seq + 1),
            Err(e) if e.is_disconnected() => return,
            Err(e) => panic!("send {seq}: {e:?}"),
        }
        seq += 1;
    }
}

fn stream_small() {
    let ep: ChildEnd = from_env(config()).expect("from_env");
    stream(&ep, |seq| Up::Small {
        seq,
        text: small_text(seq),
    });
}

fn stream_large() {
    let mut config = config();
    if std::env::var_os(RING_OFF_ENV).is_some() {
        config = config.shared_ring(0);
    }
    let base = base();
    let mut rng = Rng(env_u64(TRIAL_SEED_ENV));
    let ep: ChildEnd = from_env(config).expect("from_env");
    stream(&ep, |seq| {
        let (offset, len) = big_shape(&mut rng);
        Up::Big {
            seq,
            offset,
            data: Bytes::from(&base[offset as usize..(offset + len) as usize]),
        }
    });
}

fn fds_in_flight() {
    let ep: ChildEnd = from_env(config()).expect("from_env");
    let progress = Progress::open();
    let mut keep = Vec::new();
    for seq in 0..CARRIES {
        let mut pipes = Vec::new();
        for j in 0..=(seq % 3) as usize {
            let (reader, mut writer) = std::io::pipe().expect("pipe");
            writer
                .write_all(pipe_text(seq, j).as_bytes())
                .expect("fill the pipe");
            pipes.push(Fd::new(reader));
        }
        let (tx, nested) = courier::channel::<u64>().expect("nested channel");
        tx.send(seq).expect("into the nested channel");
        keep.push(tx); // dies with this process
        match ep.send_timeout(Up::Carry { seq, pipes, nested }, LIFETIME) {
            Ok(()) => progress.confirmed(seq + 1),
            Err(e) => panic!("send {seq}: {e:?}"),
        }
    }
    std::thread::sleep(LIFETIME);
    panic!("fds_in_flight: not killed within {LIFETIME:?}");
}

/// Answers the hello at once, then waits to be killed.
fn quick_hello() {
    let ep: ChildEnd = from_env(config()).expect("from_env");
    match ep.recv_timeout(LIFETIME) {
        Err(RecvTimeoutError::Disconnected) => {}
        other => panic!("expected to be killed, got {:?}", other.map(|_| ())),
    }
}

/// Sleeps first (a slow start), then as [`quick_hello`].
fn slow_hello() {
    std::thread::sleep(Duration::from_micros(env_u64(SLEEP_ENV)));
    quick_hello();
}

/// Reads the parent's hello (raw, from the inherited fd) and never answers.
fn stall_hello() {
    let value = std::env::var(CHANNEL_ENV).expect("channel variable");
    let raw: i32 = value
        .strip_prefix("seqpacket:")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{CHANNEL_ENV}={value:?}"));
    let end = Instant::now() + LIFETIME;
    let mut buf = [0u8; 512];
    loop {
        match nix::sys::socket::recv(raw, &mut buf, nix::sys::socket::MsgFlags::MSG_DONTWAIT) {
            Ok(n) => {
                assert!(n > 0, "end of stream before the hello");
                break;
            }
            Err(nix::errno::Errno::EAGAIN) => std::thread::sleep(Duration::from_micros(200)),
            Err(e) => panic!("recv the hello: {e}"),
        }
        assert!(Instant::now() < end, "no hello within {LIFETIME:?}");
    }
    std::thread::sleep(LIFETIME);
    panic!("stall_hello: not killed within {LIFETIME:?}");
}

// ---- the parent's bookkeeping -----------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Phase {
    Send,
    Large,
    Handshake,
    Fds,
}

const PHASES: [Phase; 4] = [Phase::Send, Phase::Large, Phase::Handshake, Phase::Fds];

impl Phase {
    fn name(self) -> &'static str {
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
struct Tally {
    trials: BTreeMap<&'static str, u64>,
    failures: Vec<String>,
    hangs: u64,
    fds_leaked: u64,
    maps_leaked: u64,
    lost: u64,
    values: u64,
    fds_received: u64,
    big_bytes: u64,
    /// Handshake trials that ended in `Closed` / that completed and then
    /// saw `Disconnected`.
    closed_in_handshake: u64,
    after_handshake: u64,
    /// `large` trials whose first value came through the sending end's
    /// ring (the parent mapped a `courier-ring` memfd) / did not.
    large_via_ring: u64,
    large_via_memfd: u64,
    /// `fds` trials whose child was killed before it had sent all its
    /// values (the others died holding all of them in flight).
    fds_mid_send: u64,
    latencies: Vec<Duration>,
    by_phase: BTreeMap<&'static str, Vec<Duration>>,
}

impl Tally {
    fn fail(&mut self, trial: u64, phase: Phase, what: impl std::fmt::Display) {
        let line = format!("trial {trial} ({}): {what}", phase.name());
        eprintln!("death: {line}");
        self.failures.push(line);
    }

    fn latency(&mut self, phase: Phase, d: Duration) {
        self.latencies.push(d);
        self.by_phase.entry(phase.name()).or_default().push(d);
    }
}

/// What a trial must leave as it found: the fd table and the memfd
/// mappings (the rings a receiver mapped).
#[derive(PartialEq, Eq)]
struct Snapshot {
    fds: BTreeMap<i32, PathBuf>,
    memfd_maps: usize,
}

impl Snapshot {
    fn now() -> Snapshot {
        let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
        Snapshot {
            fds: common::fd_table(),
            memfd_maps: maps.lines().filter(|l| l.contains("/memfd:")).count(),
        }
    }
}

/// The shared inputs of one trial.
struct Trial<'a> {
    number: u64,
    phase: Phase,
    delay: Duration,
    child_seed: u64,
    progress: &'a Path,
    base: &'a [u8],
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

/// Checks one received value against what the child sent as value
/// number `expected`; returns the fds it carried.
fn check_value(
    value: Up,
    expected: u64,
    shapes: &mut Rng,
    base: &[u8],
    tally: &mut Tally,
) -> Result<u64, String> {
    match value {
        Up::Small { seq, text } => {
            if seq != expected {
                return Err(format!("got value {seq}, expected {expected}"));
            }
            if text != small_text(seq) {
                return Err(format!("value {seq}: text corrupted: {text:?}"));
            }
            Ok(0)
        }
        Up::Big { seq, offset, data } => {
            if seq != expected {
                return Err(format!("got big value {seq}, expected {expected}"));
            }
            let (want_offset, want_len) = big_shape(shapes);
            if (offset, data.len() as u64) != (want_offset, want_len) {
                return Err(format!(
                    "big value {seq}: offset {offset} len {} instead of {want_offset} {want_len}",
                    data.len()
                ));
            }
            let range = offset as usize..(offset + want_len) as usize;
            if data[..] != base[range] {
                return Err(format!("big value {seq}: contents corrupted"));
            }
            tally.big_bytes += want_len;
            Ok(0)
        }
        Up::Carry { seq, pipes, nested } => {
            if seq != expected {
                return Err(format!("got carry {seq}, expected {expected}"));
            }
            let want = (seq % 3) as usize + 1;
            if pipes.len() != want {
                return Err(format!(
                    "carry {seq}: {} pipes, expected {want}",
                    pipes.len()
                ));
            }
            for (j, pipe) in pipes.into_iter().enumerate() {
                if !common::is_cloexec(pipe.as_fd()) {
                    return Err(format!("carry {seq}: pipe {j} lacks close-on-exec"));
                }
                let mut text = String::new();
                let mut reader = pipe.into_inner();
                reader
                    .read_to_string(&mut text)
                    .map_err(|e| format!("carry {seq}: read pipe {j}: {e}"))?;
                if text != pipe_text(seq, j) {
                    return Err(format!("carry {seq}: pipe {j} holds {text:?}"));
                }
            }
            if !common::is_cloexec(nested.as_fd()) {
                return Err(format!("carry {seq}: nested channel lacks close-on-exec"));
            }
            match nested.recv_timeout(BOUND) {
                Ok(n) if n == seq => {}
                other => return Err(format!("carry {seq}: nested channel gave {other:?}")),
            }
            // Its sender died with the child.
            match nested.recv_timeout(BOUND) {
                Err(RecvTimeoutError::Disconnected) => {}
                other => {
                    return Err(format!(
                        "carry {seq}: nested channel after its value: {other:?}"
                    ))
                }
            }
            Ok(want as u64 + 1)
        }
    }
}

/// A `send`, `large` or `fds` trial: spawn with a channel, kill after the
/// delay (receiving meanwhile, except in `fds`), then drain to
/// `Disconnected`.
fn stream_trial(t: &Trial<'_>, tally: &mut Tally) {
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
    let spawned = match cmd.spawn_endpoint::<(), Up>(config()) {
        Ok(spawned) => spawned,
        Err(e) => return tally.fail(t.number, t.phase, format!("spawn_endpoint: {e}")),
    };
    drop(cmd);
    let mut child = Guard(spawned.child);
    let ep: ParentEnd = spawned.endpoint;
    drop(spawned.pidfd);
    let kill_at = Instant::now() + t.delay;
    let mut shapes = Rng(t.child_seed);
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
fn handshake_trial(t: &Trial<'_>, tally: &mut Tally) {
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

#[test]
fn peer_death_at_random_points_ends_in_disconnected() {
    let _lock = common::fd_lock();
    let seed = seed();
    println!("death: seed {seed:#x} (replay with {SEED_ENV}={seed:#x})");
    let per_phase = scaled(60, 500);
    let dir = common::temp_dir();
    let progress = dir.path().join("progress");
    let base = base();
    let mut rng = Rng(seed);
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
            let added: Vec<_> = after
                .fds
                .iter()
                .filter(|(fd, target)| before.fds.get(fd) != Some(target))
                .collect();
            let removed: Vec<_> = before
                .fds
                .iter()
                .filter(|(fd, target)| after.fds.get(fd) != Some(target))
                .collect();
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
