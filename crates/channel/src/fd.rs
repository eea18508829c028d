//! File descriptors as message fields.

use std::fmt;
use std::fs::File;
use std::io::{PipeReader, PipeWriter};
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};

use courier_transport::{DatagramSocket, Listener, SeqPacketSocket};
use nix::sys::socket::{self, sockopt};
use nix::sys::stat::{fstat, SFlag};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::fdtable;

/// A type that owns an fd and can travel as one: what [`Fd<T>`] and
/// [`as_fd`](crate::as_fd) fields hold.
///
/// On receipt, [`from_fd`](Self::from_fd) checks what it can: a socket type
/// checks the socket's type, a pipe end checks it is a FIFO. A refused fd is
/// closed and the message fails with
/// [`ChannelError::Refused`](crate::ChannelError::Refused).
pub trait FdType: AsFd + Sized {
    /// Adopts a received fd, or says why not.
    ///
    /// # Errors
    ///
    /// A description of the mismatch; the fd is closed.
    fn from_fd(fd: OwnedFd) -> Result<Self, String>;
}

impl FdType for OwnedFd {
    fn from_fd(fd: OwnedFd) -> Result<Self, String> {
        Ok(fd)
    }
}

impl FdType for File {
    fn from_fd(fd: OwnedFd) -> Result<Self, String> {
        Ok(File::from(fd))
    }
}

fn check_fifo(fd: &OwnedFd) -> Result<(), String> {
    let st = fstat(fd).map_err(|e| format!("fstat failed: {e}"))?;
    if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFIFO {
        return Err("expected a pipe, got another kind of file".into());
    }
    Ok(())
}

impl FdType for PipeReader {
    fn from_fd(fd: OwnedFd) -> Result<Self, String> {
        check_fifo(&fd)?;
        Ok(PipeReader::from(fd))
    }
}

impl FdType for PipeWriter {
    fn from_fd(fd: OwnedFd) -> Result<Self, String> {
        check_fifo(&fd)?;
        Ok(PipeWriter::from(fd))
    }
}

fn check_std_socket(fd: &OwnedFd, want: i32, listening: bool) -> Result<(), String> {
    let found = courier_transport::unix_socket_type(fd)
        .map_err(|e| format!("expected an AF_UNIX socket: {e}"))?;
    if found != want {
        return Err(format!(
            "expected an AF_UNIX socket of type {want}, got type {found}"
        ));
    }
    if listening != socket::getsockopt(fd, sockopt::AcceptConn).unwrap_or(false) {
        let want = if listening {
            "a listening socket"
        } else {
            "a connected or unbound socket"
        };
        return Err(format!("expected {want}"));
    }
    Ok(())
}

macro_rules! std_unix_socket {
    ($ty:ty, $kind:expr, $listening:expr) => {
        impl FdType for $ty {
            fn from_fd(fd: OwnedFd) -> Result<Self, String> {
                check_std_socket(&fd, $kind, $listening)?;
                Ok(<$ty>::from(fd))
            }
        }
    };
}

std_unix_socket!(UnixStream, nix::libc::SOCK_STREAM, false);
std_unix_socket!(UnixDatagram, nix::libc::SOCK_DGRAM, false);
std_unix_socket!(UnixListener, nix::libc::SOCK_STREAM, true);

macro_rules! courier_socket {
    ($ty:ty) => {
        impl FdType for $ty {
            fn from_fd(fd: OwnedFd) -> Result<Self, String> {
                <$ty>::try_from(fd).map_err(|e| format!("{e}: {}", e.error()))
            }
        }
    };
}

courier_socket!(SeqPacketSocket);
courier_socket!(DatagramSocket);
courier_socket!(Listener);

