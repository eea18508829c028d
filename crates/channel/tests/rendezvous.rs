//! Rendezvous across real processes: a typed `Listener` on a path (in
//! directories it creates 0700, even under a umask of 0, and removes again)
//! or on an abstract name, serving client processes that `Endpoint::connect`;
//! the peer's credentials and pidfd on the serving side; authorization
//! (`Authorize`) on both sides, refusing before anything is read; and a
//! listener that keeps serving whatever its peers do.
//!
//! Every process besides the test's own is this test binary re-executed in
//! a named role (see `role_entry`).

#[path = "../../transport/tests/common/mod.rs"]
mod common;

use std::collections::{BTreeSet, HashSet};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use common::{Guard, ADDR_ENV, CHILD_TIMEOUT};
use courier_channel::{Authorize, Config, ConnectError, Endpoint, Listener, Receiver, Sender};
use courier_transport::{AbstractName, Address, DatagramSocket, SeqPacketSocket};
use serde::{Deserialize, Serialize};

/// The environment variable carrying a path socket's path for a child.
const PATH_ENV: &str = "COURIER_TEST_PATH";
/// The environment variable carrying a control listener's abstract name
/// (hex) for a child that talks to the parent on the side.
const CTL_ENV: &str = "COURIER_TEST_CTL";
/// The environment variable naming what a mixed peer does.
const KIND_ENV: &str = "COURIER_TEST_KIND";
/// The environment variable carrying the umask (octal) the path server
/// binds under.
const UMASK_ENV: &str = "COURIER_TEST_UMASK";

/// What the raw client of `a_refused_client_is_closed_unread...` sends and
/// the refusing listener must leave unread.
const PENDING: &[u8] = b"pending data the listener must not read";

/// The protocol every well-behaved peer here speaks.
fn config() -> Config {
    Config::new().protocol("rendezvous-test", 1)
}

/// A client's request: its own pid (as it believes it) and some text.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Ask {
    pid: u32,
    text: String,
}

/// The server's answer: the client's pid as `SO_PEERCRED` has it.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Answer {
    peer_pid: i32,
    text: String,
}

/// What the path-server child tells the parent on its control connection.
#[derive(Serialize, Deserialize, Debug)]
enum Report {
    /// The listener is bound; the parent may look at the files and start
    /// the clients.
    Bound,
    /// Every client was served (their pids), and the listener is dropped.
    Done { peers: Vec<i32> },
}

const ROLES: &[(&str, fn())] = &[
    ("client", client),
    ("path_server", path_server),
    ("raw_pending", raw_pending),
    ("other_user", other_user),
    ("distrustful", distrustful),
    ("mixed_peer", mixed_peer),
];

#[test]
#[ignore = "child role: run by the other tests of this file"]
fn role_entry() {
    common::run_role(ROLES)
}

// ---------------------------------------------------------------- helpers

/// Starts role `name` with `env` set.
fn spawn_role(name: &str, env: &[(&str, &str)]) -> Guard {
    let mut cmd = common::role(name);
    for (key, value) in env {
        cmd.env(key, value);
    }
    Guard::spawn(cmd)
}

/// A fresh random abstract name, as an address and in the form
/// [`ADDR_ENV`] carries.
fn abstract_addr() -> (Address, String) {
    let name = AbstractName::random().expect("random abstract name");
    let env = common::hex(name.as_bytes());
    (Address::from(name), env)
}

/// In a child: the abstract name in `var`.
fn addr_from_env(var: &str) -> Address {
    let hex = std::env::var(var).unwrap_or_else(|_| panic!("{var} not set"));
    Address::from(AbstractName::new(common::unhex(&hex)).expect("abstract name"))
}

/// In a child: the address to connect to, the path in [`PATH_ENV`] if
/// set, else the abstract name in [`ADDR_ENV`].
fn target_addr() -> Address {
    match std::env::var_os(PATH_ENV) {
        Some(path) => Address::from(PathBuf::from(path)),
        None => addr_from_env(ADDR_ENV),
    }
}

