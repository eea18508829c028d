//! Suite 4 of issue 7 (reliability): fork races.
//!
//! Several threads spawn children with channels (`spawn_endpoint`), while
//! two others keep spawning unrelated processes with a plain
//! `std::process::Command` (`sh`, which execs `ls -l /proc/self/fd`): the
//! scheduling is [`support::race_spawns`]'s, shared with `tests/spawn.rs`.
//!
//! What counts as a leaked inheritance: any fd above stdio in an unrelated
//! process, or in a channel child besides its own channel socket (listed by
//! the child itself before it adopts its end), that this test process did
//! not itself inherit as inheritable from whoever started it (those are
//! found at the start and allowed); and `COURIER_CHANNEL` seen by an
//! unrelated process.
//!
//! What counts as a missed end of stream, checked in both directions: each
//! channel child alternately
//! * waits for the parent to drop its sending half, and must then see
//!   `Disconnected` within [`EOF_BOUND`] (else it exits with
//!   [`MISSED_EOF`]); the parent must then see `Disconnected` once the child
//!   has exited;
//! * is told to exit at once, without dropping its endpoint (no shutdown:
//!   only the last close of its socket ends the stream), and the parent
//!   must see `Disconnected` within [`EOF_BOUND`].
//!
//! Afterwards the parent's fd table is back to what it was. `COURIER_SOAK=1`
//! runs the long version.

#[path = "../crates/transport/tests/common/mod.rs"]
mod common;
mod support;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::Guard;
use courier::{from_env, Config, Endpoint, RecvTimeoutError, CHANNEL_ENV};
use serde::{Deserialize, Serialize};
use support::child::{
    describe, inherited_channel_fd, protocol_config, spawn_endpoint, spawn_piped,
};
use support::fds::{differing, settle, FdTable};
use support::figures::{scaled, Figures};
use support::{collect_lines, fdinfo_flags, race_spawns, wait_within, Race};

/// Parent to child.
#[derive(Serialize, Deserialize, Debug)]
enum Down {
    /// Answer [`Up::Pong`], then wait for the parent's end of stream.
    Ping(u64),
    /// Exit at once, endpoint and all, without dropping anything.
    ExitNow,
}

/// Child to parent.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Up {
    /// The fds the child held besides stdio and its channel socket, before
    /// it adopted its end, as (number, `/proc` link).
    Holding(Vec<(i32, String)>),
    Pong(u64),
}

type ParentEnd = Endpoint<Down, Up>;
type ChildEnd = Endpoint<Up, Down>;

const PROTOCOL: &str = "courier-fork-test";

/// What both ends use.
fn config() -> Config {
    protocol_config(PROTOCOL)
}

/// How long either side waits for an end of stream before calling it
/// missed.
const EOF_BOUND: Duration = Duration::from_secs(10);

/// A child's exit code for "no end of stream within [`EOF_BOUND`]".
const MISSED_EOF: i32 = 3;

/// Spawning threads (each its own channel children, one at a time).
const THREADS: u64 = 4;

// ---- the channel child -----------------------------------------------------

const ROLES: &[(&str, fn())] = &[("fork_child", fork_child)];

#[test]
#[ignore = "child role: run by the other tests of this file"]
fn role_entry() {
    common::run_role(ROLES)
}

/// The fds of this process above stdio, as (number, `/proc` link).
fn fds_above_stdio() -> Vec<(i32, String)> {
    common::fd_table()
        .into_iter()
        .filter(|(fd, _)| *fd > 2)
        .map(|(fd, target)| (fd, target.to_string_lossy().into_owned()))
        .collect()
}

fn fork_child() {
    let own = inherited_channel_fd();
    // Before anything else opens an fd.
    let holding = fds_above_stdio()
        .into_iter()
        .filter(|(fd, _)| *fd != own)
        .collect();
    let ep: ChildEnd = from_env(config()).expect("from_env");
    ep.send(Up::Holding(holding)).expect("report");
    match ep.recv_timeout(EOF_BOUND) {
        Ok(Down::Ping(tag)) => {
            ep.send(Up::Pong(tag)).expect("pong");
            match ep.recv_timeout(EOF_BOUND) {
                Err(RecvTimeoutError::Disconnected) => {}
                Err(RecvTimeoutError::Timeout) => std::process::exit(MISSED_EOF),
                other => panic!("expected Disconnected, got {other:?}"),
            }
        }
        // The endpoint is never dropped: only the kernel's close at exit
        // ends the parent's stream.
        Ok(Down::ExitNow) => std::process::exit(0),
        other => panic!("expected a request, got {other:?}"),
    }
}

