//! Another uid: as root, a child drops to uid/gid 65534 and tries its way
//! into listeners made with the default `Authorize` (same uid): raw on an
//! abstract name and on a 0666 path socket (refused at accept, closed
//! unread), as a courier client (`Closed`), and on a default 0600 path
//! socket (refused by the kernel). The listener then serves a same-uid
//! client. Not root: skipped, and said so.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use courier::transport::{BindOptions, SeqPacketSocket};
use courier::{Address, Authorize, ConnectError, Endpoint, Listener};

use crate::common::{self, ADDR_ENV, CHILD_TIMEOUT};
use crate::modes::mode_of;
use crate::support::child::{finish_result, random_address};
use crate::support::figures::Figures;
use crate::support::limits::become_user;
use crate::support::say;
use crate::{config, path_from_env, spawn_role, PATH2_ENV, PATH_ENV};

/// Drops to uid/gid 65534 and tries its way in (see the module docs).
pub fn other_uid() {
    become_user(65534);
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
    let (abstract_addr, env) = random_address();
    let abstract_listener =
        Listener::<u32, u32>::bind(&abstract_addr, config()).expect("bind abstract");
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
    let result = finish_result(child, &lines);
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