/// Whether anything (even a dangling symlink) is at `path`.
fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// Asserts that `dir` is a directory of this user with mode exactly `mode`.
fn assert_dir(dir: &Path, mode: u32) {
    let meta = std::fs::symlink_metadata(dir)
        .unwrap_or_else(|e| panic!("{} should exist: {e}", dir.display()));
    assert!(meta.is_dir(), "{} is not a directory", dir.display());
    assert_eq!(
        meta.mode() & 0o7777,
        mode,
        "{} has mode {:o}, expected {mode:o}",
        dir.display(),
        meta.mode() & 0o7777
    );
    assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());
}

/// Asserts that `path` is a socket file with mode exactly 0600.
fn assert_socket_file(path: &Path) {
    let meta = std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("socket file {} should exist: {e}", path.display()));
    assert!(
        meta.file_type().is_socket(),
        "{} is not a socket",
        path.display()
    );
    assert_eq!(
        meta.mode() & 0o7777,
        0o600,
        "socket file {} has mode {:o}",
        path.display(),
        meta.mode() & 0o7777
    );
}

/// One request and its answer, on the serving side: checks that the pid
/// the client claims is the one `SO_PEERCRED` gives, and returns it.
fn serve_one(ep: &Endpoint<Answer, Ask>) -> i32 {
    let cred = ep.peer_cred().expect("peer_cred");
    let ask = ep
        .recv_timeout(CHILD_TIMEOUT)
        .expect("the client's request");
    assert_eq!(
        i64::from(ask.pid),
        i64::from(cred.pid()),
        "the client says it is pid {} but SO_PEERCRED says {}",
        ask.pid,
        cred.pid()
    );
    ep.send(Answer {
        peer_pid: cred.pid(),
        text: format!("hello, {}", ask.text),
    })
    .expect("send the answer");
    cred.pid()
}

/// One request and its answer, on the client side.
fn ask(ep: &Endpoint<Ask, Answer>) {
    let pid = std::process::id();
    let text = format!("hi from {pid}");
    ep.send(Ask {
        pid,
        text: text.clone(),
    })
    .expect("send the request");
    let answer = ep.recv_timeout(CHILD_TIMEOUT).expect("the answer");
    assert_eq!(
        answer,
        Answer {
            peer_pid: pid as i32,
            text: format!("hello, {text}"),
        }
    );
}

/// On a raw socket whose peer closed it: reads until end of stream
/// (bounded), allowing one courier hello before it.
fn expect_closed(sock: &SeqPacketSocket) {
    let mut buf = [0; 512];
    for _ in 0..3 {
        match sock.recv_timeout(&mut buf, CHILD_TIMEOUT) {
            Ok(0) => return,
            Ok(n) => assert!(
                buf[..n].starts_with(b"CRHS"),
                "expected a hello or end of stream, got {:?}",
                &buf[..n]
            ),
            Err(e) if e.raw_os_error() == Some(nix::libc::ECONNRESET) => {}
            Err(e) => panic!("expected end of stream, got {e}"),
        }
    }
    panic!("no end of stream after three frames");
}

// ------------------------------------------------------------------ roles

/// Connects with `Endpoint::connect` to [`target_addr`], asks and checks
/// the answer.
/// When the server is the parent (an abstract name), also checks what the
/// client learns about it: its credentials and a live pidfd.
fn client() {
    let ep = Endpoint::<Ask, Answer>::connect(&target_addr(), config()).expect("connect");
    let server = ep.peer_cred().expect("peer_cred");
    assert_eq!(server.uid(), nix::unistd::geteuid().as_raw());
    if std::env::var_os(PATH_ENV).is_none() {
        assert_eq!(server.pid() as u32, std::os::unix::process::parent_id());
        if let Some(pidfd) = ep.peer_pidfd().expect("peer_pidfd") {
            assert!(
                !pidfd.has_exited().expect("poll pidfd"),
                "the server is alive"
            );
        }
    }
    let hello = ep.peer().expect("the server's hello");
    assert_eq!(
        (hello.protocol.as_str(), hello.version),
        ("rendezvous-test", 1)
    );
    ask(&ep);
}

