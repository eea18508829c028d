//! Reliability suite 7, security: what courier lets in, leaves behind and
//! allocates when the peer, or another user, is hostile.
//!
//! * **Socket file modes** (`path_sockets_are_0600_...`): a courier
//!   `Listener` and a bound `DatagramSocket` make their socket files mode
//!   0600 and the directories they create 0700, checked with `stat` in this
//!   process and in children that bind under `umask 0` and `umask 0777`
//!   (the umask is set in the child, never in the test harness); the files
//!   and directories go when the child drops them.
//! * **Files that are not sockets** (`a_path_that_is_not_a_socket_...`): a
//!   regular file, a directory, a FIFO, and symlinks (to a file, to a
//!   directory, to a stale socket, dangling) at the bind path: each of the
//!   courier `Listener`, the transport `Listener` and `DatagramSocket`
//!   fails with `TransportError::NotASocket` (`io::ErrorKind::AlreadyExists`)
//!   and the thing at the path, and what a symlink points to, is left
//!   exactly as it was. What the README documents for sockets holds too: a
//!   stale socket file is replaced (default) or, with
//!   `BindOptions::replace_stale(false)`, refused with `AddressInUse` and
//!   kept; a live socket (courier's or a std stream listener) is never
//!   replaced and keeps working; a listener whose file was replaced by a
//!   regular file does not remove that file on drop.
//! * **Another uid** (`a_listener_rejects_another_uid_by_default`): as
//!   root, a child drops to uid/gid 65534 and connects to listeners made
//!   with the default `Authorize` (same uid): a raw connection to an
//!   abstract name and to a path socket made 0666 (so that the file mode
//!   lets it through) is refused at accept (`Unauthorized` with uid 65534)
//!   and closed unread: the child reads no byte, only `ECONNRESET`/end of
//!   stream; `Endpoint::connect_with(.., Authorize::anyone())` gets
//!   `Closed`; a default 0600 path socket refuses it in the kernel
//!   (`EACCES`). The listener then serves a same-uid client. Not root: a
//!   `skipped` notice.
//! * **A channel that refuses fds** (`a_channel_refusing_fds_...`):
//!   `Config::accept_fds(false)` receivers (SEQPACKET, DGRAM, and an
//!   endpoint accepted by a `Listener`) get genuine frames carrying fds
//!   from a raw peer that bypasses courier's sender-side check: queued
//!   before the end refused fds, they are refused on arrival with
//!   `ChannelError::FdsNotAccepted` and closed (the fd table is back to
//!   its baseline and the pipe whose read ends they were reports `EPIPE`
//!   and `POLLERR` at its write end: no reader is left anywhere); sent
//!   afterwards, the kernel refuses them with `EPERM` (Linux 6.16+
//!   `SO_PASSRIGHTS`; on an older kernel the receive path refuses them as
//!   above). A frame without fds still arrives. A courier sender refuses
//!   such a value up front (`FdsRefused`, handed back).
//! * **Allocation bounded by the limit** (`no_peer_makes_the_receiver_...`):
//!   a child receiver with `Config::limit(1 MiB)` is sent hand-made frames
//!   claiming terabytes inline, 1 GiB bodies in sparse memfds, 1 GiB and
//!   64 MiB rings, postcard lengths of 2^40..2^60 elements, a sparse 64 MiB
//!   ring walked by 32 values each within the limit (their holes faulted
//!   in by the receiver's reads), and over a pipe transport length
//!   prefixes of 3 MiB and 4 GiB. Every hostile frame
//!   must give exactly the expected typed error, the honest values at the
//!   limit must arrive, and the child's peak resident memory (`VmHWM`) may
//!   grow by at most [`MEMORY_BOUND_KIB`] over the whole run.
//!
//! Each part is a module of its own ([`modes`], [`bind_path`],
//! [`other_uid`], [`refuse_fds`], [`memory`]) with its test. Each test
//! prints one `figures: suite=security part=...` line with one key per
//! check (`--nocapture` to see it), holds `common::fd_lock()` for its whole
//! run and bounds every wait. No randomness.

#[path = "../../crates/transport/tests/common/mod.rs"]
mod common;
#[path = "../support/mod.rs"]
mod support;

mod bind_path;
mod memory;
mod modes;
mod other_uid;
mod refuse_fds;

use std::io::Read;
use std::path::PathBuf;
use std::process::Stdio;

use common::Guard;
use courier::Config;
use support::child::{protocol_config, spawn_piped, Lines};

/// The protocol the listeners here speak.
fn config() -> Config {
    protocol_config("courier-security-test")
}

// ---- roles ------------------------------------------------------------

/// A path for a child (a socket to bind or to connect to).
const PATH_ENV: &str = "COURIER_TEST_PATH";
/// A second path for a child.
const PATH2_ENV: &str = "COURIER_TEST_PATH2";
/// The umask (octal) the `bind_under_umask` child binds under.
const UMASK_ENV: &str = "COURIER_TEST_UMASK";

const ROLES: &[(&str, fn())] = &[
    ("bind_under_umask", modes::bind_under_umask),
    ("other_uid", other_uid::other_uid),
    ("memory_receiver", memory::memory_receiver),
];

#[test]
#[ignore = "child role: run by the other tests of this file"]
fn role_entry() {
    common::run_role(ROLES)
}

/// This test binary in role `name` with `env`, its stdout (and, when
/// `stdin` is set, its stdin) piped.
fn spawn_role(name: &str, env: &[(&str, &str)], stdin: bool) -> (Guard, Lines) {
    let mut cmd = common::role(name);
    for (k, v) in env {
        cmd.env(k, v);
    }
    if stdin {
        cmd.stdin(Stdio::piped());
    }
    spawn_piped(cmd)
}

/// In a child: the path in `var`.
fn path_from_env(var: &str) -> PathBuf {
    PathBuf::from(std::env::var_os(var).unwrap_or_else(|| panic!("{var} not set")))
}

/// In a child: waits until the parent closes our stdin.
fn wait_for_stdin_eof() {
    let mut sink = Vec::new();
    std::io::stdin()
        .read_to_end(&mut sink)
        .expect("read stdin to its end");
}