/// A message field that travels as a file descriptor.
///
/// The body holds an index into the message's fd table; the fd itself goes
/// as SCM_RIGHTS. Sending moves the fd: the sender's copy is closed once the
/// send succeeds (a failed send hands the value back with it).
///
/// ```
/// use std::io::{Read, Write};
/// use courier_channel::Fd;
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Job { name: String, output: Fd<std::io::PipeWriter> }
///
/// let (tx, rx) = courier_channel::channel::<Job>()?;
/// let (mut reader, writer) = std::io::pipe()?;
/// tx.send(Job { name: "report".into(), output: Fd::new(writer) }).unwrap();
///
/// let mut job = rx.recv().unwrap();
/// writeln!(job.output, "done: {}", job.name)?;
/// drop(job);
/// let mut text = String::new();
/// reader.read_to_string(&mut text)?;
/// assert_eq!(text, "done: report\n");
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Fd<T: FdType = OwnedFd>(T);

impl<T: FdType> Fd<T> {
    /// Wraps `inner` for sending.
    pub fn new(inner: T) -> Self {
        Fd(inner)
    }

    /// The wrapped value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T: FdType> From<T> for Fd<T> {
    fn from(inner: T) -> Self {
        Fd(inner)
    }
}

impl<T: FdType> Deref for Fd<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: FdType> DerefMut for Fd<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl<T: FdType> AsFd for Fd<T> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl<T: FdType> fmt::Debug for Fd<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Fd({})",
            std::os::fd::AsRawFd::as_raw_fd(&self.0.as_fd())
        )
    }
}

impl<T: FdType> Serialize for Fd<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        as_fd::serialize(&self.0, s)
    }
}

impl<'de, T: FdType> Deserialize<'de> for Fd<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        as_fd::deserialize(d).map(Fd)
    }
}

/// Serialize a field of any [`FdType`] (`File`, `OwnedFd`, `UnixStream`,
/// courier's sockets, ...) as an fd, without the [`Fd`] wrapper:
/// `#[serde(with = "courier_channel::as_fd")]`.
///
/// ```
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Open {
///     #[serde(with = "courier_channel::as_fd")]
///     file: std::fs::File,
/// }
/// let (tx, rx) = courier_channel::channel::<Open>()?;
/// tx.send(Open { file: std::fs::File::open("/dev/null")? }).unwrap();
/// let open = rx.recv().unwrap();
/// use std::os::unix::fs::FileTypeExt;
/// assert!(open.file.metadata()?.file_type().is_char_device());
/// # Ok::<(), std::io::Error>(())
/// ```
pub mod as_fd {
    use super::*;

    /// Serializes `value`'s fd as an index into the message's fd table.
    ///
    /// # Errors
    ///
    /// Outside a courier send (an fd cannot be written to JSON, say).
    pub fn serialize<T: AsFd, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        let index = fdtable::push(value.as_fd()).map_err(serde::ser::Error::custom)?;
        s.serialize_u32(index)
    }

    /// Takes the fd at the serialized index from the message's fd table.
    ///
    /// # Errors
    ///
    /// An index out of range or used twice, or an fd `T` refuses.
    pub fn deserialize<'de, T: FdType, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        let index = u32::deserialize(d)?;
        let fd = fdtable::take(index).map_err(|()| de::Error::custom("bad fd index"))?;
        T::from_fd(fd).map_err(|reason| {
            fdtable::refuse(reason);
            de::Error::custom("fd refused")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn std_socket_fields_check_what_arrives() {
        let (stream, _peer) = UnixStream::pair().unwrap();
        assert!(UnixStream::from_fd(OwnedFd::from(stream)).is_ok());
        let (seq, _peer) = SeqPacketSocket::pair().unwrap();
        let err = UnixStream::from_fd(OwnedFd::from(seq)).unwrap_err();
        assert!(err.contains("type"), "{err}");
        let (stream, _peer) = UnixStream::pair().unwrap();
        let err = UnixListener::from_fd(OwnedFd::from(stream)).unwrap_err();
        assert!(err.contains("listening"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(dir.path().join("l.sock")).unwrap();
        assert!(UnixListener::from_fd(OwnedFd::from(listener)).is_ok());
        let file: OwnedFd = File::open("/dev/null").unwrap().into();
        assert!(UnixDatagram::from_fd(file).unwrap_err().contains("AF_UNIX"));
        let file: OwnedFd = File::open("/dev/null").unwrap().into();
        assert!(PipeReader::from_fd(file).unwrap_err().contains("pipe"));
    }
}