/// Under the umask in [`UMASK_ENV`], binds a `Listener` at the path in [`PATH_ENV`],
/// tells the parent (control connection at [`ADDR_ENV`]), serves three
/// clients, drops the listener and reports the pids served.
fn path_server() {
    let umask = std::env::var(UMASK_ENV).expect("umask in environment");
    let umask = u32::from_str_radix(&umask, 8).expect("octal umask");
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(umask));
    let path = PathBuf::from(std::env::var_os(PATH_ENV).expect("path in environment"));
    let report = Sender::<Report>::from_socket(common::connect_to_parent(), Config::new());
    let listener = Listener::<Answer, Ask>::bind(&Address::from(path), config()).expect("bind");
    report.send(Report::Bound).expect("report bound");
    let mut peers = Vec::new();
    for _ in 0..3 {
        let ep = listener.accept_timeout(CHILD_TIMEOUT).expect("accept");
        peers.push(serve_one(&ep));
    }
    assert_eq!((listener.rejected(), listener.failed()), (0, 0));
    drop(listener);
    report.send(Report::Done { peers }).expect("report done");
}

/// Connects with the raw transport, sends [`PENDING`], tells the parent
/// (control listener at [`CTL_ENV`]), and expects to be closed with that
/// message unread: `ECONNRESET` first (the kernel's sign that the closer
/// had unread data), then end of stream, and no hello in between.
fn raw_pending() {
    let sock = SeqPacketSocket::connect(&addr_from_env(ADDR_ENV)).expect("raw connect");
    sock.send(PENDING).expect("send the pending message");
    let ctl = SeqPacketSocket::connect(&addr_from_env(CTL_ENV)).expect("connect control");
    ctl.send(b"sent").expect("tell the parent");
    let mut buf = [0; 512];
    match sock.recv_timeout(&mut buf, CHILD_TIMEOUT) {
        Err(e) if e.raw_os_error() == Some(nix::libc::ECONNRESET) => {}
        Ok(0) => panic!(
            "plain end of stream: the listener closed the connection after reading \
             the pending message (no ECONNRESET)"
        ),
        Ok(n) => panic!(
            "the refusing listener sent a {n}-byte frame: {:?}",
            &buf[..n]
        ),
        Err(e) => panic!("expected ECONNRESET, got {e}"),
    }
    match sock.recv_timeout(&mut buf, CHILD_TIMEOUT) {
        Ok(0) => {}
        other => panic!("expected end of stream after ECONNRESET, got {other:?}"),
    }
}

/// Drops to uid/gid 65534, then connects to the parent's default listener
/// (same user only): trusting the listener, it is closed unread
/// (`Closed`); with the default check of its own, it refuses the listener
/// (root's) itself.
fn other_user() {
    use nix::unistd::{setgid, setgroups, setuid, Gid, Uid};
    setgroups(&[]).expect("setgroups");
    setgid(Gid::from_raw(65534)).expect("setgid");
    setuid(Uid::from_raw(65534)).expect("setuid");
    assert_eq!(nix::unistd::geteuid().as_raw(), 65534);
    let addr = addr_from_env(ADDR_ENV);
    match Endpoint::<Ask, Answer>::connect_with(&addr, config(), &Authorize::anyone()) {
        Err(ConnectError::Closed) => {}
        Ok(_) => panic!("a listener of another user accepted this process"),
        Err(e) => panic!("expected Closed from a refusing listener, got {e:?}"),
    }
    match Endpoint::<Ask, Answer>::connect(&addr, config()) {
        Err(ConnectError::Unauthorized { credentials }) => {
            assert_eq!(credentials.uid(), 0, "the listener runs as root");
            assert_eq!(
                credentials.pid() as u32,
                std::os::unix::process::parent_id()
            );
        }
        other => panic!("expected Unauthorized (root's listener), got {other:?}"),
    }
}

