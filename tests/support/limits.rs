//! What the kernel lets a process do, set and read for the suites that
//! push against it: a child started under `ulimit -n`, the fd limit and the
//! capabilities in effect, and a child changing to another uid.

use std::process::{Command, Stdio};

/// `inner` (a command such as `common::role(..)`: its program, arguments
/// and environment) started by `sh` under `ulimit -n nofile`, stdin from
/// `/dev/null`.
pub fn under_ulimit(inner: &Command, nofile: u64) -> Command {
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "ulimit -n \"$1\" && shift && exec \"$@\"",
        "sh",
        &nofile.to_string(),
    ])
    .arg(inner.get_program())
    .args(inner.get_args())
    .stdin(Stdio::null());
    for (key, value) in inner.get_envs() {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    cmd
}

/// The soft `RLIMIT_NOFILE` of this process, from `/proc/self/limits`.
pub fn nofile_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .expect("read /proc/self/limits")
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .expect("Max open files line")
        .parse()
        .expect("a number")
}

/// Whether this process has `CAP_SYS_ADMIN` or `CAP_SYS_RESOURCE` in
/// effect (either lifts the limit on fds in flight).
pub fn lifts_in_flight_limit() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").expect("read status");
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .expect("CapEff line");
    let cap_eff = u64::from_str_radix(cap_eff.trim(), 16).expect("hex CapEff");
    const CAP_SYS_ADMIN: u64 = 21;
    const CAP_SYS_RESOURCE: u64 = 24;
    cap_eff & (1 << CAP_SYS_ADMIN | 1 << CAP_SYS_RESOURCE) != 0
}

/// In a child running as root: becomes uid and gid `id`, with no
/// supplementary groups (which also drops every capability).
pub fn become_user(id: u32) {
    use nix::unistd::{setgid, setgroups, setuid, Gid, Uid};
    setgroups(&[]).expect("setgroups");
    setgid(Gid::from_raw(id)).expect("setgid");
    setuid(Uid::from_raw(id)).expect("setuid");
}
