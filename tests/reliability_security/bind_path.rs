//! Paths that are not sockets: a regular file, a directory, a FIFO and
//! symlinks at the bind path are refused (`NotASocket`) by every bind and
//! left exactly as they were, with what a symlink points to; a stale
//! socket is replaced (or, asked not to, refused and kept); a live socket
//! is never replaced and keeps serving; a listener whose file was replaced
//! leaves the new file on drop.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use courier::transport::{BindOptions, DatagramSocket, SeqPacketSocket, TransportError};
use courier::{Address, ConnectError, Endpoint, Listener};

use crate::common::{self, CHILD_TIMEOUT};
use crate::config;
use crate::modes::assert_socket_0600;
use crate::support::figures::Figures;

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
