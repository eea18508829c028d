//! [`PipeTransport`]: frames over a reading fd and a writing fd.

use std::fmt;
use std::io::{self, IoSlice, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::process::Child;
use std::sync::{Mutex, PoisonError};

use courier_transport::{FrameTransport, Wait};
use nix::fcntl::OFlag;

use crate::capacity;
use crate::reader::Reader;
use crate::writer::Writer;

/// Length-prefixed frames over two byte streams: one to read, one to
/// write. Implements [`FrameTransport`], so courier's typed channels run
/// over it (`courier_channel::Endpoint::with_transport` or
/// `handshake_transport`).
///
/// On the wire each frame is its length as a `u32`, little-endian, then
/// the frame. See the crate docs for framing, limits, interleaving and
/// SIGPIPE.
///
/// ```
/// use std::io::IoSlice;
/// use courier_pipe::pair;
/// use courier_transport::{FrameTransport, Wait};
///
/// let (a, b) = pair()?;
/// a.send_frame(&[IoSlice::new(b"over a pipe")], &[], Wait::Block)?;
/// let mut buf = Vec::new();
/// let len = b.recv_frame(&mut buf, 1024, &mut Vec::new(), 0, Wait::Block)?;
/// assert_eq!(&buf[..len.unwrap()], b"over a pipe");
/// drop(a);
/// assert_eq!(b.recv_frame(&mut buf, 1024, &mut Vec::new(), 0, Wait::Block)?, None);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct PipeTransport {
    read_fd: OwnedFd,
    reader: Mutex<Reader>,
    writer: Writer,
}

/// Two transports connected by two new pipes (`pipe2(O_CLOEXEC)`), one per
/// direction, each raised towards [`capacity::TARGET`] (1 MiB).
///
/// # Errors
///
/// When the pipes cannot be made (out of fds).
pub fn pair() -> io::Result<(PipeTransport, PipeTransport)> {
    let (a_reads, b_writes) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let (b_reads, a_writes) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    Ok((
        PipeTransport::new(a_reads, a_writes)?,
        PipeTransport::new(b_reads, b_writes)?,
    ))
}

impl PipeTransport {
    /// Frames read from `reader` and written to `writer`: pipe ends, a
    /// child's stdout and stdin, the halves of a stream socket, a tty —
    /// any byte stream with an fd (waiting needs one to poll). Pipes are
    /// raised towards 1 MiB where the system allows.
    ///
    /// The fds stay as they are: blocking, and with their close-on-exec
    /// flag (pass close-on-exec fds; std's are).
    ///
    /// # Errors
    ///
    /// When `fstat` or the pipe-size `fcntl` fails.
    pub fn new(reader: impl Into<OwnedFd>, writer: impl Into<OwnedFd>) -> io::Result<Self> {
        let read_fd = reader.into();
        let write_fd = writer.into();
        if capacity::is_pipe(read_fd.as_fd())? {
            capacity::raise(read_fd.as_fd(), capacity::TARGET)?;
        }
        let write_capacity = if capacity::is_pipe(write_fd.as_fd())? {
            Some(capacity::raise(write_fd.as_fd(), capacity::TARGET)?)
        } else {
            None
        };
        Ok(PipeTransport {
            read_fd,
            reader: Mutex::new(Reader::default()),
            writer: Writer::new(write_fd, write_capacity),
        })
    }

    /// Frames over one bidirectional stream (a `UnixStream`, a
    /// `TcpStream`): it is duplicated (close-on-exec) for the two
    /// directions.
    ///
    /// # Errors
    ///
    /// When the fd cannot be duplicated.
    pub fn from_stream(stream: impl Into<OwnedFd>) -> io::Result<Self> {
        let fd = stream.into();
        let reader = fd.try_clone()?;
        Self::new(reader, fd)
    }

