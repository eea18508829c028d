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
//! Each test prints one `figures: suite=security part=...` line with one
//! key per check (`--nocapture` to see it), holds `common::fd_lock()` for
//! its whole run and bounds every wait. No randomness.

#[path = "../crates/transport/tests/common/mod.rs"]
mod common;
mod support;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{IoSlice, PipeReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Stdio};
use std::time::Duration;

use common::{Guard, ADDR_ENV, CHILD_TIMEOUT};
use courier::channel::{HEADER_LEN, WIRE_VERSION};
use courier::pipe::PipeTransport;
use courier::transport::{
    BindOptions, DatagramSocket, SendMsg, SeqPacketSocket, TransportError, Wait,
};
use courier::{
    Address, Authorize, Bytes, ChannelError, Config, ConnectError, Endpoint, Fd, Listener,
    Receiver, RecvTimeoutError, SendError, Sender,
};
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::memfd::{memfd_create, MFdFlags};
use serde::{Deserialize, Serialize};
use support::figures::{status_kib, Figures};
use support::{collect_lines, lines_of, say, wait_line};

/// The protocol the listeners here speak.
fn config() -> Config {
    Config::new()
        .protocol("courier-security-test", 1)
        .handshake_timeout(CHILD_TIMEOUT)
}

// ---- roles ------------------------------------------------------------

/// A path for a child (a socket to bind or to connect to).
const PATH_ENV: &str = "COURIER_TEST_PATH";
/// A second path for a child.
const PATH2_ENV: &str = "COURIER_TEST_PATH2";
/// The umask (octal) the `bind_under_umask` child binds under.
const UMASK_ENV: &str = "COURIER_TEST_UMASK";

const ROLES: &[(&str, fn())] = &[
    ("bind_under_umask", bind_under_umask),
    ("other_uid", other_uid),
    ("memory_receiver", memory_receiver),
];

#[test]
#[ignore = "child role: run by the other tests of this file"]
fn role_entry() {
    common::run_role(ROLES)
}

/// This test binary in role `name` with `env`, its stdout (and, when
/// `stdin` is set, its stdin) piped.
fn spawn_role(name: &str, env: &[(&str, &str)], stdin: bool) -> (Guard, LineSource) {
    let mut cmd = common::role(name);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdout(Stdio::piped());
    if stdin {
        cmd.stdin(Stdio::piped());
    }
    let mut child = Guard::spawn(cmd);
    let lines = lines_of(child.0.stdout.take().expect("piped stdout"));
    (child, lines)
}

type LineSource = std::sync::mpsc::Receiver<String>;

/// Every remaining line of the child, its successful exit, and the
/// `key=value` pairs of its `result:` line.
fn finish(mut child: Guard, lines: &LineSource) -> BTreeMap<String, String> {
    let out = collect_lines(lines, CHILD_TIMEOUT);
    child.wait_success();
    let line = out
        .iter()
        .find_map(|l| l.strip_prefix("result:"))
        .unwrap_or_else(|| panic!("no result line from the child; it said {out:?}"));
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
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

/// Binds a courier `Listener` at [`PATH_ENV`] and a `DatagramSocket` at
/// [`PATH2_ENV`] under the umask in [`UMASK_ENV`], says `bound`, waits for
/// the parent to look, drops both and reports whether their files and
/// directories are gone.
fn bind_under_umask() {
    let umask = u32::from_str_radix(&std::env::var(UMASK_ENV).expect("umask"), 8).expect("octal");
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(umask));
    let path = path_from_env(PATH_ENV);
    let dgram_path = path_from_env(PATH2_ENV);
    let listener =
        Listener::<u32, u32>::bind(&Address::from(path.clone()), config()).expect("bind listener");
    let dgram = DatagramSocket::bind(&Address::from(dgram_path.clone())).expect("bind datagram");
    say("bound");
    wait_for_stdin_eof();
    drop((listener, dgram));
    let gone = |p: &Path| std::fs::symlink_metadata(p).is_err();
    say(&format!(
        "result: listener_removed={} dgram_removed={} dirs_removed={}",
        gone(&path),
        gone(&dgram_path),
        gone(path.parent().expect("dir")) && gone(dgram_path.parent().expect("dir")),
    ));
}

/// Drops to uid/gid 65534 and tries its way in (see the module docs).
fn other_uid() {
    use nix::unistd::{setgid, setgroups, setuid, Gid, Uid};
    setgroups(&[]).expect("setgroups");
    setgid(Gid::from_raw(65534)).expect("setgid");
    setuid(Uid::from_raw(65534)).expect("setuid");
    assert_eq!(nix::unistd::geteuid().as_raw(), 65534);
    let abstract_addr = common::parent_addr();
    let open_path = Address::from(path_from_env(PATH_ENV));
    let closed_path = Address::from(path_from_env(PATH2_ENV));

    // The kernel: a 0600 socket of root's is not ours to connect to.
    let closed = match SeqPacketSocket::connect(&closed_path) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => "EACCES",
        Err(e) => panic!("connect to a 0600 root socket: expected EACCES, got {e}"),
        Ok(_) => panic!("uid 65534 connected to a 0600 socket of root's"),
    };
    // courier: a raw connection is refused before anything is read.
    let raw_abstract = raw_gets_nothing(&abstract_addr, "abstract");
    // A courier client trusting the listener is closed before the handshake.
    let endpoint =
        match Endpoint::<u32, u32>::connect_with(&abstract_addr, config(), &Authorize::anyone()) {
            Err(ConnectError::Closed) => "Closed",
            Ok(_) => panic!("a listener of root's accepted uid 65534"),
            Err(e) => panic!("expected Closed, got {e:?}"),
        };
    // A path socket whose mode lets everyone connect: the uid check refuses.
    let raw_open = raw_gets_nothing(&open_path, "0666 path");
    say(&format!(
        "result: path_0600={closed} abstract_raw={raw_abstract} abstract_endpoint={endpoint} \
         path_0666_raw={raw_open}"
    ));
}

/// Connects raw to `addr`, sends a few bytes and expects to read none:
/// only `ECONNRESET` (our bytes were left unread) and end of stream.
fn raw_gets_nothing(addr: &Address, what: &str) -> &'static str {
    let sock = SeqPacketSocket::connect(addr).unwrap_or_else(|e| panic!("{what}: connect: {e}"));
    // The listener may have closed the connection before this send: then
    // it fails (EPIPE), and nothing is read either way.
    match sock.send(b"CRHS let me in") {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => panic!("{what}: send: {e}"),
    }
    let mut buf = [0; 512];
    let mut reset = false;
    loop {
        match sock.recv_timeout(&mut buf, CHILD_TIMEOUT) {
            Ok(0) => return if reset { "reset_unread" } else { "closed" },
            Ok(n) => panic!(
                "{what}: the refusing listener sent {n} bytes: {:?}",
                &buf[..n]
            ),
            Err(e) if e.raw_os_error() == Some(nix::libc::ECONNRESET) && !reset => reset = true,
            Err(e) => panic!("{what}: expected end of stream, got {e}"),
        }
    }
}

