//! Helpers shared by the integration tests: child processes (the test binary
//! re-executed in a named role), fd-table snapshots, bounded waits.
//!
//! Each test file that needs a child declares
//!
//! ```ignore
//! #[test]
//! #[ignore = "child role: run by the other tests of this file"]
//! fn role_entry() { common::run_role(ROLES) }
//! ```
//!
//! and starts it with [`role`]. The child is a fresh process (fork+exec by
//! `std::process::Command`), never a bare fork of the multi-threaded harness.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use courier_transport::{AbstractName, Address, Listener, SeqPacketSocket};

/// The environment variable naming the role a child runs.
pub const ROLE_ENV: &str = "COURIER_TEST_ROLE";
/// The environment variable carrying an address for the child (hex of the
/// abstract name's bytes).
pub const ADDR_ENV: &str = "COURIER_TEST_ADDR";
/// How long any test waits for a child before failing.
pub const CHILD_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs the role named in [`ROLE_ENV`]. A child role reports failure by
/// panicking (the child exits non-zero).
pub fn run_role(roles: &[(&str, fn())]) {
    let name = std::env::var(ROLE_ENV).expect("role_entry only runs as a child role");
    let (_, role) = roles
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("unknown role {name}"));
    role();
}

/// A command that runs this test binary again, in role `name`.
pub fn role(name: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
    cmd.args([
        "role_entry",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
        "-q",
    ])
    .env(ROLE_ENV, name)
    .stdin(Stdio::null())
    .stdout(Stdio::null());
    cmd
}

/// A child that is killed if the test ends (or panics) before it exits.
pub struct Guard(pub Child);

impl Guard {
    /// Starts `cmd`.
    pub fn spawn(mut cmd: Command) -> Guard {
        Guard(cmd.spawn().expect("spawn child"))
    }

    /// The child's pid.
    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    /// Waits for the child to exit, at most [`CHILD_TIMEOUT`]; panics (and
    /// kills it) if it does not.
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + CHILD_TIMEOUT;
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "child {} did not exit within {CHILD_TIMEOUT:?}",
                self.pid()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits and asserts a successful exit.
    pub fn wait_success(&mut self) {
        let status = self.wait();
        assert!(status.success(), "child failed: {status:?}");
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A listener on a fresh random abstract name, and that name in the form
/// [`ADDR_ENV`] carries.
pub fn abstract_listener() -> (Listener, Address, String) {
    let name = AbstractName::random().expect("random name");
    let env = hex(name.as_bytes());
    let addr = Address::from(name);
    (
        Listener::bind(&addr).expect("bind abstract listener"),
        addr,
        env,
    )
}

/// Starts role `name` with [`ADDR_ENV`] set to a fresh listener's address and
/// accepts its connection (bounded).
pub fn spawn_connected(name: &str) -> (Guard, SeqPacketSocket) {
    let (listener, _, env) = abstract_listener();
    let mut cmd = role(name);
    cmd.env(ADDR_ENV, env);
    let child = Guard::spawn(cmd);
    let conn = listener
        .accept_timeout(CHILD_TIMEOUT)
        .expect("child connected");
    (child, conn)
}

/// In a child: connects to the address in [`ADDR_ENV`].
pub fn connect_to_parent() -> SeqPacketSocket {
    SeqPacketSocket::connect(&parent_addr()).expect("connect to parent")
}

/// In a child: the address in [`ADDR_ENV`].
pub fn parent_addr() -> Address {
    let env = std::env::var(ADDR_ENV).expect("address in environment");
    Address::from(AbstractName::new(unhex(&env)).expect("name"))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// The open fds of this process and what they point to (the fd used to read
/// the directory itself is left out).
pub fn fd_table() -> BTreeMap<i32, PathBuf> {
    let mut table = BTreeMap::new();
    for entry in std::fs::read_dir("/proc/self/fd").expect("read /proc/self/fd") {
        let entry = entry.expect("entry");
        let fd: i32 = entry
            .file_name()
            .to_string_lossy()
            .parse()
            .expect("fd number");
        if let Ok(target) = std::fs::read_link(entry.path()) {
            table.insert(fd, target);
        }
    }
    // The fd reading the directory points at the directory itself.
    let own_dir = PathBuf::from(format!("/proc/{}/fd", std::process::id()));
    table.retain(|_, t| *t != own_dir);
    table
}

/// Serialises the tests of one binary that compare fd tables, so that
/// other tests of the same binary do not open fds meanwhile.
pub fn fd_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether `fd` has FD_CLOEXEC.
pub fn is_cloexec(fd: BorrowedFd<'_>) -> bool {
    let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).expect("F_GETFD");
    nix::fcntl::FdFlag::from_bits_retain(flags).contains(nix::fcntl::FdFlag::FD_CLOEXEC)
}

/// Asserts that `fd` has FD_CLOEXEC, naming it in the failure.
pub fn assert_cloexec(what: &str, fd: impl AsFd) {
    let fd = fd.as_fd();
    assert!(
        is_cloexec(fd),
        "{what} (fd {}) lacks FD_CLOEXEC",
        fd.as_raw_fd()
    );
}

/// A fresh temporary directory for one test.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("courier-test-")
        .tempdir()
        .expect("temp dir")
}

/// Whether this process runs as root (tests that change uid need it).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Waits (bounded by [`CHILD_TIMEOUT`]) until connecting to `addr` is
/// refused, i.e. until the socket bound there is really gone.
///
/// Dropping the last fd of a socket in this process is not always the end
/// of it: another test thread may be spawning a child, and between its fork
/// and exec the child holds a copy of every fd (close-on-exec acts only at
/// exec). The socket lives until that copy goes too.
pub fn wait_until_refused<K: courier_transport::Kind>(addr: &Address) {
    let deadline = Instant::now() + CHILD_TIMEOUT;
    loop {
        match courier_transport::Socket::<K>::try_connect(addr) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
            other => assert!(
                Instant::now() < deadline,
                "{addr} still accepts connections: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
