//! Helpers shared by the facade's cross-process tests (`spawn.rs`,
//! `fallback.rs`, the `reliability_*` suites): reading a child's output
//! with bounded waits, waiting for a child, and reading this process's fd
//! flags; the modules below hold one topic each. Each test file declares
//! `mod common;` (the transport's helpers) before `mod support;`.
#![allow(dead_code)]

pub mod child;
pub mod env;
pub mod fds;
pub mod figures;
pub mod limits;
pub mod memfd;
pub mod report;
pub mod rng;
pub mod wire;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, ExitStatus};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::Guard;

/// Lines of `reader`, read by a helper thread, for bounded waits.
pub fn lines_of(reader: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits (bounded) for a line starting with `prefix`; returns the rest.
pub fn wait_line(
    lines: &mpsc::Receiver<String>,
    prefix: &str,
    timeout: Duration,
) -> Option<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                if let Some(rest) = line.strip_prefix(prefix) {
                    return Some(rest.trim().to_owned());
                }
            }
            Err(_) => return None,
        }
    }
}

/// Every line until end of file (bounded).
pub fn collect_lines(lines: &mpsc::Receiver<String>, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut all = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => all.push(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => return all,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("no end of file within {timeout:?}"),
        }
    }
}

/// Waits for `child` at most `timeout`.
pub fn wait_within(child: &mut Guard, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Asserts that process `pid` (a child spawn_endpoint gave up on) has been
/// reaped: no `/proc` entry, or (the pid reused since) not a child of ours.
pub fn assert_reaped(pid: u32) {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return;
    };
    let after_comm = &stat[stat.rfind(')').expect("comm") + 1..];
    let mut fields = after_comm.split_whitespace();
    let state = fields.next().expect("state");
    let ppid: u32 = fields.next().expect("ppid").parse().expect("ppid number");
    assert_ne!(
        ppid,
        std::process::id(),
        "child {pid} was not reaped: still our child, state {state}"
    );
}

/// A command whose stdout goes to a pipe we read, and the read side.
pub fn with_stdout_pipe(cmd: &mut Command) -> mpsc::Receiver<String> {
    let (reader, writer) = std::io::pipe().expect("pipe");
    cmd.stdout(writer);
    lines_of(reader)
}

/// Writes one marker line to stdout at once (libtest prints its own lines
/// there too, so the parent looks for the marker).
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").expect("write to stdout");
    out.flush().expect("flush stdout");
}

/// The `flags:` of fd number `raw` from `/proc/self/fdinfo` (octal open
/// flags, with O_CLOEXEC standing for FD_CLOEXEC); `None` when not open.
pub fn fdinfo_flags(raw: i32) -> Option<u32> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{raw}")).ok()?;
    let flags = info
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .expect("flags line in fdinfo");
    Some(u32::from_str_radix(flags.trim(), 8).expect("octal flags"))
}

/// The message of a panic payload.
pub fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "non-text panic".into())
}

/// What [`race_spawns`] saw.
pub struct Race {
    /// Round trips completed.
    pub spawns: u64,
    /// Unrelated processes started.
    pub probes: u64,
    /// What probes reported holding (should be nothing).
    pub leaks: Vec<String>,
    /// Panics of the spawning and probing threads.
    pub failures: Vec<String>,
}

/// Runs `threads` threads each doing `per_thread` `round_trip(tag)`s, while
/// two threads keep starting unrelated processes with `probe` (which
/// returns what such a process saw that it should not have), until the
/// round trips are done or `limit` has passed.
pub fn race_spawns(
    threads: u64,
    per_thread: u64,
    limit: Duration,
    round_trip: impl Fn(u64) + Sync,
    probe: impl Fn() -> Option<String> + Sync,
) -> Race {
    use std::sync::atomic::{AtomicBool, Ordering};
    let deadline = Instant::now() + limit;
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let couriers: Vec<_> = (0..threads)
            .map(|t| {
                let round_trip = &round_trip;
                s.spawn(move || {
                    let mut done = 0;
                    for i in 0..per_thread {
                        if Instant::now() >= deadline {
                            break;
                        }
                        round_trip(t * 1000 + i);
                        done += 1;
                    }
                    done
                })
            })
            .collect();
        let probers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let mut count = 0u64;
                    let mut leaks = Vec::new();
                    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                        count += 1;
                        leaks.extend(probe());
                    }
                    (count, leaks)
                })
            })
            .collect();
        let results: Vec<_> = couriers.into_iter().map(|h| h.join()).collect();
        stop.store(true, Ordering::SeqCst);
        let probed: Vec<_> = probers.into_iter().map(|h| h.join()).collect();
        let mut race = Race {
            spawns: 0,
            probes: 0,
            leaks: Vec::new(),
            failures: Vec::new(),
        };
        for r in results {
            match r {
                Ok(n) => race.spawns += n,
                Err(panic) => race.failures.push(panic_text(&*panic)),
            }
        }
        for p in probed {
            match p {
                Ok((n, l)) => {
                    race.probes += n;
                    race.leaks.extend(l);
                }
                Err(panic) => race.failures.push(panic_text(&*panic)),
            }
        }
        race
    })
}