// ---- helpers --------------------------------------------------------------

/// The permission bits of `path` (not following a symlink).
fn mode_of(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode()
        & 0o7777
}

/// Asserts a socket file of mode 0600 at `path`.
fn assert_socket_0600(path: &Path, what: &str) {
    let meta = std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{what}: {}: {e}", path.display()));
    assert!(meta.file_type().is_socket(), "{what}: not a socket");
    assert_eq!(
        meta.mode() & 0o7777,
        0o600,
        "{what}: socket mode {:o}",
        meta.mode() & 0o7777
    );
}

/// Asserts a directory of mode 0700 at `path`.
fn assert_dir_0700(path: &Path, what: &str) {
    let meta = std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{what}: {}: {e}", path.display()));
    assert!(meta.is_dir(), "{what}: not a directory");
    assert_eq!(
        meta.mode() & 0o7777,
        0o700,
        "{what}: directory mode {:o}",
        meta.mode() & 0o7777
    );
}

// ---- 1. socket file modes -------------------------------------------------

#[test]
fn path_sockets_are_0600_in_0700_directories_whatever_the_umask() {
    let _lock = common::fd_lock();
    let mut figures = Figures::new("security");
    figures.add("part", "socket_modes");
    let mut checks = 0;

    // In this process, under the harness's umask.
    let tmp = common::temp_dir();
    let path = tmp.path().join("made/here/sock");
    let listener =
        Listener::<u32, u32>::bind(&Address::from(path.clone()), config()).expect("bind");
    assert_socket_0600(&path, "listener");
    assert_dir_0700(&tmp.path().join("made"), "listener dir");
    assert_dir_0700(&tmp.path().join("made/here"), "listener dir");
    let raw_path = tmp.path().join("raw/sock");
    let raw = courier::transport::Listener::bind(&Address::from(raw_path.clone())).expect("bind");
    assert_socket_0600(&raw_path, "transport listener");
    assert_dir_0700(&tmp.path().join("raw"), "transport listener dir");
    checks += 6;
    drop((listener, raw));
    assert!(
        !tmp.path().join("made").exists() && !tmp.path().join("raw").exists(),
        "files or directories outlived their listeners"
    );
    figures.add("socket_mode", "0600").add("dir_mode", "0700");

    // In children, under umask 0 (nothing masked: the modes must be set,
    // not left to the umask) and 0777 (everything masked).
    for umask in ["0", "777"] {
        let tmp = common::temp_dir();
        let sock = tmp.path().join("a/b/sock");
        let dgram = tmp.path().join("d/sock");
        let (mut child, lines) = spawn_role(
            "bind_under_umask",
            &[
                (PATH_ENV, sock.to_str().expect("utf-8")),
                (PATH2_ENV, dgram.to_str().expect("utf-8")),
                (UMASK_ENV, umask),
            ],
            true,
        );
        wait_line(&lines, "bound", CHILD_TIMEOUT).expect("the child bound its sockets");
        assert_socket_0600(&sock, &format!("umask {umask}: listener"));
        assert_dir_0700(&tmp.path().join("a"), &format!("umask {umask}: dir a"));
        assert_dir_0700(&tmp.path().join("a/b"), &format!("umask {umask}: dir a/b"));
        assert_socket_0600(&dgram, &format!("umask {umask}: datagram socket"));
        assert_dir_0700(&tmp.path().join("d"), &format!("umask {umask}: dir d"));
        checks += 5;
        let stdin: Option<ChildStdin> = child.0.stdin.take();
        drop(stdin); // the child drops its sockets now
        let result = finish(child, &lines);
        for key in ["listener_removed", "dgram_removed", "dirs_removed"] {
            assert_eq!(result[key], "true", "umask {umask}: {key}: {result:?}");
        }
        checks += 3;
        figures
            .add(
                &format!("umask{umask}_socket_mode"),
                format!("{:04o}", 0o600),
            )
            .add(&format!("umask{umask}_dir_mode"), format!("{:04o}", 0o700))
            .add(&format!("umask{umask}_removed_on_drop"), "true");
    }
    figures.add("checks", checks);
    figures.report();
}

// ---- 2. paths that are not sockets ------------------------------------------

/// What is at a path, to compare before and after a bind attempt: file
/// type, inode, mode, size, a regular file's content, a symlink's target
/// (and what it points to), a directory's entries.
fn snapshot(path: &Path) -> String {
    let meta = std::fs::symlink_metadata(path).expect("something at the path");
    let mut s = format!(
        "{:?} ino={} mode={:o} len={}",
        meta.file_type(),
        meta.ino(),
        meta.mode(),
        meta.len()
    );
    if meta.is_file() {
        s += &format!(" content={:?}", std::fs::read(path).expect("read"));
    }
    if meta.is_dir() {
        let mut names: Vec<_> = std::fs::read_dir(path)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        s += &format!(" entries={names:?}");
    }
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(path).expect("read link");
        s += &format!(" target={}", target.display());
        if let Ok(t) = std::fs::symlink_metadata(path.parent().expect("dir").join(&target)) {
            s += &format!(" target_ino={} target_len={}", t.ino(), t.len());
        }
    }
    s
}

/// Asserts that `result` is the `NotASocket` refusal.
fn assert_not_a_socket<T>(result: std::io::Result<T>, what: &str) {
    match result {
        Err(e) => {
            assert!(
                matches!(
                    TransportError::of(&e),
                    Some(TransportError::NotASocket { .. })
                ),
                "{what}: expected NotASocket, got {e:?}"
            );
            assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists, "{what}");
        }
        Ok(_) => panic!("{what}: bound over something that is not a socket"),
    }
}

/// Asserts that `result` is the `AddressInUse` refusal.
fn assert_in_use<T>(result: std::io::Result<T>, what: &str) {
    match result {
        Err(e) => assert!(
            matches!(
                TransportError::of(&e),
                Some(TransportError::AddressInUse { .. })
            ),
            "{what}: expected AddressInUse, got {e:?}"
        ),
        Ok(_) => panic!("{what}: bound over a socket it had to leave alone"),
    }
}

