//! memfds as a hostile peer makes them: bodies (kind 1) and rings
//! (kind 2), sparse, of any size, with the seals a courier sender puts on
//! them or without.

use std::fs::File;
use std::os::unix::fs::FileExt;

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};

use super::wire::RING_CONTROL;

/// A memfd holding `body`, `len` bytes long (sparse past the body), with
/// `seals` (none when empty).
pub fn memfd(body: &[u8], len: u64, seals: SealFlag) -> File {
    let fd = memfd_create(
        c"courier-test",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )
    .expect("memfd_create");
    let file = File::from(fd);
    file.write_all_at(body, 0).expect("write memfd");
    file.set_len(len.max(body.len() as u64))
        .expect("size memfd");
    if !seals.is_empty() {
        fcntl(&file, FcntlArg::F_ADD_SEALS(seals)).expect("F_ADD_SEALS");
    }
    file
}

/// The seals a courier sender puts on a kind-1 body.
pub fn body_seals() -> SealFlag {
    SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_SEAL
}

/// The seals a courier sender puts on a ring.
pub fn ring_seals() -> SealFlag {
    SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL
}

/// A ring memfd: control page (with `id` at offset 0) and `cap` bytes of
/// data area, with `seals`.
pub fn ring_file(cap: u64, id: u64, seals: SealFlag) -> File {
    memfd(&id.to_le_bytes(), RING_CONTROL + cap, seals)
}
