//! Filesystem-path sockets: the socket file's mode whatever the umask, stale
//! socket files replaced, live sockets and non-sockets never touched, the
//! file removed on drop only while it is still ours, the `sun_path` length
//! limit, and the errors of connecting to a missing or stale path.

mod common;

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use courier_transport::{
    Address, BindOptions, DatagramSocket, Listener, SeqPacketSocket, TransportError,
};
use nix::sys::stat::{umask, Mode};

/// The directory the mode-checking child roles bind in.
const DIR_ENV: &str = "COURIER_TEST_DIR";
/// Every bounded wait of this file.
const WAIT: Duration = Duration::from_secs(5);

#[test]
#[ignore = "child role: run by the other tests of this file"]
fn role_entry() {
    common::run_role(&[
        ("listener_modes", listener_modes),
        ("datagram_modes", datagram_modes),
    ]);
}

/// The permission bits of the file at `path` (not following symlinks).
fn mode_of(path: &Path) -> u32 {
    let meta =
        std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    assert!(
        meta.file_type().is_socket(),
        "{} is not a socket",
        path.display()
    );
    meta.permissions().mode() & 0o7777
}

/// Asserts that `err` has `kind` and carries a courier error matching `is`.
fn assert_courier_err(
    what: &str,
    err: &io::Error,
    kind: io::ErrorKind,
    is: impl Fn(&TransportError) -> bool,
) {
    let inner = TransportError::of(err)
        .unwrap_or_else(|| panic!("{what}: expected a TransportError, got {err:?}"));
    assert!(is(inner), "{what}: wrong error: {inner:?}");
    assert_eq!(err.kind(), kind, "{what}: wrong error kind");
}

/// Asserts that `result` failed with `kind`.
fn assert_fails<T: std::fmt::Debug>(what: &str, result: io::Result<T>, kind: io::ErrorKind) {
    let err = result.expect_err(&format!("{what}: must fail"));
    assert_eq!(err.kind(), kind, "{what}: {err:?}");
}

