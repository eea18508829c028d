//! AF_UNIX addresses as types: a filesystem path, a Linux abstract name, or
//! unnamed.

use std::fmt;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::sys::socket::UnixAddr;

use crate::TransportError;

/// The size of `sun_path` in `struct sockaddr_un` on Linux.
const SUN_PATH_LEN: usize = 108;

/// An AF_UNIX socket address.
///
/// # Platform-specific behavior
///
/// [`Address::Abstract`] exists on Linux (and Android) only.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Address {
    /// A socket file in the filesystem. Connecting needs write permission on
    /// the file and search permission on every directory above it.
    Path(PathBuf),
    /// A Linux abstract-namespace name: no file, no permission check, gone
    /// when the last socket bound to it closes.
    Abstract(AbstractName),
    /// No name: a socketpair end, or a socket that never bound.
    Unnamed,
}

impl Address {
    /// The filesystem path, if this is a path address.
    pub fn as_path(&self) -> Option<&Path> {
        match self {
            Address::Path(p) => Some(p),
            _ => None,
        }
    }

    /// The abstract name, if this is an abstract address.
    pub fn as_abstract(&self) -> Option<&AbstractName> {
        match self {
            Address::Abstract(n) => Some(n),
            _ => None,
        }
    }

    /// Whether this is the unnamed address.
    pub fn is_unnamed(&self) -> bool {
        matches!(self, Address::Unnamed)
    }

    /// The kernel form of this address, for bind, connect and sendto.
    pub(crate) fn to_sockaddr(&self) -> io::Result<UnixAddr> {
        match self {
            Address::Path(path) => {
                let len = path.as_os_str().len();
                if len >= SUN_PATH_LEN {
                    return Err(TransportError::PathTooLong {
                        len,
                        max: SUN_PATH_LEN - 1,
                    }
                    .into());
                }
                Ok(UnixAddr::new(path.as_path())?)
            }
            Address::Abstract(name) => Ok(UnixAddr::new_abstract(name.as_bytes())?),
            Address::Unnamed => Err(TransportError::UnnamedAddress.into()),
        }
    }

    /// The address the kernel reported.
    pub(crate) fn from_sockaddr(addr: &UnixAddr) -> Address {
        if let Some(path) = addr.path() {
            Address::Path(path.to_path_buf())
        } else if let Some(name) = addr.as_abstract() {
            Address::Abstract(AbstractName(name.to_vec()))
        } else {
            Address::Unnamed
        }
    }

    /// Parses a `sockaddr_un` whose first `len` bytes the kernel filled in.
    pub(crate) fn from_raw(addr: &nix::libc::sockaddr_un, len: usize) -> Address {
        let path_len = len.saturating_sub(std::mem::size_of::<nix::libc::sa_family_t>());
        let path_len = path_len.min(SUN_PATH_LEN);
        if path_len == 0 || i32::from(addr.sun_family) != nix::libc::AF_UNIX {
            return Address::Unnamed;
        }
        // `c_char` is i8 or u8 depending on the target; reinterpret the bits.
        let bytes: Vec<u8> = addr.sun_path[..path_len].iter().map(|&c| c as u8).collect();
        if bytes[0] == 0 {
            Address::Abstract(AbstractName(bytes[1..].to_vec()))
        } else {
            let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
            Address::Path(PathBuf::from(std::ffi::OsStr::from_bytes(&bytes[..end])))
        }
    }
}

impl From<AbstractName> for Address {
    fn from(name: AbstractName) -> Self {
        Address::Abstract(name)
    }
}

impl From<PathBuf> for Address {
    fn from(path: PathBuf) -> Self {
        Address::Path(path)
    }
}

impl From<&Path> for Address {
    fn from(path: &Path) -> Self {
        Address::Path(path.to_path_buf())
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Path(p) => write!(f, "{}", p.display()),
            Address::Abstract(n) => write!(f, "{n}"),
            Address::Unnamed => f.write_str("(unnamed)"),
        }
    }
}

/// A Linux abstract-namespace socket name: an exact byte string of at most
/// [`AbstractName::MAX_LEN`] bytes.
///
/// The name is exactly these bytes: courier adds no trailing NUL and pads
/// nothing, so `b"svc"` and `b"svc\0"` are two different names.
///
/// Abstract names have no permission check: anyone in the same network
/// namespace can connect. Use [`AbstractName::random`] for names that cannot be
/// guessed, and check the peer's credentials.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AbstractName(Vec<u8>);

impl AbstractName {
    /// The longest name that fits `sun_path` after the leading NUL.
    pub const MAX_LEN: usize = SUN_PATH_LEN - 1;

    /// The name made of exactly `bytes`.
    ///
    /// # Errors
    ///
    /// [`TransportError::NameTooLong`] when `bytes` is longer than
    /// [`AbstractName::MAX_LEN`].
    pub fn new(bytes: impl Into<Vec<u8>>) -> io::Result<Self> {
        let bytes = bytes.into();
        if bytes.len() > Self::MAX_LEN {
            return Err(TransportError::NameTooLong {
                len: bytes.len(),
                max: Self::MAX_LEN,
            }
            .into());
        }
        Ok(AbstractName(bytes))
    }

    /// An unguessable name: `courier-` followed by 128 random bits from the
    /// kernel's CSPRNG, in hex.
    ///
    /// # Errors
    ///
    /// When `/dev/urandom` cannot be read.
    pub fn random() -> io::Result<Self> {
        let mut bits = [0u8; 16];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut bits)?;
        let mut name = b"courier-".to_vec();
        for b in bits {
            name.extend_from_slice(format!("{b:02x}").as_bytes());
        }
        Ok(AbstractName(name))
    }

    /// The name's bytes (without the leading NUL the kernel uses).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for AbstractName {
    /// Shows the name as `@name`, the way `ss` and `/proc/net/unix` do, with
    /// bytes outside printable ASCII escaped as `\xNN`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("@")?;
        for &b in &self.0 {
            if b.is_ascii_graphic() || b == b' ' {
                write!(f, "{}", b as char)?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abstract_names_are_exact_and_bounded() {
        assert!(AbstractName::new(vec![b'a'; 107]).is_ok());
        let err = AbstractName::new(vec![b'a'; 108]).unwrap_err();
        assert!(matches!(
            TransportError::of(&err),
            Some(TransportError::NameTooLong { len: 108, max: 107 })
        ));
        assert_ne!(
            AbstractName::new(*b"svc").unwrap(),
            AbstractName::new(*b"svc\0").unwrap()
        );
        assert_eq!(AbstractName::new(*b"a\0b").unwrap().to_string(), "@a\\x00b");
    }

    #[test]
    fn random_names_differ() {
        let a = AbstractName::random().unwrap();
        let b = AbstractName::random().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_bytes().len(), 8 + 32);
    }

    #[test]
    fn long_paths_are_refused_with_the_limit() {
        let long = Address::Path(PathBuf::from("/".repeat(108)));
        let err = long.to_sockaddr().unwrap_err();
        assert!(matches!(
            TransportError::of(&err),
            Some(TransportError::PathTooLong { len: 108, max: 107 })
        ));
        assert!(Address::Path(PathBuf::from("/".repeat(107)))
            .to_sockaddr()
            .is_ok());
        assert!(Address::Unnamed.to_sockaddr().is_err());
    }
}
