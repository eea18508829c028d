//! Socket file modes: a courier `Listener` and a bound `DatagramSocket`
//! make their socket files 0600 and the directories they create 0700, in
//! this process and in children binding under `umask 0` and `umask 0777`;
//! the files and directories go when their owner drops them. Also the
//! mode checks the other parts use.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::ChildStdin;

use courier::transport::DatagramSocket;
use courier::{Address, Listener};

use crate::common::{self, CHILD_TIMEOUT};
use crate::support::child::finish_result;
use crate::support::figures::Figures;
use crate::support::{say, wait_line};
use crate::{
    config, path_from_env, spawn_role, wait_for_stdin_eof, PATH2_ENV, PATH_ENV, UMASK_ENV,
};

/// Binds a courier `Listener` at [`PATH_ENV`] and a `DatagramSocket` at
/// [`PATH2_ENV`] under the umask in [`UMASK_ENV`], says `bound`, waits for
/// the parent to look, drops both and reports whether their files and
/// directories are gone.
pub fn bind_under_umask() {
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

/// The permission bits of `path` (not following a symlink).
pub fn mode_of(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode()
        & 0o7777
}

/// Asserts a socket file of mode 0600 at `path`.
pub fn assert_socket_0600(path: &Path, what: &str) {
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
pub fn assert_dir_0700(path: &Path, what: &str) {
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
        let result = finish_result(child, &lines);
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