// ---- the parent's side -----------------------------------------------------------

/// What the race found besides [`Race`]'s own counts.
#[derive(Default)]
struct Found {
    leaks: Mutex<Vec<String>>,
    missed_eofs: AtomicU64,
    /// The slowest end of stream seen, in microseconds, per direction.
    slowest_to_parent: AtomicU64,
    slowest_to_child: AtomicU64,
}

impl Found {
    fn leak(&self, what: String) {
        let mut leaks = self.leaks.lock().unwrap_or_else(|e| e.into_inner());
        if leaks.len() < 20 {
            eprintln!("fork: leaked inheritance: {what}");
        }
        leaks.push(what);
    }

    fn missed(&self, what: String) {
        eprintln!("fork: missed end of stream: {what}");
        self.missed_eofs.fetch_add(1, Ordering::SeqCst);
    }
}

fn micros(d: Duration) -> u64 {
    d.as_micros().try_into().unwrap_or(u64::MAX)
}

/// The fds this process holds without close-on-exec: inherited from
/// whoever started the test (a CI runner, a shell), so every child
/// inherits them too, by design of that starter, not by courier's doing.
fn inheritable_fds() -> FdTable {
    const O_CLOEXEC: u32 = 0o2_000_000;
    common::fd_table()
        .into_iter()
        .filter(|(fd, _)| *fd > 2 && fdinfo_flags(*fd).is_some_and(|f| f & O_CLOEXEC == 0))
        .collect()
}

/// One channel child: spawn, report, round trip, end of stream both ways
/// (`tag` even: the parent ends first; odd: the child exits at once).
fn round_trip(tag: u64, allowed: &FdTable, found: &Found) {
    let (mut child, ep): (_, ParentEnd) = spawn_endpoint(common::role("fork_child"), config())
        .unwrap_or_else(|e| panic!("spawn {tag}: {e}"));
    let recv = |ep: &ParentEnd, child: &mut Guard| match ep.recv_timeout(common::CHILD_TIMEOUT) {
        Ok(up) => up,
        Err(e) => {
            let status = wait_within(child, Duration::from_secs(1));
            panic!("spawn {tag}: no answer ({e:?}); child {status:?}")
        }
    };
    match recv(&ep, &mut child) {
        Up::Holding(fds) => {
            for (fd, target) in fds {
                if allowed.get(&fd).map(|t| t.to_string_lossy()) != Some(target.as_str().into()) {
                    found.leak(format!("channel child {tag} holds fd {fd} -> {target}"));
                }
            }
        }
        other => panic!("spawn {tag}: expected the fd report, got {other:?}"),
    }
    if tag.is_multiple_of(2) {
        ep.send(Down::Ping(tag)).expect("ping");
        assert_eq!(recv(&ep, &mut child), Up::Pong(tag), "spawn {tag}");
        let (tx, rx) = ep.split();
        let dropped = Instant::now();
        drop(tx); // SHUT_WR: the child's receive ends, then it exits
        match rx.recv_timeout(EOF_BOUND) {
            Err(RecvTimeoutError::Disconnected) => {
                // The child saw our end of stream first (else it would
                // still be waiting), then exited.
                found
                    .slowest_to_child
                    .fetch_max(micros(dropped.elapsed()), Ordering::SeqCst);
            }
            Err(RecvTimeoutError::Timeout) => {
                found.missed(format!("spawn {tag}: the parent got no end of stream"))
            }
            other => panic!("spawn {tag}: expected Disconnected, got {other:?}"),
        }
    } else {
        ep.send(Down::ExitNow).expect("exit request");
        let asked = Instant::now();
        match ep.recv_timeout(EOF_BOUND) {
            Err(RecvTimeoutError::Disconnected) => {
                found
                    .slowest_to_parent
                    .fetch_max(micros(asked.elapsed()), Ordering::SeqCst);
            }
            Err(RecvTimeoutError::Timeout) => found.missed(format!(
                "spawn {tag}: the parent got no end of stream after the child's exit"
            )),
            other => panic!("spawn {tag}: expected Disconnected, got {other:?}"),
        }
    }
    match wait_within(&mut child, EOF_BOUND) {
        Some(status) if status.success() => {}
        Some(status) if status.code() == Some(MISSED_EOF) => {
            found.missed(format!("spawn {tag}: the child got no end of stream"))
        }
        Some(status) => panic!("spawn {tag}: child ended {}", describe(status)),
        None => panic!("spawn {tag}: the child did not exit within {EOF_BOUND:?}"),
    }
}