    /// Frames over a child's stdout (read) and stdin (written), taken from
    /// `child`: spawn it with `Stdio::piped()` for both.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] when the child's stdin or stdout is
    /// not piped (or was taken already).
    pub fn from_child(child: &mut Child) -> io::Result<Self> {
        let missing = |what| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the child's {what} is not piped (spawn it with Stdio::piped())"),
            )
        };
        let stdin = child.stdin.take().ok_or_else(|| missing("stdin"))?;
        let stdout = match child.stdout.take() {
            Some(stdout) => stdout,
            None => {
                child.stdin = Some(stdin);
                return Err(missing("stdout"));
            }
        };
        Self::new(stdout, stdin)
    }

    /// Frames over this process's own stdin (read) and stdout (written),
    /// for a process whose only channel is its stdio.
    ///
    /// stdin and stdout are taken over: the transport gets duplicates of
    /// fds 0 and 1 (close-on-exec), then fd 0 is pointed at `/dev/null` and
    /// fd 1 at stderr. A stray `println!` (or a child process inheriting
    /// stdio) then ends up on stderr instead of corrupting a frame. Call it
    /// once, early.
    ///
    /// # Errors
    ///
    /// When the fds cannot be duplicated or redirected.
    pub fn stdio() -> io::Result<Self> {
        io::stdout().flush()?;
        let stdin = io::stdin().as_fd().try_clone_to_owned()?;
        let stdout = io::stdout().as_fd().try_clone_to_owned()?;
        let null = std::fs::File::open("/dev/null")?;
        nix::unistd::dup2_stdin(&null)?;
        nix::unistd::dup2_stdout(io::stderr())?;
        Self::new(stdin, stdout)
    }

    /// The capacity of the pipe written to, when it is a pipe.
    pub fn capacity(&self) -> Option<usize> {
        self.writer.capacity()
    }
}

impl FrameTransport for PipeTransport {
    /// Byte streams carry no fds.
    fn supports_fds(&self) -> bool {
        false
    }

    /// `u32::MAX`: the length prefix's range.
    fn max_frame_len(&self) -> io::Result<usize> {
        Ok(u32::MAX as usize)
    }

    fn send_frame(
        &self,
        frame: &[IoSlice<'_>],
        fds: &[BorrowedFd<'_>],
        wait: Wait,
    ) -> io::Result<()> {
        if !fds.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} file descriptors cannot travel over a byte stream",
                    fds.len()
                ),
            ));
        }
        self.writer.send(frame, wait)
    }

    /// A frame longer than `max_len` is reported as
    /// [`TransportError::Truncated`](courier_transport::TransportError::Truncated)
    /// as soon as its length prefix is read; the next calls read and drop
    /// its bytes first, so the stream stays in step;
    /// memory grows only with the bytes that really arrive. A stream that
    /// ends inside a frame is an [`io::ErrorKind::UnexpectedEof`] error, not
    /// a shorter frame. `max_fds` is ignored: no fd ever arrives.
    fn recv_frame(
        &self,
        buf: &mut Vec<u8>,
        max_len: usize,
        _fds: &mut Vec<OwnedFd>,
        _max_fds: usize,
        wait: Wait,
    ) -> io::Result<Option<usize>> {
        let mut reader = self.reader.lock().unwrap_or_else(PoisonError::into_inner);
        reader.recv(self.read_fd.as_fd(), buf, max_len, wait)
    }

    fn readable_fd(&self) -> BorrowedFd<'_> {
        self.read_fd.as_fd()
    }

    fn writable_fd(&self) -> BorrowedFd<'_> {
        self.writer.fd()
    }

    /// Pipes have no `shutdown(2)`; this does what closing would: `Write`
    /// releases the write end (the peer reads end of stream once the
    /// frames before it are read) and `Read` the read end (the peer's sends
    /// fail with `BrokenPipe`). The fd numbers stay valid (they then name
    /// `/dev/null`), and later sends fail with `BrokenPipe`, later receives
    /// end at once. A copy of the pipe end held by another process still
    /// keeps the pipe open: pipes have no race-proof shutdown.
    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            self.writer.shut_down()?;
        }
        if matches!(how, Shutdown::Read | Shutdown::Both) {
            courier_transport::pipe::detach(&self.read_fd)?;
        }
        Ok(())
    }
}

impl fmt::Debug for PipeTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipeTransport")
            .field("read_fd", &self.read_fd.as_raw_fd())
            .field("write_fd", &self.writer.fd().as_raw_fd())
            .field("capacity", &self.writer.capacity())
            .finish()
    }
}
