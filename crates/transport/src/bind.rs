//! Binding to an address: socket file modes, stale files, and removing only
//! our own file.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::socket::{self, SockType};
use nix::sys::stat::{fchmod, Mode};

use crate::{sys, Address, TransportError};

/// How [`Listener::bind_with`](crate::Listener::bind_with) and
/// [`DatagramSocket::bind_with`](crate::DatagramSocket::bind_with) bind.
///
/// ```
/// use courier_transport::BindOptions;
///
/// let opts = BindOptions::new().mode(0o660).backlog(16);
/// assert_eq!(opts.get_mode(), 0o660);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BindOptions {
    mode: u32,
    backlog: i32,
    replace_stale: bool,
}

impl Default for BindOptions {
    fn default() -> Self {
        BindOptions {
            mode: 0o600,
            backlog: 128,
            replace_stale: true,
        }
    }
}

impl BindOptions {
    /// Mode 0600, backlog 128, stale socket files replaced.
    pub fn new() -> Self {
        Self::default()
    }

    /// The permission bits of a path socket's file (default `0o600`: only
    /// the owner may connect). The file gets exactly these bits, whatever
    /// the process umask. Ignored for abstract names, which have no
    /// permissions at all.
    pub fn mode(self, mode: u32) -> Self {
        BindOptions {
            mode: mode & 0o777,
            ..self
        }
    }

    /// The mode that will be set.
    pub fn get_mode(&self) -> u32 {
        self.mode
    }

    /// The listen backlog (default 128; the kernel caps it at
    /// `net.core.somaxconn`). Ignored for datagram sockets.
    pub fn backlog(self, backlog: i32) -> Self {
        BindOptions { backlog, ..self }
    }

    /// The listen backlog that will be used.
    pub fn get_backlog(&self) -> i32 {
        self.backlog
    }

    /// Whether a stale socket file (one nobody is bound to any more) at the
    /// path is removed and the bind retried (default `true`). A path that is
    /// not a socket is never removed, whatever this says.
    pub fn replace_stale(self, replace: bool) -> Self {
        BindOptions {
            replace_stale: replace,
            ..self
        }
    }
}

/// The socket file a bind created, identified by device and inode so that a
/// file someone else put at the same path later is never removed.
#[derive(Debug)]
pub(crate) struct OwnedPath {
    path: PathBuf,
    dev: u64,
    ino: u64,
    /// Held for its drop, which runs after the file is removed.
    _dirs: CreatedDirs,
}

/// Directories a bind created for its socket file, mode 0700; removed on
/// drop, deepest first, when empty.
#[derive(Debug, Default)]
struct CreatedDirs {
    /// Outermost first.
    dirs: Vec<PathBuf>,
}

impl CreatedDirs {
    /// Creates the missing ancestors of `path`, each 0700 whatever the
    /// umask: only the owner can enter them, so only the owner can reach a
    /// socket inside.
    fn create_parents_of(path: &Path) -> io::Result<CreatedDirs> {
        let mut missing = Vec::new();
        let mut dir = path.parent();
        while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
            match std::fs::symlink_metadata(d) {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(d.to_path_buf()),
                Err(e) => return Err(e),
            }
            dir = d.parent();
        }
        let mut created = CreatedDirs::default();
        for d in missing.into_iter().rev() {
            match std::fs::DirBuilder::new().mode(0o700).create(&d) {
                Ok(()) => {
                    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))?;
                    created.dirs.push(d);
                }
                // Made by someone else meanwhile: theirs, not ours to remove.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        Ok(created)
    }
}

impl Drop for CreatedDirs {
    fn drop(&mut self) {
        for d in self.dirs.iter().rev() {
            // Fails, harmlessly, when someone put something else there.
            let _ = std::fs::remove_dir(d);
        }
    }
}

impl OwnedPath {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Gives up ownership: the file stays.
    pub(crate) fn release(self) {
        std::mem::forget(self);
    }
}

impl Drop for OwnedPath {
    fn drop(&mut self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if meta.file_type().is_socket() && meta.dev() == self.dev && meta.ino() == self.ino {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Binds `fd` (a fresh socket of type `ty`) to `addr`. For a path, the file
/// gets `opts.mode` exactly, a stale file is replaced when allowed, and the
/// created file is returned for removal on drop.
pub(crate) fn bind(
    fd: BorrowedFd<'_>,
    ty: SockType,
    addr: &Address,
    opts: &BindOptions,
) -> io::Result<Option<OwnedPath>> {
    let sockaddr = addr.to_sockaddr()?;
    let Address::Path(path) = addr else {
        return match socket::bind(fd.as_raw_fd(), &sockaddr) {
            Err(Errno::EADDRINUSE) => Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("abstract name {addr} is in use"),
            )),
            other => Ok(other.map(|()| None)?),
        };
    };
    let dirs = CreatedDirs::create_parents_of(path)?;
    let mode = Mode::from_bits_truncate(opts.mode);
    // Linux creates the file with the socket inode's mode masked by the
    // umask, so setting the mode first means the file never exists with more
    // permissions than asked for. The chmod after the bind then restores
    // bits the umask took away.
    fchmod(fd, mode)?;
    let mut replaced = false;
    loop {
        match socket::bind(fd.as_raw_fd(), &sockaddr) {
            Ok(()) => break,
            Err(Errno::EADDRINUSE) if opts.replace_stale && !replaced => {
                remove_if_stale(path, ty)?;
                replaced = true;
            }
            Err(Errno::EADDRINUSE) => {
                return Err(in_use_error(path)?);
            }
            Err(e) => return Err(e.into()),
        }
    }
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.file_type().is_socket() {
        return Err(TransportError::NotASocket { path: path.clone() }.into());
    }
    let owned = OwnedPath {
        path: path.clone(),
        dev: meta.dev(),
        ino: meta.ino(),
        _dirs: dirs,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(opts.mode))?;
    Ok(Some(owned))
}

/// The error for a path already bound: not a socket, or a live one.
fn in_use_error(path: &Path) -> io::Result<io::Error> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_socket() {
        Ok(TransportError::AddressInUse {
            path: path.to_path_buf(),
        }
        .into())
    } else {
        Ok(TransportError::NotASocket {
            path: path.to_path_buf(),
        }
        .into())
    }
}

/// Removes the socket file at `path` if nothing is bound to it any more.
///
/// A file that is not a socket is an error and stays. Liveness is tested by
/// connecting: `ECONNREFUSED` means stale; success, `EAGAIN` (a full backlog)
/// or `EPROTOTYPE` (a live socket of another type) mean in use. A live
/// listener sees the probe as one connection closed at once.
fn remove_if_stale(path: &Path, ty: SockType) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()), // gone meanwhile: retry the bind
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(TransportError::NotASocket {
            path: path.to_path_buf(),
        }
        .into());
    }
    let probe = sys::socket(ty, true)?;
    let sockaddr = Address::Path(path.to_path_buf()).to_sockaddr()?;
    match socket::connect(probe.as_fd().as_raw_fd(), &sockaddr) {
        Err(Errno::ECONNREFUSED) => {
            // Remove it only if it is still the file we looked at.
            let now = std::fs::symlink_metadata(path)?;
            if now.dev() == meta.dev() && now.ino() == meta.ino() && now.file_type().is_socket() {
                std::fs::remove_file(path)?;
            }
            Ok(())
        }
        Err(Errno::ENOENT) => Ok(()),
        Ok(()) | Err(Errno::EAGAIN | Errno::EPROTOTYPE) => Err(TransportError::AddressInUse {
            path: path.to_path_buf(),
        }
        .into()),
        Err(e) => Err(e.into()),
    }
}