/// Makes something that is not a socket at a path.
type Maker = dyn Fn(&Path);

/// A socket file nobody listens on: std binds a stream listener and, unlike
/// courier, leaves the file behind when it is dropped.
fn stale_socket(path: &Path) {
    drop(std::os::unix::net::UnixListener::bind(path).expect("std bind"));
    assert!(std::fs::symlink_metadata(path)
        .expect("stale file")
        .file_type()
        .is_socket());
}

#[test]
fn a_path_that_is_not_a_socket_is_never_removed_and_a_stale_socket_is_replaced() {
    let _lock = common::fd_lock();
    let mut figures = Figures::new("security");
    figures.add("part", "bind_path");
    let tmp = common::temp_dir();
    let dir = tmp.path();
    let precious = dir.join("precious.txt");
    std::fs::write(&precious, b"precious data").expect("write");
    let precious_dir = dir.join("precious-dir");
    std::fs::create_dir(&precious_dir).expect("mkdir");
    std::fs::write(precious_dir.join("inside"), b"inside").expect("write");
    let stale_target = dir.join("stale-target.sock");
    stale_socket(&stale_target);

    let mut checks = 0;
    let kinds: [(&str, &Maker); 7] = [
        ("regular_file", &|p| {
            std::fs::write(p, b"not a socket").expect("write")
        }),
        ("directory", &|p| {
            std::fs::create_dir(p).expect("mkdir");
            std::fs::write(p.join("keep"), b"keep").expect("write");
        }),
        ("fifo", &|p| {
            nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o644)).expect("mkfifo")
        }),
        ("symlink_to_file", &|p| {
            std::os::unix::fs::symlink("precious.txt", p).expect("symlink")
        }),
        ("symlink_to_dir", &|p| {
            std::os::unix::fs::symlink("precious-dir", p).expect("symlink")
        }),
        ("symlink_to_stale_socket", &|p| {
            std::os::unix::fs::symlink("stale-target.sock", p).expect("symlink")
        }),
        ("dangling_symlink", &|p| {
            std::os::unix::fs::symlink("nothing-here", p).expect("symlink")
        }),
    ];
    let others = || {
        (
            snapshot(&precious),
            snapshot(&precious_dir),
            snapshot(&stale_target),
        )
    };
    let others_before = others();
    for (kind, make) in kinds {
        let path = dir.join(kind);
        make(&path);
        let before = snapshot(&path);
        let addr = Address::from(path.clone());
        assert_not_a_socket(
            Listener::<u32, u32>::bind(&addr, config()),
            &format!("{kind}: courier Listener"),
        );
        assert_not_a_socket(
            courier::transport::Listener::bind(&addr),
            &format!("{kind}: transport Listener"),
        );
        assert_not_a_socket(
            DatagramSocket::bind(&addr),
            &format!("{kind}: DatagramSocket"),
        );
        assert_not_a_socket(
            courier::transport::Listener::bind_with(
                &addr,
                &BindOptions::new().replace_stale(false),
            ),
            &format!("{kind}: transport Listener, replace_stale(false)"),
        );
        assert_eq!(
            snapshot(&path),
            before,
            "{kind}: changed by the bind attempts"
        );
        assert_eq!(
            others(),
            others_before,
            "{kind}: a symlink's target changed"
        );
        checks += 5;
        figures.add(kind, "NotASocket,kept");
    }

    // A stale socket file: kept and refused when replacing is off,
    // replaced by default (as the README says).
    let stale = dir.join("stale.sock");
    stale_socket(&stale);
    let before = snapshot(&stale);
    let addr = Address::from(stale.clone());
    assert_in_use(
        courier::transport::Listener::bind_with(&addr, &BindOptions::new().replace_stale(false)),
        "stale socket, replace_stale(false)",
    );
    assert_eq!(
        snapshot(&stale),
        before,
        "a stale socket changed though not replaced"
    );
    match SeqPacketSocket::connect(&addr) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
        other => panic!("the stale socket is not stale: {other:?}"),
    }
    let listener = Listener::<u32, u32>::bind(&addr, config()).expect("bind over a stale socket");
    // Replaced: a live socket is there now (its inode number may be the
    // freed one's again, so liveness is what tells).
    assert_socket_0600(&stale, "the replacing socket");
    figures
        .add("stale_socket_no_replace", "AddressInUse,kept")
        .add("stale_socket", "replaced");

    // A live socket is never replaced, and keeps working.
    let live = snapshot(&stale);
    assert_in_use(
        Listener::<u32, u32>::bind(&addr, config()),
        "a live courier listener",
    );
    assert_in_use(
        DatagramSocket::bind(&addr),
        "a live courier listener, DGRAM",
    );
    assert_eq!(snapshot(&stale), live, "a live socket's file changed");
    // The liveness probe of the refused SEQPACKET bind is queued as a
    // connection closed at once: accepting it fails (`Closed`); then the
    // real client is served.
    let client_addr = addr.clone();
    let client = std::thread::spawn(move || {
        let ep = Endpoint::<u32, u32>::connect(&client_addr, config()).expect("connect");
        ep.send(1).expect("send");
        ep.recv_timeout(CHILD_TIMEOUT).expect("answer")
    });
    let mut probes = 0;
    let served = loop {
        match listener.accept_timeout(CHILD_TIMEOUT) {
            Ok(ep) => break ep,
            Err(ConnectError::Closed) if probes < 1 => probes += 1,
            Err(e) => panic!("the live listener after refused binds: {e:?}"),
        }
    };
    let n = served.recv_timeout(CHILD_TIMEOUT).expect("request");
    served.send(n + 1).expect("answer");
    assert_eq!(client.join().expect("client thread"), 2);
    drop(served);
    let std_live = dir.join("std-live.sock");
    let std_listener = std::os::unix::net::UnixListener::bind(&std_live).expect("std bind");
    let std_before = snapshot(&std_live);
    assert_in_use(
        Listener::<u32, u32>::bind(&Address::from(std_live.clone()), config()),
        "a live std stream listener",
    );
    assert_eq!(
        snapshot(&std_live),
        std_before,
        "the std listener's file changed"
    );
    let _conn = std::os::unix::net::UnixStream::connect(&std_live).expect("connect std");
    std_listener
        .set_nonblocking(true)
        .expect("nonblocking std listener");
    std_listener
        .accept()
        .expect("the std listener still accepts");
    figures.add("live_socket", "AddressInUse,kept,serving");
    checks += 8;

    // A listener whose file was replaced meanwhile leaves the new one.
    drop(listener);
    assert!(
        std::fs::symlink_metadata(&stale).is_err(),
        "the listener left its file"
    );
    let replaced = dir.join("replaced.sock");
    let listener =
        Listener::<u32, u32>::bind(&Address::from(replaced.clone()), config()).expect("bind");
    std::fs::remove_file(&replaced).expect("remove the socket file");
    std::fs::write(&replaced, b"someone else's").expect("write");
    drop(listener);
    assert_eq!(
        std::fs::read(&replaced).expect("the file put in its place"),
        b"someone else's",
        "a listener removed a file that was not its own"
    );
    figures.add("replaced_then_dropped", "kept");
    checks += 2;
    figures.add("checks", checks);
    figures.report();
}

