//! # courier-pipe: courier's frames over pipes and byte streams
//!
//! The fallback for hosts that only have byte streams: a sandbox that
//! forbids `socket()`, a platform without `SOCK_SEQPACKET`, a plugin that is
//! only handed its stdin and stdout. [`PipeTransport`] implements
//! courier-transport's [`FrameTransport`](courier_transport::FrameTransport),
//! so courier's typed channels run over it unchanged, minus fd passing.
//!
//! ```
//! use courier_channel::{Config, Endpoint};
//!
//! let (a, b) = courier_pipe::pair()?;
//! let config = Config::new().protocol("doc", 1);
//! let other = std::thread::spawn(move || {
//!     let ep = Endpoint::<u64, String>::handshake_transport(Box::new(b), config).unwrap();
//!     let text = ep.recv().unwrap();
//!     ep.send(text.len() as u64).unwrap();
//! });
//! let ep = Endpoint::<String, u64>::handshake_transport(Box::new(a), config)?;
//! ep.send("twelve bytes".to_string()).unwrap();
//! assert_eq!(ep.recv().unwrap(), 12);
//! other.join().unwrap();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Where it runs
//!
//! * [`pair`]: two new pipes (`pipe2(O_CLOEXEC)`), one per direction.
//! * [`PipeTransport::from_child`] / [`PipeTransport::stdio`]: a child's
//!   stdin and stdout, seen from the parent and from the child.
//! * [`PipeTransport::new`] / [`PipeTransport::from_stream`]: any byte
//!   stream with an fd (pipe ends, stream sockets, ttys). A stream without
//!   an fd (in-memory, TLS) cannot be waited on with a deadline, so it is
//!   not supported.
//!
//! ## Framing
//!
//! Each frame is its length (`u32`, little-endian, never 0) and then its
//! bytes. The reader checks the length against the caller's maximum (the
//! channel's limit) before keeping anything: a frame above it is reported
//! at once as `TransportError::Truncated` (the channel's
//! `FrameError::TooLong`), and its bytes are read and dropped before the
//! next frame, so the stream stays in step; the memory a frame takes grows with the
//! bytes that really arrive, never up front to a claimed length. Partial
//! reads and writes are completed; a wait that times out inside a frame
//! keeps what was read for the next call. A stream that ends inside a frame
//! (a torn frame) is an error ([`std::io::ErrorKind::UnexpectedEof`]), never
//! a shorter value; end of stream between frames is the clean end
//! (`Disconnected` for the channel).
//!
//! ## Writers never interleave, and SIGPIPE never kills
//!
//! See the `writer` module: a frame is written whole while the writer holds
//! its end's lock, so frames larger than `PIPE_BUF` from several threads
//! never interleave (a pipe end belongs to one process); and every write
//! goes through [`courier_transport::pipe::write_vectored`], which cannot
//! raise SIGPIPE, so a reader that went away is a `Disconnected` error for
//! the sender, whatever the process's SIGPIPE disposition.
//!
//! ## Waiting
//!
//! `try_` and deadline forms work without `O_NONBLOCK` (which would change
//! stdin/stdout for every process sharing them): reads wait with `poll`
//! (and stop at the deadline even while bytes keep coming; what was read is
//! kept); a write never starts unless the whole frame goes in without
//! waiting: a frame of up to 4 KiB once a pipe page is free, a larger one
//! once the pipe is empty. A frame larger than the pipe itself is refused
//! by `try_` sends, and started by deadline sends once the pipe is empty;
//! if the deadline passes inside it, the channel is broken (the peer sees a
//! torn frame) rather than the send waiting on. See the `writer` module.

//! ## What a pipe cannot do
//!
//! No fds: a value that holds one is refused at send
//! (`ChannelError::FdsUnsupported`), handed back whole, never sent without
//! them. No credentials. No race-proof shutdown: dropping a channel half
//! releases its pipe end (as closing would; the other half keeps working),
//! but a stray copy of a pipe end in another process delays end of stream
//! until it closes.
//!
//! Pipes are raised towards 1 MiB (`F_SETPIPE_SZ`, within
//! `/proc/sys/fs/pipe-max-size` and the user's pipe budget).

#![deny(unsafe_code)]
#![deny(missing_docs)]

mod capacity;
mod io;
mod reader;
mod transport;
mod writer;

pub use capacity::TARGET as TARGET_CAPACITY;
pub use transport::{pair, PipeTransport};

/// The length of a frame's length prefix.
pub const PREFIX_LEN: usize = 4;

/// Checks that `fd` is a pipe (or FIFO) end open for reading (`reading`)
/// or for writing: what a process that inherited pipe ends verifies
/// before it uses them.
///
/// # Errors
///
/// [`std::io::ErrorKind::InvalidInput`] when it is not.
pub fn check_pipe_end(fd: std::os::fd::BorrowedFd<'_>, reading: bool) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, what.to_owned());
    if !capacity::is_pipe(fd)? {
        return Err(invalid("not a pipe"));
    }
    let mode = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?) & OFlag::O_ACCMODE;
    let want = if reading {
        OFlag::O_RDONLY
    } else {
        OFlag::O_WRONLY
    };
    // A FIFO opened read-write serves either direction.
    if mode != want && mode != OFlag::O_RDWR {
        return Err(invalid(if reading {
            "a pipe end not open for reading"
        } else {
            "a pipe end not open for writing"
        }));
    }
    Ok(())
}

mod assertions {
    use static_assertions::assert_impl_all;

    assert_impl_all!(super::PipeTransport: courier_transport::FrameTransport, Send, Sync, std::fmt::Debug);
}
