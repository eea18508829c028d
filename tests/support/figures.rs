//! Figures for the reliability suites (`tests/reliability_*`): how
//! much work a run does (short in CI, long with `COURIER_SOAK=1`), and one
//! `figures:` line per suite, printed and, when `COURIER_FIGURES` names a
//! file, appended to it (the source of `docs/reliability.md`'s table).

use std::io::Write;
use std::time::Duration;

/// Set to `1` to run the long versions of the reliability suites.
pub const SOAK_ENV: &str = "COURIER_SOAK";

/// A file the `figures:` lines are appended to, when set.
pub const FIGURES_ENV: &str = "COURIER_FIGURES";

/// Whether this run is a long one (`COURIER_SOAK=1`).
pub fn soak() -> bool {
    std::env::var(SOAK_ENV).is_ok_and(|v| v == "1")
}

/// `short` in a normal (CI) run, `long` with `COURIER_SOAK=1`.
pub fn scaled(short: u64, long: u64) -> u64 {
    if soak() {
        long
    } else {
        short
    }
}

/// One suite's figures, as `key=value` pairs in the order added.
pub struct Figures {
    suite: String,
    pairs: Vec<(String, String)>,
}

impl Figures {
    /// Figures of the suite (or part of a suite) `suite`.
    pub fn new(suite: &str) -> Self {
        Figures {
            suite: suite.to_owned(),
            pairs: vec![("mode".into(), if soak() { "long" } else { "short" }.into())],
        }
    }

    /// Adds `key=value` (`value` must not contain spaces).
    pub fn add(&mut self, key: &str, value: impl std::fmt::Display) -> &mut Self {
        let value = value.to_string();
        assert!(
            !value.contains(' ') && !key.contains(' '),
            "figure {key}={value} has a space"
        );
        self.pairs.push((key.to_owned(), value));
        self
    }

    /// Adds a duration in milliseconds with three decimals.
    pub fn add_ms(&mut self, key: &str, d: Duration) -> &mut Self {
        self.add(key, format!("{:.3}ms", d.as_secs_f64() * 1e3))
    }

    /// The line: `figures: suite=NAME mode=short|long key=value ...`.
    pub fn line(&self) -> String {
        let mut line = format!("figures: suite={}", self.suite);
        for (k, v) in &self.pairs {
            line.push_str(&format!(" {k}={v}"));
        }
        line
    }

    /// Prints the line (see it with `--nocapture`) and appends it to the
    /// file named by `COURIER_FIGURES`, if any.
    pub fn report(&self) {
        let line = self.line();
        println!("{line}");
        if let Ok(path) = std::env::var(FIGURES_ENV) {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("open {path}: {e}"));
            writeln!(file, "{line}").unwrap_or_else(|e| panic!("append to {path}: {e}"));
        }
    }
}

/// The median and the largest of `samples` (which must not be empty).
pub fn median_max(samples: &mut [Duration]) -> (Duration, Duration) {
    assert!(!samples.is_empty(), "no samples");
    samples.sort_unstable();
    (samples[samples.len() / 2], samples[samples.len() - 1])
}

/// The number of fds open in this process (from `/proc/self/fd`, not
/// counting the fd that reads it).
pub fn open_fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .count()
        .saturating_sub(1)
}

/// A `kB` field (`VmHWM`, `VmRSS`, ...) of `/proc/<pid>/status`.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?;
    line.trim().trim_end_matches("kB").trim().parse().ok()
}

/// This process's peak resident memory so far, in KiB (`VmHWM`).
pub fn peak_rss_kib() -> u64 {
    status_kib(std::process::id(), "VmHWM").expect("VmHWM in /proc/self/status")
}