/// Connects with `Authorize::custom(|_| false)`: refuses the listener.
fn distrustful() {
    let deny = Authorize::custom(|_| false);
    match Endpoint::<Ask, Answer>::connect_with(&addr_from_env(ADDR_ENV), config(), &deny) {
        Err(ConnectError::Unauthorized { credentials }) => {
            assert_eq!(
                credentials.pid() as u32,
                std::os::unix::process::parent_id(),
                "the listener's credentials are not the parent's"
            );
            assert_eq!(credentials.uid(), nix::unistd::geteuid().as_raw());
        }
        other => panic!("expected Unauthorized, got {other:?}"),
    }
}

/// One of the peers of `fifty_mixed_peers_never_crash_the_listener`.
fn mixed_peer() {
    let addr = addr_from_env(ADDR_ENV);
    match std::env::var(KIND_ENV).expect("kind").as_str() {
        "good" => ask(&Endpoint::connect(&addr, config()).expect("connect")),
        "unauthorized" => match Endpoint::<Ask, Answer>::connect(&addr, config()) {
            Err(ConnectError::Closed) => {}
            other => panic!("expected Closed from a refusing listener, got {other:?}"),
        },
        "garbage" => {
            let sock = SeqPacketSocket::connect(&addr).expect("raw connect");
            sock.send(b"GET / HTTP/1.1\r\n\r\n").expect("send garbage");
            expect_closed(&sock);
        }
        "wrong_protocol" => {
            let other = Config::new().protocol("someone-else", 9);
            match Endpoint::<Ask, Answer>::connect(&addr, other) {
                Err(ConnectError::ProtocolMismatch {
                    theirs,
                    theirs_version,
                    ..
                }) => assert_eq!((theirs.as_str(), theirs_version), ("rendezvous-test", 1)),
                other => panic!("expected ProtocolMismatch, got {other:?}"),
            }
        }
        "closer" => drop(SeqPacketSocket::connect(&addr).expect("raw connect")),
        other => panic!("unknown kind {other}"),
    }
}

// ------------------------------------------------------------------ tests

#[test]
fn a_path_listener_creates_0700_dirs_serves_three_processes_and_cleans_up() {
    // 0: the umask takes nothing away, so the modes must be set, not left
    // to the umask. 0777: it takes everything away, and they must be
    // restored.
    for umask in ["0", "777"] {
        path_listener_under_umask(umask);
    }
}

fn path_listener_under_umask(umask: &str) {
    let tmp = common::temp_dir();
    let a = tmp.path().join("a");
    let b = a.join("b");
    let sock = b.join("sock");
    assert!(!exists(&a));
    let (ctl, _, ctl_env) = common::abstract_listener();
    let sock_env = sock.to_str().expect("utf-8 temp path").to_owned();
    let mut server = spawn_role(
        "path_server",
        &[
            (PATH_ENV, &sock_env),
            (ADDR_ENV, &ctl_env),
            (UMASK_ENV, umask),
        ],
    );
    let reports = Receiver::<Report>::from_socket(
        ctl.accept_timeout(CHILD_TIMEOUT)
            .expect("server's control connection"),
        Config::new(),
    );
    match reports.recv_timeout(CHILD_TIMEOUT) {
        Ok(Report::Bound) => {}
        other => panic!("expected Bound, got {other:?}"),
    }

    // Whatever the server's umask, the directories it made are 0700 and
    // the socket file 0600.
    assert_dir(&a, 0o700);
    assert_dir(&b, 0o700);
    assert_socket_file(&sock);

    let mut clients: Vec<Guard> = (0..3)
        .map(|_| spawn_role("client", &[(PATH_ENV, &sock_env)]))
        .collect();
    let pids: BTreeSet<i32> = clients.iter().map(Guard::pid).collect();
    for c in &mut clients {
        c.wait_success();
    }
    let served = match reports.recv_timeout(CHILD_TIMEOUT) {
        Ok(Report::Done { peers }) => peers,
        other => panic!("expected Done, got {other:?}"),
    };
    assert_eq!(served.iter().copied().collect::<BTreeSet<_>>(), pids);
    assert_eq!(served.len(), 3);
    server.wait_success();

    assert!(!exists(&sock), "the socket file outlived the listener");
    assert!(
        !exists(&b),
        "the created directory a/b outlived the listener"
    );
    assert!(!exists(&a), "the created directory a outlived the listener");
    assert!(tmp.path().is_dir(), "the pre-existing temp dir was removed");
}