// ---- 3. another uid -----------------------------------------------------------

#[test]
fn a_listener_rejects_another_uid_by_default() {
    let _lock = common::fd_lock();
    let mut figures = Figures::new("security");
    figures.add("part", "other_uid");
    if !common::is_root() {
        println!("skipped: a child can only change to uid 65534 when the tests run as root");
        figures.add("other_uid", "skipped_not_root").report();
        return;
    }
    let tmp = common::temp_dir();
    // Searchable by everyone, so that only the socket files' modes and
    // courier's check decide.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod");
    let open_path = tmp.path().join("open.sock");
    let closed_path = tmp.path().join("closed.sock");
    let (abstract_listener, abstract_addr, env) = {
        let name = courier::AbstractName::random().expect("random name");
        let env = common::hex(name.as_bytes());
        let addr = Address::from(name);
        (
            Listener::<u32, u32>::bind(&addr, config()).expect("bind abstract"),
            addr,
            env,
        )
    };
    let open_listener = Listener::<u32, u32>::bind_with(
        &Address::from(open_path.clone()),
        config(),
        &BindOptions::new().mode(0o666),
    )
    .expect("bind 0666");
    let closed_listener =
        Listener::<u32, u32>::bind(&Address::from(closed_path.clone()), config()).expect("bind");
    assert_eq!(mode_of(&open_path), 0o666);
    assert_eq!(mode_of(&closed_path), 0o600);

    let (child, lines) = spawn_role(
        "other_uid",
        &[
            (ADDR_ENV, &env),
            (PATH_ENV, open_path.to_str().expect("utf-8")),
            (PATH2_ENV, closed_path.to_str().expect("utf-8")),
        ],
        false,
    );
    let pid = child.pid();
    let refused =
        |listener: &Listener<u32, u32>, what: &str| match listener.accept_timeout(CHILD_TIMEOUT) {
            Err(ConnectError::Unauthorized { credentials }) => {
                assert_eq!(
                    (credentials.uid(), credentials.gid(), credentials.pid()),
                    (65534, 65534, pid),
                    "{what}: the credentials"
                );
            }
            other => panic!("{what}: expected Unauthorized, got {:?}", other.map(|_| ())),
        };
    refused(&abstract_listener, "raw client on the abstract name");
    refused(&abstract_listener, "courier client on the abstract name");
    refused(&open_listener, "raw client on the 0666 path");
    let result = finish(child, &lines);
    assert_eq!(result["path_0600"], "EACCES", "{result:?}");
    assert_eq!(result["abstract_endpoint"], "Closed", "{result:?}");
    for key in ["abstract_raw", "path_0666_raw"] {
        assert!(
            ["reset_unread", "closed"].contains(&result[key].as_str()),
            "{key}: {result:?}"
        );
    }
    match closed_listener.accept_timeout(Duration::from_millis(10)) {
        Err(ConnectError::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut => {}
        other => panic!(
            "the 0600 listener saw a connection: {:?}",
            other.map(|_| ())
        ),
    }
    assert_eq!(
        (abstract_listener.rejected(), abstract_listener.failed()),
        (2, 0)
    );
    assert_eq!((open_listener.rejected(), open_listener.failed()), (1, 0));

    // The listener keeps serving this uid.
    let client = std::thread::spawn(move || {
        let ep = Endpoint::<u32, u32>::connect(&abstract_addr, config()).expect("connect");
        ep.send(41).expect("send");
        ep.recv_timeout(CHILD_TIMEOUT).expect("answer")
    });
    let ep = abstract_listener
        .accept_timeout(CHILD_TIMEOUT)
        .expect("a same-uid client");
    let n = ep.recv_timeout(CHILD_TIMEOUT).expect("request");
    ep.send(n + 1).expect("answer");
    assert_eq!(client.join().expect("client thread"), 42);

    figures
        .add(
            "other_uid_abstract_raw",
            "Unauthorized,".to_owned() + &result["abstract_raw"],
        )
        .add("other_uid_abstract_endpoint", "Unauthorized,Closed")
        .add(
            "other_uid_path_0666",
            "Unauthorized,".to_owned() + &result["path_0666_raw"],
        )
        .add("other_uid_path_0600", "EACCES")
        .add(
            "rejected",
            abstract_listener.rejected() + open_listener.rejected(),
        )
        .add("same_uid_after", "served")
        .add("checks", 8);
    figures.report();
}

// ---- 4. a channel that refuses fds ----------------------------------------

/// Values with and without fds.
#[derive(Serialize, Deserialize, Debug)]
enum Msg {
    Text(String),
    Pipes(Vec<Fd<PipeReader>>),
}

/// A genuine frame of `value` as a courier sender makes it, with its fds:
/// what a raw peer then sends where the courier sender would refuse to.
fn genuine_frame(value: Msg) -> (Vec<u8>, Vec<OwnedFd>) {
    let (a, b) = SeqPacketSocket::pair().expect("socketpair");
    let tx = Sender::<Msg>::from_socket(a, Config::new());
    tx.send(value).expect("encode");
    let mut buf = vec![0; 1 << 17];
    let mut fds = Vec::new();
    let got = b
        .recv_with_fds(&mut buf, &mut fds, courier::transport::MAX_FDS)
        .expect("recv the frame");
    buf.truncate(got.len);
    (buf, fds)
}

/// The hello a courier end with `config` sends (captured from a handshake
/// with a courier end), for a raw peer that passes the handshake.
fn genuine_hello(config: Config) -> Vec<u8> {
    let (a, b) = SeqPacketSocket::pair().expect("socketpair");
    let ours = std::thread::spawn(move || Endpoint::<Msg, Msg>::handshake(a, config).map(drop));
    let mut buf = [0; 512];
    let n = b.recv_timeout(&mut buf, CHILD_TIMEOUT).expect("a hello");
    b.send(&buf[..n]).expect("echo the hello");
    ours.join().expect("thread").expect("handshake");
    buf[..n].to_vec()
}

/// Sends `frame` with `fds` on `sock`, bounded.
fn send_raw<K: courier::transport::Kind>(
    sock: &courier::transport::Socket<K>,
    frame: &[u8],
    fds: &[BorrowedFd<'_>],
) -> std::io::Result<usize> {
    let bufs = [IoSlice::new(frame)];
    sock.send_msg(
        &SendMsg::new(&bufs).with_fds(fds),
        Wait::timeout(CHILD_TIMEOUT),
    )
}

/// A pipe whose read end goes in a frame (`copies` fds of it) and whose
/// write end tells whether any reader is left.
struct Probe {
    frame: Vec<u8>,
    fds: Vec<OwnedFd>,
    writer: std::io::PipeWriter,
}

impl Probe {
    fn new(copies: usize) -> Probe {
        let (r, writer) = std::io::pipe().expect("pipe");
        let readers = (0..copies)
            .map(|_| Fd::new(r.try_clone().expect("dup")))
            .collect();
        drop(r);
        let (frame, fds) = genuine_frame(Msg::Pipes(readers));
        assert_eq!(fds.len(), copies);
        Probe { frame, fds, writer }
    }

    fn borrowed(&self) -> Vec<BorrowedFd<'_>> {
        self.fds.iter().map(AsFd::as_fd).collect()
    }

    /// Sends the frame with its fds, then closes our copies: the fds in
    /// flight are the pipe's only readers.
    fn send<K: courier::transport::Kind>(
        mut self,
        sock: &courier::transport::Socket<K>,
    ) -> (std::io::Result<usize>, std::io::PipeWriter) {
        let sent = send_raw(sock, &self.frame, &self.borrowed());
        self.fds.clear();
        (sent, self.writer)
    }
}

/// Asserts that no reader of the pipe is left anywhere: `POLLERR` at the
/// write end and `EPIPE` on a write.
fn assert_no_reader(mut writer: std::io::PipeWriter, what: &str) {
    let mut fds = [PollFd::new(writer.as_fd(), PollFlags::POLLOUT)];
    nix::poll::poll(&mut fds, PollTimeout::ZERO).expect("poll");
    let revents = fds[0].revents().expect("revents");
    assert!(
        revents.contains(PollFlags::POLLERR),
        "{what}: a reader of the pipe is still open somewhere ({revents:?})"
    );
    // Rust ignores SIGPIPE in its programs: the write fails instead.
    match writer.write(b"x") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => panic!("{what}: expected EPIPE, got {other:?}"),
    }
}