/// Both settings of `replace_stale`: neither may touch a live socket or a
/// non-socket.
fn both_replace_options() -> [(&'static str, BindOptions); 2] {
    [
        ("replace_stale", BindOptions::new()),
        ("no replace_stale", BindOptions::new().replace_stale(false)),
    ]
}

/// In a child (the umask is process-wide): binds with `bind` under several
/// umasks and checks the socket file gets exactly the mode asked for.
fn check_modes<S>(bind: impl Fn(&Address, &BindOptions) -> io::Result<S>) {
    let dir = PathBuf::from(std::env::var(DIR_ENV).expect("directory in environment"));
    // (umask, mode asked for, mode expected)
    let cases = [
        (0o000, None, 0o600),
        (0o077, Some(0o660), 0o660),
        (0o777, Some(0o640), 0o640),
        (0o022, Some(0o666), 0o666),
    ];
    for (i, (mask, mode, want)) in cases.into_iter().enumerate() {
        let asked = mode.map_or("default".to_string(), |m| format!("{m:04o}"));
        let what = format!("mode {asked} under umask {mask:03o}");
        let opts = mode.map_or(BindOptions::new(), |m| BindOptions::new().mode(m));
        umask(Mode::from_bits_truncate(mask));
        let path = dir.join(format!("mode-{i}.sock"));
        let socket = bind(&Address::from(path.as_path()), &opts)
            .unwrap_or_else(|e| panic!("{what}: bind: {e}"));
        let got = mode_of(&path);
        assert_eq!(
            got, want,
            "{what}: socket file has mode {got:04o}, expected {want:04o}"
        );
        drop(socket);
        assert!(!path.exists(), "{what}: socket file left behind after drop");
    }
}

fn listener_modes() {
    check_modes(Listener::bind_with);
}

fn datagram_modes() {
    check_modes(DatagramSocket::bind_with);
}

/// Runs a mode-checking role in a child process, in a fresh directory.
fn run_mode_role(role: &str) {
    let dir = common::temp_dir();
    let mut cmd = common::role(role);
    cmd.env(DIR_ENV, dir.path());
    common::Guard::spawn(cmd).wait_success();
    let left: Vec<_> = std::fs::read_dir(dir.path()).expect("read dir").collect();
    assert!(
        left.is_empty(),
        "{role}: files left in the directory: {left:?}"
    );
}

#[test]
fn listener_socket_file_has_exactly_the_requested_mode_whatever_the_umask() {
    run_mode_role("listener_modes");
}

#[test]
fn datagram_socket_file_has_exactly_the_requested_mode_whatever_the_umask() {
    run_mode_role("datagram_modes");
}

/// A socket file nobody is bound to: bound, then the fd closed without the
/// file being removed.
fn make_stale(path: &Path) {
    let listener = Listener::bind(&Address::from(path)).expect("bind listener to make stale");
    drop(OwnedFd::from(listener));
    common::wait_until_refused::<courier_transport::kind::SeqPacket>(&Address::from(path));
    assert!(
        std::fs::symlink_metadata(path)
            .expect("stale file exists")
            .file_type()
            .is_socket(),
        "converting the listener to an OwnedFd must leave its socket file in place"
    );
}

/// Connects to `addr`, and checks one message each way with the connection
/// `listener` accepts.
fn exchange(listener: &Listener, addr: &Address) {
    let client = SeqPacketSocket::connect_timeout(addr, WAIT).expect("connect");
    let server = listener.accept_timeout(WAIT).expect("accept");
    client.send_timeout(b"ping", WAIT).expect("client send");
    let mut buf = [0; 16];
    let n = server.recv_timeout(&mut buf, WAIT).expect("server recv");
    assert_eq!(&buf[..n], b"ping", "server got the wrong message");
    server.send_timeout(b"pong", WAIT).expect("server send");
    let n = client.recv_timeout(&mut buf, WAIT).expect("client recv");
    assert_eq!(&buf[..n], b"pong", "client got the wrong message");
}

#[test]
fn stale_socket_file_is_replaced_by_a_new_bind() {
    let dir = common::temp_dir();
    let path = dir.path().join("stale.sock");
    let addr = Address::from(path.as_path());
    make_stale(&path);
    let refused = io::ErrorKind::ConnectionRefused;
    assert_fails("connect to stale", SeqPacketSocket::connect(&addr), refused);

    // (The new file may well get the stale one's inode number back: the
    // proof of replacement is that a connection now succeeds.)
    let listener = Listener::bind(&addr).expect("bind over a stale socket file");
    assert_eq!(mode_of(&path), 0o600, "replacement file has the wrong mode");
    exchange(&listener, &addr);
    drop(listener);
    assert!(
        !path.exists(),
        "replacement file survived the listener's drop"
    );
}

#[test]
fn stale_socket_file_is_replaced_by_a_datagram_bind() {
    let dir = common::temp_dir();
    let path = dir.path().join("stale-dgram.sock");
    let addr = Address::from(path.as_path());
    make_stale(&path);

    let server = DatagramSocket::bind(&addr).expect("bind datagram over a stale socket file");
    let client = DatagramSocket::unbound().expect("unbound socket");
    client.send_to(b"hello", &addr).expect("send_to");
    let mut buf = [0; 16];
    let n = server.recv_timeout(&mut buf, WAIT).expect("recv");
    assert_eq!(&buf[..n], b"hello");
}

#[test]
fn binding_over_a_live_listener_fails_and_leaves_it_working() {
    let dir = common::temp_dir();
    let path = dir.path().join("live.sock");
    let addr = Address::from(path.as_path());
    let live = Listener::bind(&addr).expect("bind live listener");
    let ino = std::fs::symlink_metadata(&path).expect("stat").ino();

    let in_use =
        |e: &TransportError| matches!(e, TransportError::AddressInUse { path: p } if *p == path);
    for (what, opts) in both_replace_options() {
        let err = Listener::bind_with(&addr, &opts).expect_err("bind on a live path must fail");
        assert_courier_err(what, &err, io::ErrorKind::AddrInUse, in_use);
        let err =
            DatagramSocket::bind_with(&addr, &opts).expect_err("bind on a live path must fail");
        assert_courier_err(what, &err, io::ErrorKind::AddrInUse, in_use);
    }
    assert_eq!(
        std::fs::symlink_metadata(&path).expect("stat").ino(),
        ino,
        "live socket file was replaced"
    );

    // The liveness probe of a failed bind is documented to reach the live
    // listener as a connection closed at once (end of stream): skip those.
    let client = SeqPacketSocket::connect_timeout(&addr, WAIT).expect("connect to live listener");
    client.send_timeout(b"still here", WAIT).expect("send");
    let mut buf = [0; 16];
    let mut probes = 0;
    let server = loop {
        let conn = live.accept_timeout(WAIT).expect("live listener accepts");
        let n = conn
            .recv_timeout(&mut buf, WAIT)
            .expect("recv on accepted connection");
        if n > 0 {
            assert_eq!(&buf[..n], b"still here", "wrong message");
            break conn;
        }
        probes += 1;
        assert!(probes <= 4, "more closed connections than failed binds");
    };
    server.send_timeout(b"ok", WAIT).expect("reply");
    let n = client.recv_timeout(&mut buf, WAIT).expect("client recv");
    assert_eq!(&buf[..n], b"ok");
}

#[test]
fn non_socket_at_the_path_is_refused_and_left_untouched() {
    let dir = common::temp_dir();
    let file = dir.path().join("file");
    std::fs::write(&file, b"precious data").expect("write file");
    let subdir = dir.path().join("dir");
    std::fs::create_dir(&subdir).expect("mkdir");
    std::fs::write(subdir.join("inside"), b"inner").expect("write inner file");
    // A symlink to a stale socket: neither the link nor its target may go.
    let target = dir.path().join("target.sock");
    make_stale(&target);
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");

    let snapshot = |p: &Path| {
        let m = std::fs::symlink_metadata(p).expect("stat");
        (m.ino(), m.mode(), m.len(), m.mtime(), m.mtime_nsec())
    };
    let before = [&file, &subdir, &link, &target].map(|p| snapshot(p));

    for path in [&file, &subdir, &link] {
        let addr = Address::from(path.as_path());
        let not_socket =
            |e: &TransportError| matches!(e, TransportError::NotASocket { path: p } if p == path);
        for (what, opts) in both_replace_options() {
            let what = format!("{} ({what})", path.display());
            let err =
                Listener::bind_with(&addr, &opts).expect_err("bind on a non-socket must fail");
            assert_courier_err(&what, &err, io::ErrorKind::AlreadyExists, not_socket);
            let err = DatagramSocket::bind_with(&addr, &opts)
                .expect_err("bind on a non-socket must fail");
            assert_courier_err(&what, &err, io::ErrorKind::AlreadyExists, not_socket);
        }
    }

    let after = [&file, &subdir, &link, &target].map(|p| snapshot(p));
    assert_eq!(
        before, after,
        "a refused bind changed something at the path"
    );
    let untouched = std::fs::read(&file).ok() == Some(b"precious data".to_vec())
        && std::fs::read(subdir.join("inside")).ok() == Some(b"inner".to_vec())
        && std::fs::read_link(&link).ok() == Some(target.clone());
    assert!(untouched, "file, directory or symlink content changed");
}

#[test]
fn socket_file_is_removed_on_drop() {
    let dir = common::temp_dir();
    let path = dir.path().join("drop.sock");
    let listener = Listener::bind(&Address::from(path.as_path())).expect("bind");
    assert!(path.exists(), "bind created no socket file");
    drop(listener);
    assert!(!path.exists(), "listener's socket file survived its drop");

    let socket = DatagramSocket::bind(&Address::from(path.as_path())).expect("datagram bind");
    assert_eq!(
        mode_of(&path),
        0o600,
        "datagram socket file has the wrong mode"
    );
    drop(socket);
    assert!(!path.exists(), "datagram socket's file survived its drop");
}

#[test]
fn drop_leaves_a_file_someone_else_put_at_the_path() {
    let dir = common::temp_dir();
    let path = dir.path().join("shared.sock");
    let addr = Address::from(path.as_path());
    let first = Listener::bind(&addr).expect("bind first");
    std::fs::remove_file(&path).expect("remove first's file by hand");
    let second = Listener::bind(&addr).expect("bind second at the same path");
    let second_ino = std::fs::symlink_metadata(&path).expect("stat").ino();

    drop(first);
    let meta = std::fs::symlink_metadata(&path)
        .expect("dropping the first listener removed the second's socket file");
    assert_eq!(
        meta.ino(),
        second_ino,
        "the file at the path is not the second listener's"
    );
    exchange(&second, &addr);

    drop(second);
    assert!(!path.exists(), "second listener's file survived its drop");

    // The same for datagram sockets.
    let first = DatagramSocket::bind(&addr).expect("bind first datagram socket");
    std::fs::remove_file(&path).expect("remove by hand");
    let second = DatagramSocket::bind(&addr).expect("bind second datagram socket");
    drop(first);
    assert!(
        path.exists(),
        "dropping the first datagram socket removed the second's file"
    );
    drop(second);
    assert!(
        !path.exists(),
        "second datagram socket's file survived its drop"
    );
}

#[test]
fn paths_longer_than_107_bytes_are_refused() {
    let dir = common::temp_dir();
    let with_len = |len: usize| {
        let base = dir.path().as_os_str().len() + 1;
        assert!(base < len, "temp dir path too long for this test");
        dir.path().join("x".repeat(len - base))
    };
    for len in [108, 109, 200] {
        let path = with_len(len);
        assert_eq!(path.as_os_str().len(), len);
        let addr = Address::from(path.as_path());
        let too_long = |e: &TransportError| matches!(e, TransportError::PathTooLong { len: l, max: 107 } if *l == len);
        let kind = io::ErrorKind::InvalidInput;
        let what = format!("{len}-byte path");
        let err = Listener::bind(&addr).expect_err("bind must fail");
        assert_courier_err(&format!("listener, {what}"), &err, kind, too_long);
        let err = DatagramSocket::bind(&addr).expect_err("bind must fail");
        assert_courier_err(&format!("datagram, {what}"), &err, kind, too_long);
        let err = SeqPacketSocket::connect(&addr).expect_err("connect must fail");
        assert_courier_err(&format!("connect, {what}"), &err, kind, too_long);
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("read dir").count(),
        0,
        "a refused bind created a file"
    );

    // 107 bytes is the longest that fits, and works.
    let path = with_len(107);
    let addr = Address::from(path.as_path());
    let listener = Listener::bind(&addr).expect("a 107-byte path fits sun_path");
    exchange(&listener, &addr);
}

#[test]
fn connect_errors_tell_missing_from_stale() {
    let dir = common::temp_dir();
    let missing = Address::from(dir.path().join("missing.sock"));
    let (not_found, refused) = (io::ErrorKind::NotFound, io::ErrorKind::ConnectionRefused);
    let (seqpacket, dgram) = (
        SeqPacketSocket::connect(&missing),
        DatagramSocket::connect(&missing),
    );
    assert_fails("connect to missing", seqpacket, not_found);
    assert_fails("datagram connect to missing", dgram, not_found);

    let path = dir.path().join("stale.sock");
    make_stale(&path);
    let stale = Address::from(path.as_path());
    let seqpacket = SeqPacketSocket::connect_timeout(&stale, WAIT);
    let dgram = DatagramSocket::connect(&stale);
    assert_fails("connect to stale", seqpacket, refused);
    assert_fails("datagram connect to stale", dgram, refused);
    assert!(path.exists(), "a failed connect removed the stale file");
}