#[test]
fn a_directory_that_already_existed_is_never_removed() {
    let tmp = common::temp_dir();
    let a = tmp.path().join("a");
    let b = a.join("b");
    let sock = b.join("sock");
    std::fs::create_dir(&a).expect("mkdir a");
    std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o755)).expect("chmod a");
    let sock_env = sock.to_str().expect("utf-8 temp path").to_owned();
    let addr = Address::from(sock.clone());

    // a exists: only a/b is created (0700); a keeps its mode.
    let listener = Listener::<Answer, Ask>::bind(&addr, config()).expect("bind");
    assert_dir(&a, 0o755);
    assert_dir(&b, 0o700);
    assert_socket_file(&sock);
    let mut child = spawn_role("client", &[(PATH_ENV, &sock_env)]);
    let ep = listener.accept_timeout(CHILD_TIMEOUT).expect("accept");
    assert_eq!(serve_one(&ep), child.pid());
    child.wait_success();
    drop(ep);
    drop(listener);
    assert!(!exists(&sock), "the socket file outlived the listener");
    assert!(
        !exists(&b),
        "the created directory a/b outlived the listener"
    );
    assert_dir(&a, 0o755);

    // A directory the listener created but someone else put a file in is
    // not removed (nor anything above it).
    let listener = Listener::<Answer, Ask>::bind(&addr, config()).expect("bind again");
    assert_dir(&b, 0o700);
    let foreign = b.join("foreign");
    std::fs::write(&foreign, b"not the listener's").expect("write a foreign file");
    drop(listener);
    assert!(!exists(&sock), "the socket file outlived the listener");
    assert!(foreign.is_file(), "a foreign file was removed");
    assert_dir(&b, 0o700);
    assert_dir(&a, 0o755);
    assert!(tmp.path().is_dir());
}

#[test]
fn a_bound_datagram_socket_creates_and_removes_its_dirs_too() {
    let tmp = common::temp_dir();
    let a = tmp.path().join("dgram");
    let sock = a.join("x/sock");
    let socket = DatagramSocket::bind(&Address::from(sock.clone())).expect("bind");
    assert_dir(&a, 0o700);
    assert_dir(&a.join("x"), 0o700);
    assert_socket_file(&sock);
    drop(socket);
    assert!(
        !exists(&sock) && !exists(&a),
        "the datagram socket left files behind"
    );
    assert!(tmp.path().is_dir());
}