/// Whether this kernel has `SO_PASSRIGHTS` (Linux 6.16+).
fn kernel_refuses_fds() -> bool {
    let (a, _b) = SeqPacketSocket::pair().expect("socketpair");
    a.set_pass_rights(false).expect("SO_PASSRIGHTS")
}

/// The next receive must be `FdsNotAccepted`.
fn expect_not_accepted(result: Result<Msg, RecvTimeoutError>, what: &str) {
    match result {
        Err(RecvTimeoutError::Failed(ChannelError::FdsNotAccepted)) => {}
        other => panic!("{what}: expected FdsNotAccepted, got {other:?}"),
    }
}

/// The fds of this process that are not in `baseline`.
fn new_fds(baseline: &BTreeMap<i32, PathBuf>) -> Vec<(i32, PathBuf)> {
    common::fd_table()
        .into_iter()
        .filter(|(fd, _)| !baseline.contains_key(fd))
        .collect()
}

/// What one refusing receiver's case saw.
struct Refusal {
    typed: u64,
    closed: usize,
    later: &'static str,
}

/// Queues frames with 1 and 253 fds on `raw`, then makes the receiver that
/// refuses fds from `sock` (with `make`), sends one more frame with an fd
/// and one without, and checks what each gives (see the module docs).
fn refusing_receiver<K: courier::transport::Kind>(
    kind: &str,
    raw: &courier::transport::Socket<K>,
    sock: courier::transport::Socket<K>,
    make: fn(courier::transport::Socket<K>, Config) -> Receiver<Msg>,
    text: &[u8],
    kernel_refuses: bool,
) -> Refusal {
    let (s1, w1) = Probe::new(1).send(raw);
    let (s2, w2) = Probe::new(courier::transport::MAX_FDS).send(raw);
    s1.expect("queue a frame with one fd");
    s2.expect("queue a frame with 253 fds");
    let rx = make(sock, Config::new().accept_fds(false));
    let (s3, w3) = Probe::new(1).send(raw);
    send_raw(raw, text, &[]).expect("send a frame without fds");
    let baseline = common::fd_table();
    let mut typed = 0;
    let mut closed = 0;
    expect_not_accepted(rx.recv_timeout(CHILD_TIMEOUT), &format!("{kind}: one fd"));
    expect_not_accepted(rx.recv_timeout(CHILD_TIMEOUT), &format!("{kind}: 253 fds"));
    typed += 2;
    assert_eq!(
        new_fds(&baseline),
        vec![],
        "{kind}: refused fds stayed open"
    );
    assert_no_reader(w1, &format!("{kind}: one fd"));
    assert_no_reader(w2, &format!("{kind}: 253 fds"));
    closed += 1 + courier::transport::MAX_FDS;
    // Sent after the receiver refused fds: the kernel refuses them.
    let later = match s3 {
        Err(e) if e.raw_os_error() == Some(nix::libc::EPERM) => {
            assert!(kernel_refuses, "{kind}: EPERM without SO_PASSRIGHTS");
            "EPERM"
        }
        Ok(_) => {
            assert!(
                !kernel_refuses,
                "{kind}: the kernel has SO_PASSRIGHTS, yet took fds for an end refusing them"
            );
            expect_not_accepted(rx.recv_timeout(CHILD_TIMEOUT), &format!("{kind}: later"));
            typed += 1;
            closed += 1;
            "FdsNotAccepted"
        }
        Err(e) => panic!("{kind}: unexpected send error {e}"),
    };
    assert_no_reader(w3, &format!("{kind}: the frame sent later"));
    match rx.recv_timeout(CHILD_TIMEOUT) {
        Ok(Msg::Text(t)) => assert_eq!(t, "no fds here"),
        other => panic!("{kind}: the frame without fds: {other:?}"),
    }
    assert_eq!(new_fds(&baseline), vec![], "{kind}: fds left open");
    Refusal {
        typed,
        closed,
        later,
    }
}

