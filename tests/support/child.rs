//! Child processes of the reliability suites, from the parent's side:
//! starting one with its stdout read line by line, waiting (bounded) for
//! it to end and collecting what it said, addresses to hand it, spawning
//! a role with a channel, and, in a child, finding the channel fd it
//! inherited.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};
use std::sync::mpsc;
use std::time::Duration;

use courier::{AbstractName, Address, CommandExt, Config, ConnectError, Endpoint, CHANNEL_ENV};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::report::result_of;
use super::{collect_lines, wait_within, with_stdout_pipe};
use crate::common::{self, Guard, CHILD_TIMEOUT};

/// A child's stdout, line by line (see [`super::lines_of`]).
pub type Lines = mpsc::Receiver<String>;

/// The config both ends of a suite's channels use: its protocol, version
/// 1, and a handshake timeout generous enough for a re-executed test
/// binary starting under load.
pub fn protocol_config(protocol: &'static str) -> Config {
    Config::new()
        .protocol(protocol, 1)
        .handshake_timeout(CHILD_TIMEOUT)
}

/// A fresh random abstract address, and the form `common::ADDR_ENV`
/// carries it in (a child finds it with `common::parent_addr()`).
pub fn random_address() -> (Address, String) {
    let name = AbstractName::random().expect("random name");
    let env = common::hex(name.as_bytes());
    (Address::from(name), env)
}

/// Starts `cmd` with its stdout piped to us.
pub fn spawn_piped(mut cmd: Command) -> (Guard, Lines) {
    let lines = with_stdout_pipe(&mut cmd);
    (Guard::spawn(cmd), lines)
}

/// How a child ended, for a failure message.
pub fn describe(status: ExitStatus) -> String {
    match status.signal() {
        Some(sig) => format!("killed by signal {sig}"),
        None => format!("{status}"),
    }
}

/// Waits (bounded by `limit`) for `child` to exit, then for the rest of
/// its output; asserts that it succeeded and returns every line it said.
pub fn finish(child: &mut Guard, lines: &Lines, what: &str, limit: Duration) -> Vec<String> {
    let status =
        wait_within(child, limit).unwrap_or_else(|| panic!("{what} did not exit within {limit:?}"));
    let out = collect_lines(lines, Duration::from_secs(10));
    assert!(
        status.success(),
        "{what} failed ({}); its output:\n{}",
        describe(status),
        out.join("\n")
    );
    out
}

/// [`finish`]es `child` (within [`CHILD_TIMEOUT`]) and returns the pairs of
/// its `result:` line.
pub fn finish_result(mut child: Guard, lines: &Lines) -> BTreeMap<String, String> {
    result_of(&finish(&mut child, lines, "the child", CHILD_TIMEOUT))
}

/// Runs `cmd` to its end and returns the pairs of its `result:` line.
pub fn run_for_result(cmd: Command) -> BTreeMap<String, String> {
    let (child, lines) = spawn_piped(cmd);
    finish_result(child, &lines)
}

/// Spawns `cmd` with a channel (`spawn_endpoint`): the child, killed if
/// the test ends first, and the parent's end. The command (and with it any
/// fd it was to pass on) is dropped at once.
pub fn spawn_endpoint<S: Serialize, R: DeserializeOwned>(
    mut cmd: Command,
    config: Config,
) -> Result<(Guard, Endpoint<S, R>), ConnectError> {
    let spawned = cmd.spawn_endpoint::<S, R>(config)?;
    drop(cmd);
    drop(spawned.pidfd);
    Ok((Guard(spawned.child), spawned.endpoint))
}

/// In a child spawned with a SEQPACKET channel: the number of the fd it
/// inherited, from [`CHANNEL_ENV`] (before `from_env` adopts it).
pub fn inherited_channel_fd() -> i32 {
    let value = std::env::var(CHANNEL_ENV).expect("a channel child has the variable");
    value
        .strip_prefix("seqpacket:")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{CHANNEL_ENV}={value:?}"))
}
