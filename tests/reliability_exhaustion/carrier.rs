//! What travels in the fd-limit and fds-in-flight cases: [`Carrier`]s of
//! `/dev/null` fds, small or large (through the sender's shared ring), and
//! the checks that a received one is the one sent.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use courier::{Bytes, Fd};
use serde::{Deserialize, Serialize};

/// A value carrying `files` (each `/dev/null`), and `pad` bytes: 256 KiB
/// make it a large value, which travels through the sender's shared ring.
#[derive(Serialize, Deserialize, Debug)]
pub struct Carrier {
    pub tag: u64,
    pub files: Vec<Fd<File>>,
    pub pad: Bytes,
}

/// Bytes of padding that make a [`Carrier`] large (above the 64 KiB inline
/// threshold).
pub const LARGE_PAD: usize = 256 << 10;

/// `n` fresh fds on `/dev/null`.
fn devnulls(n: usize) -> Vec<Fd<File>> {
    (0..n)
        .map(|_| Fd::new(File::open("/dev/null").expect("open /dev/null")))
        .collect()
}

/// A small carrier of `n` fds.
pub fn small(tag: u64, n: usize) -> Carrier {
    Carrier {
        tag,
        files: devnulls(n),
        pad: Bytes::from(Vec::new()),
    }
}

/// A large carrier of `n` fds, its padding a function of `tag`.
pub fn large(tag: u64, n: usize) -> Carrier {
    Carrier {
        tag,
        files: devnulls(n),
        pad: Bytes::from(vec![tag as u8; LARGE_PAD]),
    }
}

/// Asserts that `fd` is open on `/dev/null`.
pub fn assert_devnull(fd: BorrowedFd<'_>, what: &str) {
    let null = nix::sys::stat::stat("/dev/null").expect("stat /dev/null");
    let st = nix::sys::stat::fstat(fd)
        .unwrap_or_else(|e| panic!("{what}: fd {} is not open: {e}", fd.as_raw_fd()));
    assert_eq!(
        (st.st_dev, st.st_ino, st.st_rdev),
        (null.st_dev, null.st_ino, null.st_rdev),
        "{what}: fd {} is not /dev/null",
        fd.as_raw_fd()
    );
}

/// Checks a received carrier: its tag, fd count (each `/dev/null`) and
/// padding.
pub fn check_carrier(got: &Carrier, tag: u64, fds: usize, pad: usize, what: &str) {
    assert_eq!(got.tag, tag, "{what}: another value arrived (order lost?)");
    assert_eq!(got.files.len(), fds, "{what}: fds");
    for f in &got.files {
        assert_devnull(f.as_fd(), what);
    }
    assert_eq!(got.pad.len(), pad, "{what}: padding length");
    assert!(got.pad.iter().all(|&b| b == tag as u8), "{what}: padding");
}