#[test]
fn a_channel_refusing_fds_rejects_frames_carrying_them_and_closes_them() {
    let _lock = common::fd_lock();
    let mut figures = Figures::new("security");
    figures.add("part", "accept_fds_false");
    let refuse = Config::new().accept_fds(false);
    let kernel_refuses = kernel_refuses_fds();
    let (text, _) = genuine_frame(Msg::Text("no fds here".into()));
    let mut closed = 0;
    let mut typed = 0;

    // SEQPACKET and DGRAM receivers, frames queued before they refuse fds
    // (one fd, and the most a frame carries).
    for kind in ["seqpacket", "datagram"] {
        let case = if kind == "seqpacket" {
            let (raw, sock) = SeqPacketSocket::pair().expect("socketpair");
            refusing_receiver(
                kind,
                &raw,
                sock,
                Receiver::from_socket,
                &text,
                kernel_refuses,
            )
        } else {
            let (raw, sock) = DatagramSocket::pair().expect("socketpair");
            refusing_receiver(
                kind,
                &raw,
                sock,
                Receiver::from_datagram_socket,
                &text,
                kernel_refuses,
            )
        };
        typed += case.typed;
        closed += case.closed;
        figures
            .add(&format!("{kind}_queued_before"), "FdsNotAccepted,closed")
            .add(&format!("{kind}_sent_after"), case.later)
            .add(&format!("{kind}_without_fds"), "received");
    }

    // An endpoint accepted by a listener that refuses fds: frames queued
    // with the handshake, before the accept.
    let listener =
        Listener::<Msg, Msg>::bind_random(config().accept_fds(false)).expect("bind listener");
    let addr = listener.local_addr().expect("local_addr");
    let hello = genuine_hello(config());
    let raw = SeqPacketSocket::connect(&addr).expect("connect");
    send_raw(&raw, &hello, &[]).expect("send hello");
    let (s1, w1) = Probe::new(3).send(&raw);
    s1.expect("queue a frame with fds before the accept");
    let baseline = common::fd_table();
    let ep = listener.accept_timeout(CHILD_TIMEOUT).expect("accept");
    let mut their_hello = [0; 512];
    raw.recv_timeout(&mut their_hello, CHILD_TIMEOUT)
        .expect("the listener's hello");
    expect_not_accepted(ep.recv_timeout(CHILD_TIMEOUT), "listener: queued fds");
    typed += 1;
    closed += 3;
    assert_no_reader(w1, "listener: queued fds");
    let (s2, w2) = Probe::new(1).send(&raw);
    let later = match s2 {
        Err(e) if e.raw_os_error() == Some(nix::libc::EPERM) => "EPERM",
        Ok(_) => {
            assert!(!kernel_refuses, "listener: fds taken despite SO_PASSRIGHTS");
            expect_not_accepted(ep.recv_timeout(CHILD_TIMEOUT), "listener: later");
            typed += 1;
            "FdsNotAccepted"
        }
        Err(e) => panic!("listener: unexpected send error {e}"),
    };
    assert_no_reader(w2, "listener: the frame sent later");
    send_raw(&raw, &text, &[]).expect("send text");
    match ep.recv_timeout(CHILD_TIMEOUT) {
        Ok(Msg::Text(t)) => assert_eq!(t, "no fds here"),
        other => panic!("listener: the frame without fds: {other:?}"),
    }
    let mut left = new_fds(&baseline);
    // The accepted connection is the one new fd the endpoint holds.
    left.retain(|(fd, _)| *fd != ep.as_fd().as_raw_fd());
    assert_eq!(left, vec![], "listener: fds left open");
    figures
        .add("listener_queued_before", "FdsNotAccepted,closed")
        .add("listener_sent_after", later);

    // A courier sender refuses such a value up front and hands it back.
    let (tx, rx) = refuse.channel::<Msg>().expect("channel");
    let (r, _w) = std::io::pipe().expect("pipe");
    let raw_fd = r.as_raw_fd();
    match tx.send(Msg::Pipes(vec![Fd::new(r)])) {
        Err(SendError::Failed(Msg::Pipes(v), ChannelError::FdsRefused { count: 1 })) => {
            assert_eq!(v[0].as_raw_fd(), raw_fd, "another fd came back");
        }
        other => panic!("sender check: expected Failed(FdsRefused), got {other:?}"),
    }
    assert!(matches!(
        rx.recv_timeout(Duration::from_millis(10)),
        Err(RecvTimeoutError::Timeout)
    ));
    typed += 1;
    figures
        .add("sender_check", "FdsRefused,value_back")
        .add("kernel_so_passrights", kernel_refuses)
        .add("typed_errors", typed)
        .add("fds_closed_on_arrival", closed)
        .add("leaks", 0);
    figures.report();
}

// ---- 5. allocation bounded by the limit -------------------------------------

/// The receiver's limit in the memory test.
const LIMIT: usize = 1 << 20;
/// How much the receiving child's peak resident memory may grow over the
/// whole memory test: a few times the limit (a value at the limit is
/// decoded once into the receiver's own memory while the bytes it was
/// decoded from are still mapped), nowhere near what the frames claim.
const MEMORY_BOUND_KIB: u64 = 12 << 10;

/// What the memory test sends the receiving child.
#[derive(Serialize, Deserialize, Debug)]
enum Hostile {
    /// Tag 0.
    Data {
        blob: Bytes,
        words: Vec<u64>,
        text: String,
    },
    /// Tag 1: the child notes its peak memory under this name.
    Mark(String),
    /// Tag 2: the read end of a pipe to receive frames from next.
    Pipe(Fd<PipeReader>),
}

/// postcard's varint of `v`.
fn varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// The start of a `Hostile::Data` body: the tag and the blob's length.
fn data_prefix(blob_len: u64) -> Vec<u8> {
    let mut body = vec![0];
    varint(blob_len, &mut body);
    body
}

/// A frame header: kind (0 inline, 1 memfd, 2 ring), flags byte, fd count
/// and body length.
fn header(kind: u8, flags: u8, fd_count: u16, body_len: u64) -> Vec<u8> {
    let mut h = vec![b'C', b'R', WIRE_VERSION, kind];
    h.extend_from_slice(&fd_count.to_le_bytes());
    h.extend_from_slice(&[flags, 0]);
    h.extend_from_slice(&body_len.to_le_bytes());
    assert_eq!(h.len(), HEADER_LEN);
    h
}

