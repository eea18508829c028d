//! Comparing fd tables (`common::fd_table()` snapshots): what was opened
//! or closed since a baseline, by fd number or by number and target, and a
//! bounded wait for the table to settle back.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::common::fd_table;

/// An fd table: fd number to what it points to.
pub type FdTable = BTreeMap<i32, PathBuf>;

/// The fds of `now` under a number `baseline` does not have.
pub fn opened(baseline: &FdTable, now: &FdTable) -> Vec<(i32, PathBuf)> {
    now.iter()
        .filter(|(fd, _)| !baseline.contains_key(fd))
        .map(|(fd, target)| (*fd, target.clone()))
        .collect()
}

/// The fds of `baseline` whose number `now` does not have.
pub fn closed(baseline: &FdTable, now: &FdTable) -> Vec<(i32, PathBuf)> {
    opened(now, baseline)
}

/// The fds open in this process now under a number `baseline` does not
/// have.
pub fn new_fds(baseline: &FdTable) -> Vec<(i32, PathBuf)> {
    opened(baseline, &fd_table())
}

/// The entries of `a` that `b` does not have, number and target alike.
pub fn differing(a: &FdTable, b: &FdTable) -> Vec<(i32, PathBuf)> {
    a.iter()
        .filter(|(fd, target)| b.get(fd) != Some(target))
        .map(|(fd, target)| (*fd, target.clone()))
        .collect()
}

/// Waits (bounded by `within`) until this process's fd table is
/// `baseline` again (threads may still be closing fds); the table then, or
/// at the deadline.
pub fn settle(baseline: &FdTable, within: Duration) -> FdTable {
    let deadline = Instant::now() + within;
    loop {
        let now = fd_table();
        if now == *baseline || Instant::now() >= deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What differs between `baseline` and `now`, a line each: `+fd -> target`
/// for what `now` has anew, `-fd -> target` for what it lost.
pub fn diff_lines(baseline: &FdTable, now: &FdTable) -> Vec<String> {
    let mut diff: Vec<String> = differing(now, baseline)
        .iter()
        .map(|(fd, t)| format!("+{fd} -> {}", t.display()))
        .collect();
    diff.extend(
        differing(baseline, now)
            .iter()
            .map(|(fd, t)| format!("-{fd} -> {}", t.display())),
    );
    diff
}