/// An unrelated process: what it holds that it should not (`None` when
/// nothing).
fn probe(allowed: &FdTable) -> Option<String> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"echo "env=${COURIER_CHANNEL-unset}"; exec ls -l /proc/self/fd"#)
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    let (mut child, lines) = spawn_piped(cmd);
    let out = collect_lines(&lines, common::CHILD_TIMEOUT);
    let status = wait_within(&mut child, common::CHILD_TIMEOUT).expect("probe exits");
    assert!(status.success(), "probe failed: {status:?}: {out:?}");
    let mut wrong = Vec::new();
    let env = out
        .iter()
        .find_map(|l| l.strip_prefix("env="))
        .expect("env line");
    if env != "unset" {
        wrong.push(format!("{CHANNEL_ENV}={env}"));
    }
    // `ls -l` lines: `... <fd> -> <target>`.
    for line in &out {
        let Some((left, target)) = line.split_once(" -> ") else {
            continue;
        };
        let fd: i32 = left
            .split_whitespace()
            .last()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("probe line {line:?}"));
        let own_dir = target.starts_with("/proc/") && target.ends_with("/fd");
        let allowed = allowed
            .get(&fd)
            .is_some_and(|t| t.to_string_lossy() == target);
        if fd > 2 && !own_dir && !allowed {
            wrong.push(format!("fd {fd} -> {target}"));
        }
    }
    (!wrong.is_empty()).then(|| format!("unrelated process holds {wrong:?}"))
}

#[test]
fn fork_races_leak_no_fd_and_miss_no_end_of_stream() {
    let _lock = common::fd_lock();
    let allowed = inheritable_fds();
    if !allowed.is_empty() {
        println!("fork: this process inherited (allowed in children): {allowed:?}");
    }
    let per_thread = scaled(125, 1250);
    let limit = Duration::from_secs(scaled(45, 900));
    let found = Found::default();
    let before = common::fd_table();
    let started = Instant::now();
    let Race {
        spawns,
        probes,
        leaks,
        failures,
    } = race_spawns(
        THREADS,
        per_thread,
        limit,
        |tag| round_trip(tag, &allowed, &found),
        || probe(&allowed),
    );
    let elapsed = started.elapsed();
    // The probes' output readers may still be closing their pipe ends.
    let after = settle(&before, Duration::from_secs(5));
    let fds_leaked = differing(&after, &before).len();

    for leak in &leaks {
        found.leak(leak.clone());
    }
    let leaked = found
        .leaks
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let missed = found.missed_eofs.load(Ordering::SeqCst);
    let ms = |us: &AtomicU64| Duration::from_micros(us.load(Ordering::SeqCst));
    Figures::new("fork")
        .add("spawns", spawns)
        .add("threads", THREADS)
        .add("unrelated_processes", probes)
        .add("leaked_inheritances", leaked.len())
        .add("missed_eofs", missed)
        .add("fds_leaked", fds_leaked)
        .add_ms("parent_drop_to_eof_max", ms(&found.slowest_to_child))
        .add_ms("child_exit_to_eof_max", ms(&found.slowest_to_parent))
        .add_ms("time", elapsed)
        .report();

    assert!(failures.is_empty(), "threads failed: {failures:#?}");
    assert!(
        leaked.is_empty(),
        "{} leaked inheritances, the first: {:#?}",
        leaked.len(),
        &leaked[..leaked.len().min(20)]
    );
    assert_eq!(missed, 0, "missed ends of stream");
    assert_eq!(
        fds_leaked, 0,
        "the parent's fd table changed: {before:?} -> {after:?}"
    );
    assert_eq!(
        spawns,
        THREADS * per_thread,
        "ran out of time ({limit:?}) after {spawns} spawns"
    );
    assert!(probes > 0, "no unrelated process ran");
}