/// A ring frame: the header, then the ring's id, the body's start and no
/// ring to retire.
fn ring_frame(attached: bool, body_len: u64, id: u64, start: u64) -> Vec<u8> {
    let mut f = header(2, u8::from(attached), 0, body_len);
    for field in [id, start, 0] {
        f.extend_from_slice(&field.to_le_bytes());
    }
    f
}

/// A sparse memfd of `len` bytes starting with `content`, with `seals`.
fn memfd(len: u64, content: &[u8], seals: SealFlag) -> File {
    let fd = memfd_create(
        c"courier-security-test",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )
    .expect("memfd_create");
    let file = File::from(fd);
    file.set_len(len).expect("size the memfd");
    file.write_all_at(content, 0).expect("write the memfd");
    if !seals.is_empty() {
        fcntl(&file, FcntlArg::F_ADD_SEALS(seals)).expect("F_ADD_SEALS");
    }
    file
}

/// The seals of a courier body memfd.
fn body_seals() -> SealFlag {
    SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_SEAL
}

/// The control page before a ring's data.
const RING_CONTROL: u64 = 4096;

/// A ring memfd of `capacity` data bytes named `id`, sealed as a courier
/// sender seals one.
fn ring(capacity: u64, id: u64) -> File {
    memfd(
        RING_CONTROL + capacity,
        &id.to_le_bytes(),
        SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW,
    )
}

/// The short name of a receive error, for the child's report.
fn error_name(e: &RecvTimeoutError) -> String {
    let ident = |s: String| s.chars().take_while(|c| c.is_alphanumeric()).collect();
    match e {
        RecvTimeoutError::Failed(ChannelError::Frame(f)) => ident(format!("{f:?}")),
        RecvTimeoutError::Failed(ChannelError::Io(io)) => format!("Io{:?}", io.kind()),
        RecvTimeoutError::Failed(other) => ident(format!("{other:?}")),
        other => ident(format!("{other:?}")),
    }
}

/// The receiving child of the memory test: receives until `Mark("done")`,
/// noting every typed error and its peak memory at each mark.
fn memory_receiver() {
    let pid = std::process::id();
    let hwm = || status_kib(pid, "VmHWM").expect("VmHWM");
    let start = hwm();
    let rx =
        Receiver::<Hostile>::from_socket(common::connect_to_parent(), Config::new().limit(LIMIT));
    let mut errors = Vec::new();
    let mut pipe_errors = Vec::new();
    let mut values = 0;
    let mut marks = vec![format!("hwm_start={start}")];
    loop {
        match rx.recv_timeout(CHILD_TIMEOUT) {
            Ok(Hostile::Data { blob, .. }) => {
                values += 1;
                assert!(blob.len() <= LIMIT);
            }
            Ok(Hostile::Mark(name)) => {
                marks.push(format!("hwm_{name}={}", hwm()));
                if name == "done" {
                    break;
                }
            }
            Ok(Hostile::Pipe(reader)) => {
                let (_unused, writer) = std::io::pipe().expect("pipe");
                let transport =
                    PipeTransport::new(reader.into_inner(), writer).expect("pipe transport");
                let piped = Receiver::<Hostile>::with_transport(
                    Box::new(transport),
                    Config::new().limit(LIMIT),
                );
                loop {
                    match piped.recv_timeout(CHILD_TIMEOUT) {
                        Ok(Hostile::Data { blob, .. }) => {
                            values += 1;
                            assert!(blob.len() <= LIMIT);
                        }
                        Ok(Hostile::Mark(name)) => marks.push(format!("hwm_{name}={}", hwm())),
                        Ok(Hostile::Pipe(_)) => panic!("a pipe over a pipe"),
                        Err(RecvTimeoutError::Disconnected) => break,
                        Err(e @ RecvTimeoutError::Failed(_)) => pipe_errors.push(error_name(&e)),
                        Err(e) => panic!("pipe: {e:?}"),
                    }
                }
            }
            Err(e @ RecvTimeoutError::Failed(_)) => errors.push(error_name(&e)),
            Err(e) => panic!("socket: {e:?}"),
        }
    }
    say(&format!(
        "result: values={values} errors={} pipe_errors={} {}",
        errors.join(","),
        pipe_errors.join(","),
        marks.join(" ")
    ));
}