#[test]
fn an_abstract_listener_serves_three_processes_and_knows_their_pids() {
    let listener = Listener::<Answer, Ask>::bind_random(config()).expect("bind_random");
    let addr = listener.local_addr().expect("local_addr");
    let name = addr
        .as_abstract()
        .expect("bind_random gives an abstract name");
    let other = Listener::<Answer, Ask>::bind_random(config()).expect("bind_random");
    assert_ne!(
        other.local_addr().expect("local_addr"),
        addr,
        "random names repeat"
    );
    drop(other);
    let env = common::hex(name.as_bytes());
    let mut clients: Vec<Guard> = (0..3)
        .map(|_| spawn_role("client", &[(ADDR_ENV, &env)]))
        .collect();
    let pids: BTreeSet<i32> = clients.iter().map(Guard::pid).collect();
    let mut seen = BTreeSet::new();
    let mut pidfds_checked = 0;
    for _ in 0..3 {
        let ep = listener.accept_timeout(CHILD_TIMEOUT).expect("accept");
        let cred = ep.peer_cred().expect("peer_cred");
        assert!(
            pids.contains(&cred.pid()),
            "peer pid {} is none of the clients {pids:?}",
            cred.pid()
        );
        assert_eq!(cred.uid(), nix::unistd::geteuid().as_raw());
        let pidfd = ep.peer_pidfd().expect("peer_pidfd");
        if let Some(pidfd) = &pidfd {
            assert_eq!(
                pidfd_pid(pidfd),
                cred.pid(),
                "the pidfd names another process"
            );
            // The client waits for its answer: it cannot have exited.
            assert!(!pidfd.has_exited().expect("poll pidfd"));
        }
        assert_eq!(serve_one(&ep), cred.pid());
        if let Some(pidfd) = pidfd {
            assert!(
                pidfd.wait_timeout(CHILD_TIMEOUT).expect("wait on pidfd"),
                "the pidfd did not report the client's exit"
            );
            pidfds_checked += 1;
        }
        assert!(seen.insert(cred.pid()), "pid {} accepted twice", cred.pid());
    }
    assert_eq!(seen, pids);
    for c in &mut clients {
        c.wait_success();
    }
    if pidfds_checked == 0 {
        println!("SO_PEERPIDFD unsupported by this kernel: pidfd checks skipped");
    }
    assert_eq!((listener.rejected(), listener.failed()), (0, 0));
}

/// The pid a pidfd refers to, from `/proc/self/fdinfo`.
fn pidfd_pid(pidfd: &courier_transport::PidFd) -> i32 {
    use std::os::fd::AsRawFd;
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd()))
        .expect("read fdinfo");
    info.lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .expect("Pid: line in a pidfd's fdinfo")
        .trim()
        .parse()
        .expect("pid")
}

#[test]
fn a_refused_client_is_closed_unread_and_the_listener_goes_on() {
    let (addr, env) = abstract_addr();
    let (ctl, _, ctl_env) = common::abstract_listener();
    // Nobody at first; later exactly the pid stored here.
    let admitted = Arc::new(AtomicI32::new(0));
    let rule = Arc::clone(&admitted);
    let listener = Listener::<Answer, Ask>::bind(&addr, config())
        .expect("bind")
        .authorize(Authorize::custom(move |c| {
            c.pid() == rule.load(Ordering::SeqCst)
        }));

    let mut refused = spawn_role("raw_pending", &[(ADDR_ENV, &env), (CTL_ENV, &ctl_env)]);
    let ctl_conn = ctl
        .accept_timeout(CHILD_TIMEOUT)
        .expect("control connection");
    let mut buf = [0; 16];
    let n = ctl_conn
        .recv_timeout(&mut buf, CHILD_TIMEOUT)
        .expect("the child's word that it sent");
    assert_eq!(&buf[..n], b"sent");
    match listener.accept_timeout(CHILD_TIMEOUT) {
        Err(ConnectError::Unauthorized { credentials }) => {
            assert_eq!(credentials.pid(), refused.pid());
            assert_eq!(credentials.uid(), nix::unistd::geteuid().as_raw());
            let text = ConnectError::Unauthorized { credentials }.to_string();
            assert!(
                text.contains(&refused.pid().to_string()),
                "the error does not name the pid: {text}"
            );
        }
        other => panic!("expected Unauthorized, got {:?}", other.map(|_| ())),
    }
    assert_eq!((listener.rejected(), listener.failed()), (1, 0));
    // The child checks ECONNRESET (its message was left unread) and EOF.
    refused.wait_success();

    let mut admitted_client = spawn_role("client", &[(ADDR_ENV, &env)]);
    admitted.store(admitted_client.pid(), Ordering::SeqCst);
    let ep = listener
        .accept_timeout(CHILD_TIMEOUT)
        .expect("the admitted client");
    assert_eq!(serve_one(&ep), admitted_client.pid());
    admitted_client.wait_success();
    assert_eq!((listener.rejected(), listener.failed()), (1, 0));
}

