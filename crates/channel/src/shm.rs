//! Bodies too large to send inline travel in a sealed memfd.
//!
//! The sender writes the body into a fresh memfd with `write(2)` (the
//! kernel allocates the pages: no page faults in the sender) and seals it
//! against shrinking, growing and writing. The receiver maps it only after
//! checking those seals and the size, so the peer can neither change the
//! bytes while they are decoded nor truncate the file under the mapping
//! (which would raise SIGBUS).

use std::ffi::c_void;
use std::fs::File;
use std::io::{self, Write};
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use nix::sys::stat::fstat;

use crate::FrameError;

/// The seals a receiver requires.
const REQUIRED: SealFlag = SealFlag::F_SEAL_SHRINK
    .union(SealFlag::F_SEAL_GROW)
    .union(SealFlag::F_SEAL_WRITE);

/// A sealed memfd holding exactly `body`.
pub(crate) fn create(body: &[u8]) -> io::Result<OwnedFd> {
    let fd = memfd_create(
        c"courier-body",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )?;
    let mut file = File::from(fd);
    file.write_all(body)?;
    fcntl(
        &file,
        FcntlArg::F_ADD_SEALS(REQUIRED | SealFlag::F_SEAL_SEAL),
    )?;
    Ok(file.into())
}

/// A read-only mapping of a received, checked memfd.
pub(crate) struct Mapping {
    ptr: Option<NonNull<c_void>>,
    len: usize,
}

impl Mapping {
    /// Checks the seals and size of `fd`, then maps its first `len` bytes.
    pub(crate) fn new(fd: &OwnedFd, len: usize) -> Result<Mapping, FrameError> {
        let refuse = |reason| FrameError::BadSharedMemory { reason };
        let seals = fcntl(fd, FcntlArg::F_GET_SEALS).map_err(|_| refuse("not a sealable memfd"))?;
        if !SealFlag::from_bits_retain(seals).contains(REQUIRED) {
            return Err(refuse("memfd is not sealed against shrink, grow and write"));
        }
        let size = fstat(fd).map_err(|_| refuse("fstat failed"))?.st_size;
        if u64::try_from(size).unwrap_or(0) < len as u64 {
            return Err(refuse("memfd is smaller than the declared body"));
        }
        let Some(length) = NonZeroUsize::new(len) else {
            return Ok(Mapping { ptr: None, len: 0 });
        };
        Ok(Mapping {
            ptr: Some(map_sealed(fd, length).map_err(|_| refuse("mmap failed"))?),
            len,
        })
    }

    /// The mapped bytes.
    #[allow(unsafe_code)]
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self.ptr {
            None => &[],
            // SAFETY: `ptr` maps `len` readable bytes of a memfd sealed
            // against shrinking and writing, so the bytes exist and never
            // change for as long as the mapping lives, which `&self` borrows.
            Some(ptr) => unsafe { std::slice::from_raw_parts(ptr.as_ptr().cast::<u8>(), self.len) },
        }
    }
}

#[allow(unsafe_code)]
fn map_sealed(fd: &OwnedFd, len: NonZeroUsize) -> nix::Result<NonNull<c_void>> {
    let flags = MapFlags::MAP_SHARED | MapFlags::MAP_POPULATE;
    // SAFETY: a new read-only mapping at an address the kernel picks aliases
    // no Rust object; the file is sealed so it cannot shrink under it.
    unsafe { mmap(None, len, ProtFlags::PROT_READ, flags, fd.as_fd(), 0) }
}

impl Drop for Mapping {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        if let Some(ptr) = self.ptr {
            // SAFETY: `ptr`/`len` is the mapping made in `new`, unmapped
            // only here; no slice of it outlives `self`.
            let _ = unsafe { munmap(ptr, self.len) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_memfd_maps_back() {
        let fd = create(b"payload").unwrap();
        let map = Mapping::new(&fd, 7).unwrap();
        assert_eq!(map.as_slice(), b"payload");
        assert!(matches!(
            Mapping::new(&fd, 8),
            Err(FrameError::BadSharedMemory { .. })
        ));
    }

    #[test]
    fn unsealed_or_non_memfds_are_refused() {
        let fd = memfd_create(c"x", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING).unwrap();
        File::from(fd.try_clone().unwrap())
            .write_all(b"abc")
            .unwrap();
        assert!(Mapping::new(&fd, 3).is_err(), "unsealed memfd accepted");
        fcntl(
            &fd,
            FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW),
        )
        .unwrap();
        assert!(Mapping::new(&fd, 3).is_err(), "writable memfd accepted");
        let file: OwnedFd = File::open("/dev/null").unwrap().into();
        assert!(Mapping::new(&file, 0).is_err(), "/dev/null accepted");
    }
}