#[test]
fn no_peer_makes_the_receiver_allocate_beyond_its_limit() {
    let _lock = common::fd_lock();
    let (listener, _, env) = common::abstract_listener();
    let (child, lines) = spawn_role("memory_receiver", &[(ADDR_ENV, &env)], false);
    let raw = listener
        .accept_timeout(CHILD_TIMEOUT)
        .expect("the child connects");
    let typed = Sender::<Hostile>::from_socket(raw.try_clone().expect("dup"), Config::new());
    let limit = LIMIT as u64;
    let mut expected: Vec<&str> = Vec::new();
    let mut values = 0;
    let data = |blob: usize| Hostile::Data {
        blob: Bytes::from(vec![7; blob]),
        words: vec![1, 2, 3],
        text: "honest".into(),
    };
    let mark = |name: &str| typed.send(Hostile::Mark(name.into())).expect("send a mark");
    let hostile = |frame: &[u8], fds: &[BorrowedFd<'_>]| {
        send_raw(&raw, frame, fds).expect("send a hostile frame");
    };

    // Honest values first: a large one (through the ring) and a small one.
    typed.send(data(900 << 10)).expect("send");
    typed.send(data(10)).expect("send");
    values += 2;
    mark("honest");

    // Inline frames.
    hostile(&header(0, 0, 0, 1 << 40), &[]);
    expected.push("TooLarge"); // claims 1 TiB
    hostile(&header(0, 0, 0, u64::MAX), &[]);
    expected.push("TooLarge");
    let mut f = header(0, 0, 0, limit);
    f.extend_from_slice(&[0; 100]);
    hostile(&f, &[]);
    expected.push("BodyLengthMismatch"); // claims the limit, carries 100 bytes
    let mut f = header(0, 0, 0, 200 << 10);
    f.resize(HEADER_LEN + (200 << 10), 0);
    hostile(&f, &[]);
    expected.push("TooLong"); // longer than any inline frame
    for body in [
        data_prefix(1 << 40), // a 1 TiB blob
        [data_prefix(0), {
            let mut w = Vec::new();
            varint(1 << 60, &mut w); // 2^60 words
            w
        }]
        .concat(),
        [data_prefix(0), vec![0], {
            let mut t = Vec::new();
            varint(1 << 33, &mut t); // an 8 GiB string
            t
        }]
        .concat(),
    ] {
        let mut f = header(0, 0, 0, body.len() as u64);
        f.extend_from_slice(&body);
        hostile(&f, &[]);
        expected.push("Decode");
    }

    // Bodies in memfds of 1 GiB (sparse).
    const GIB: u64 = 1 << 30;
    let sealed = memfd(GIB, &[], body_seals());
    hostile(&header(1, 0, 0, GIB), &[sealed.as_fd()]);
    expected.push("TooLarge");
    hostile(&header(1, 0, 0, limit), &[sealed.as_fd()]);
    expected.push("TrailingBytes"); // the limit's worth of zeros: an empty value, then bytes
    let small = memfd(4096, &[], body_seals());
    hostile(&header(1, 0, 0, 1 << 63), &[small.as_fd()]);
    expected.push("TooLarge");
    let unsealed = memfd(GIB, &[], SealFlag::empty());
    hostile(&header(1, 0, 0, limit), &[unsealed.as_fd()]);
    expected.push("BadSharedMemory");
    // A value just under the limit in a 1 GiB memfd: honest, it arrives.
    let blob = LIMIT - 64;
    let body_len = data_prefix(blob as u64).len() + blob + 2; // + no words, no text
    let at_limit = memfd(GIB, &data_prefix(blob as u64), body_seals());
    hostile(&header(1, 0, 0, body_len as u64), &[at_limit.as_fd()]);
    values += 1;

    // Rings: one of 1 GiB, one of the largest size accepted (64 MiB). A
    // ring frame carries the ring's fd until the receiver acknowledges the
    // ring; these carry it every time, as a sender whose ring the receiver
    // maps for one frame at a time must.
    let id = 0x5ec0_0000_0000_0000 | u64::from(std::process::id());
    let huge = ring(GIB, id);
    hostile(&ring_frame(true, 100, id, 0), &[huge.as_fd()]);
    expected.push("BadSharedMemory"); // ring size out of bounds
    let capacity = 64 << 20;
    let big = ring(capacity, id + 1);
    let in_big = |len: u64, start: u64| (ring_frame(true, len, id + 1, start), big.as_fd());
    let (f, fd) = in_big(capacity - 4096, 0);
    hostile(&f, &[fd]);
    expected.push("TooLarge");
    let (f, fd) = in_big(limit, 0);
    hostile(&f, &[fd]);
    expected.push("TrailingBytes"); // zeros: an empty value, then bytes
    let (f, fd) = in_big(limit, capacity - 10);
    hostile(&f, &[fd]);
    expected.push("BadSharedMemory"); // body outside the ring
    let words = [data_prefix(0), {
        let mut w = Vec::new();
        varint(1 << 60, &mut w);
        w
    }]
    .concat();
    big.write_all_at(&words, RING_CONTROL + limit)
        .expect("write the ring");
    let (f, fd) = in_big(words.len() as u64, limit);
    hostile(&f, &[fd]);
    expected.push("Decode");
    // Then the sparse ring walked by values within the limit: each one
    // only its 4-byte prefix written by the sender, the rest holes that
    // the receiver's reads fault in. A receiver that kept this ring mapped
    // would end up with the whole ring resident, 32 times its limit.
    for k in 2..34 {
        big.write_all_at(&data_prefix(blob as u64), RING_CONTROL + k * limit)
            .expect("write the ring");
        let (f, fd) = in_big(body_len as u64, k * limit);
        hostile(&f, &[fd]);
        values += 1;
    }
    mark("hostile");

    // A typed sender that does not know the limit (no handshake): its value
    // above the limit is refused by the receiver; one at the limit arrives.
    typed.send(data(LIMIT + 1)).expect("send above the limit");
    expected.push("TooLarge");
    typed.send(data(LIMIT - 64)).expect("send at the limit");
    values += 1;
    mark("limit");

    // Over a pipe: a 3 MiB frame that really arrives, an honest value, then
    // a 4 GiB claim and the end of the stream.
    let (reader, mut writer) = std::io::pipe().expect("pipe");
    typed
        .send(Hostile::Pipe(Fd::new(reader)))
        .expect("send the pipe");
    let mut pipe_expected = Vec::new();
    writer
        .write_all(&(3u32 << 20).to_le_bytes())
        .expect("write a prefix");
    writer.write_all(&vec![0xAB; 3 << 20]).expect("write 3 MiB");
    pipe_expected.push("TooLong");
    {
        let (unused, _) = std::io::pipe().expect("pipe");
        let piped = Sender::<Hostile>::with_transport(
            Box::new(PipeTransport::new(unused, writer.try_clone().expect("dup")).expect("pipe")),
            Config::new(),
        );
        piped.send(data(LIMIT - 64)).expect("send over the pipe");
        piped.send(Hostile::Mark("pipe".into())).expect("mark");
        values += 1;
        // Dropping it releases its copy of the write end.
    }
    writer
        .write_all(&u32::MAX.to_le_bytes())
        .expect("write a 4 GiB prefix");
    drop(writer);
    pipe_expected.push("TooLong");
    pipe_expected.push("IoUnexpectedEof");
    mark("done");

    let result = finish(child, &lines);
    drop((typed, raw, listener));
    assert_eq!(
        result["values"],
        values.to_string(),
        "honest values: {result:?}"
    );
    assert_eq!(
        result["errors"],
        expected.join(","),
        "typed errors of the hostile socket frames"
    );
    assert_eq!(
        result["pipe_errors"],
        pipe_expected.join(","),
        "typed errors of the hostile pipe frames"
    );
    let kib = |key: &str| -> u64 { result[key].parse().unwrap_or_else(|_| panic!("{key}")) };
    let start = kib("hwm_start");
    let done = kib("hwm_done");
    let growth = done - start;
    assert!(
        growth <= MEMORY_BOUND_KIB,
        "the receiver's peak memory grew by {growth} KiB (bound {MEMORY_BOUND_KIB} KiB); \
         marks: {result:?}"
    );
    let mut figures = Figures::new("security");
    figures
        .add("part", "memory")
        .add("limit_bytes", LIMIT)
        .add("hostile_frames", expected.len() + pipe_expected.len())
        .add("typed_errors", expected.len() + pipe_expected.len())
        .add("honest_values", values)
        .add("largest_claim", "2^64-1_bytes")
        .add("hwm_start_kib", start);
    for mark in ["honest", "hostile", "limit", "pipe", "done"] {
        figures.add(&format!("hwm_{mark}_kib"), kib(&format!("hwm_{mark}")));
    }
    figures
        .add("hwm_growth_kib", growth)
        .add("bound_kib", MEMORY_BOUND_KIB);
    figures.report();
}