#[test]
fn another_user_is_refused_by_default() {
    if !common::is_root() {
        println!("skipped: changing to another uid needs root");
        return;
    }
    let (addr, env) = abstract_addr();
    let listener = Listener::<Answer, Ask>::bind(&addr, config()).expect("bind");
    let mut child = spawn_role("other_user", &[(ADDR_ENV, &env)]);
    match listener.accept_timeout(CHILD_TIMEOUT) {
        Err(ConnectError::Unauthorized { credentials }) => {
            assert_eq!(credentials.pid(), child.pid());
            assert_eq!((credentials.uid(), credentials.gid()), (65534, 65534));
        }
        other => panic!("expected Unauthorized, got {:?}", other.map(|_| ())),
    }
    assert_eq!((listener.rejected(), listener.failed()), (1, 0));
    child.wait_success();
}

#[test]
fn a_client_refuses_a_listener_it_does_not_authorize() {
    let (addr, env) = abstract_addr();
    let listener = Listener::<Answer, Ask>::bind(&addr, config()).expect("bind");
    let mut child = spawn_role("distrustful", &[(ADDR_ENV, &env)]);
    // The client hangs up before its hello: a failed handshake here.
    match listener.accept_timeout(CHILD_TIMEOUT) {
        Err(ConnectError::Closed) => {}
        other => panic!("expected Closed, got {:?}", other.map(|_| ())),
    }
    assert_eq!((listener.rejected(), listener.failed()), (0, 1));
    child.wait_success();
}

#[test]
fn fifty_mixed_peers_never_crash_the_listener() {
    const KINDS: [&str; 5] = [
        "good",
        "garbage",
        "wrong_protocol",
        "unauthorized",
        "closer",
    ];
    let (addr, env) = abstract_addr();
    let denied = Arc::new(Mutex::new(HashSet::<i32>::new()));
    let rule = Arc::clone(&denied);
    let listener = Listener::<Answer, Ask>::bind(&addr, config())
        .expect("bind")
        .authorize(Authorize::custom(move |c| {
            !rule.lock().unwrap().contains(&c.pid())
        }));
    let mut counts = [0u64; 5];
    let started = std::time::Instant::now();
    for i in 0..50 {
        let k = (i * 3 + i / 5) % 5; // every kind ten times, in a mixed order
        let kind = KINDS[k];
        counts[k] += 1;
        let mut child = spawn_role("mixed_peer", &[(ADDR_ENV, &env), (KIND_ENV, kind)]);
        if kind == "unauthorized" {
            denied.lock().unwrap().insert(child.pid());
        }
        let got = listener.accept_timeout(CHILD_TIMEOUT);
        match (kind, got) {
            ("good", Ok(ep)) => assert_eq!(serve_one(&ep), child.pid()),
            ("garbage", Err(ConnectError::NotCourier)) => {}
            ("wrong_protocol", Err(ConnectError::ProtocolMismatch { theirs, .. })) => {
                assert_eq!(theirs, "someone-else");
            }
            ("unauthorized", Err(ConnectError::Unauthorized { credentials })) => {
                assert_eq!(credentials.pid(), child.pid());
            }
            ("closer", Err(ConnectError::Closed)) => {}
            (kind, got) => panic!("peer {i} ({kind}): unexpected {:?}", got.map(|_| ())),
        }
        child.wait_success();
    }
    assert_eq!(counts, [10; 5]);
    assert_eq!(listener.rejected(), counts[3], "rejected()");
    assert_eq!(
        listener.failed(),
        counts[1] + counts[2] + counts[4],
        "failed()"
    );
    println!("50 peers in {:?}", started.elapsed());

    // And it still serves.
    let mut last = spawn_role("client", &[(ADDR_ENV, &env)]);
    let ep = listener.accept_timeout(CHILD_TIMEOUT).expect("accept");
    assert_eq!(serve_one(&ep), last.pid());
    last.wait_success();
}
