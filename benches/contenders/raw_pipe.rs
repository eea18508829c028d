//! Raw pipes: the child's stdin and stdout, plain `write`/`read`, the
//! baseline for courier's pipe transport.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::process::{ChildStdin, ChildStdout, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};

use super::{
    read_exact_or_eof, write_all, write_nosignal, Cmd, Contender, Kind, Payloads, Reaped, CMD_LEN,
};

/// The pipe capacity asked for, as courier does (halved while the kernel
/// refuses, as past `pipe-user-pages-soft`).
pub const PIPE_SIZE: usize = 1 << 20;

/// Raises the capacity of the pipe behind `fd` towards [`PIPE_SIZE`];
/// returns what it got.
pub fn raise_pipe_size(fd: impl AsFd) -> usize {
    let mut ask = PIPE_SIZE;
    loop {
        match fcntl(fd.as_fd(), FcntlArg::F_SETPIPE_SZ(ask as i32)) {
            Ok(got) => return got as usize,
            Err(Errno::EPERM | Errno::EBUSY) if ask > 4096 => ask /= 2,
            Err(e) => panic!("F_SETPIPE_SZ: {e}"),
        }
    }
}

/// The capacity a new pipe gets from [`raise_pipe_size`] here.
pub fn probe_capacity() -> usize {
    let (r, _w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe2");
    raise_pipe_size(&r)
}

/// The parent side.
pub struct RawPipe {
    to: ChildStdin,
    from: ChildStdout,
    buf: Vec<u8>,
    payloads: Payloads<Vec<u8>>,
    child: Reaped,
}

impl RawPipe {
    /// Spawns the child with two pipes as its stdin and stdout.
    pub fn start() -> Self {
        let mut child = super::child_command("raw-pipe")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn raw pipe child");
        let to = child.stdin.take().unwrap();
        let from = child.stdout.take().unwrap();
        raise_pipe_size(&to);
        raise_pipe_size(&from);
        RawPipe {
            to,
            from,
            buf: super::receive_buffer(),
            payloads: Payloads::default(),
            child: Reaped(child),
        }
    }
}

impl Contender for RawPipe {
    fn kind(&self) -> Kind {
        Kind::RawPipe
    }

    fn rtt_small(&mut self, iters: u64) -> Duration {
        write_all(
            &mut self.to,
            &Cmd::Echo {
                size: 8,
                count: iters,
            }
            .encode(),
        );
        let mut word = [0u8; 8];
        let start = Instant::now();
        for i in 0..iters {
            write_all(&mut self.to, &i.to_le_bytes());
            assert!(read_exact_or_eof(&mut self.from, &mut word), "child gone");
            assert_eq!(u64::from_le_bytes(word), i);
        }
        start.elapsed()
    }

    fn rtt_bytes(&mut self, size: usize, iters: u64) -> Duration {
        write_all(&mut self.to, &Cmd::Echo { size, count: iters }.encode());
        let payload = self.payloads.get(size, |v| v);
        let start = Instant::now();
        for _ in 0..iters {
            write_all(&mut self.to, payload);
            assert!(
                read_exact_or_eof(&mut self.from, &mut self.buf[..size]),
                "child gone"
            );
        }
        let elapsed = start.elapsed();
        assert_eq!(self.buf[size - 1], payload[size - 1]);
        elapsed
    }

    fn rtt_small_nosignal(&mut self, iters: u64) -> Option<Duration> {
        write_all(&mut self.to, &Cmd::EchoNoSignal { count: iters }.encode());
        let mut word = [0u8; 8];
        let start = Instant::now();
        for i in 0..iters {
            write_nosignal(self.to.as_fd(), &i.to_le_bytes());
            assert!(read_exact_or_eof(&mut self.from, &mut word), "child gone");
            assert_eq!(u64::from_le_bytes(word), i);
        }
        Some(start.elapsed())
    }

    fn rtt_fds(&mut self, _fds: usize, _iters: u64) -> Duration {
        unreachable!("pipes carry no fds")
    }

    fn tput(&mut self, size: usize, count: u64) -> Duration {
        write_all(&mut self.to, &Cmd::Sink { size, count }.encode());
        let payload = self.payloads.get(size, |v| v);
        let start = Instant::now();
        for _ in 0..count {
            write_all(&mut self.to, payload);
        }
        let mut ack = [0u8; 8];
        assert!(read_exact_or_eof(&mut self.from, &mut ack), "child gone");
        let elapsed = start.elapsed();
        assert_eq!(u64::from_le_bytes(ack), count);
        elapsed
    }

    fn pids(&self) -> Vec<u32> {
        vec![self.child.0.id()]
    }
}

/// The child: unbuffered `File`s over copies of stdin and stdout (std's
/// `Stdin` would add a buffer and a copy), commands until end of stream.
pub fn child() {
    let mut input = File::from(super::stdin_fd());
    let out: OwnedFd = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .expect("dup stdout");
    let mut output = File::from(out);
    let mut buf = super::receive_buffer();
    let mut cmd = [0u8; CMD_LEN];
    while read_exact_or_eof(&mut input, &mut cmd) {
        match Cmd::decode(&cmd) {
            Cmd::Echo { size, count } => {
                for _ in 0..count {
                    if !read_exact_or_eof(&mut input, &mut buf[..size]) {
                        return;
                    }
                    write_all(&mut output, &buf[..size]);
                }
            }
            Cmd::Sink { size, count } => {
                for _ in 0..count {
                    if !read_exact_or_eof(&mut input, &mut buf[..size]) {
                        return;
                    }
                }
                write_all(&mut output, &count.to_le_bytes());
            }
            Cmd::EchoNoSignal { count } => {
                let mut word = [0u8; 8];
                for _ in 0..count {
                    if !read_exact_or_eof(&mut input, &mut word) {
                        return;
                    }
                    write_nosignal(output.as_fd(), &word);
                }
            }
            Cmd::EchoFds { .. } => panic!("pipes carry no fds"),
        }
    }
}
