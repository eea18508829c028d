//! The contenders of `benches/compare.rs` and `benches/matrix.rs`, shared
//! so that both benches measure exactly the same code.
//!
//! Every contender is a parent side (in the bench process) and one or more
//! child processes: the bench binary itself, re-executed with
//! [`ROLE_ENV`] naming the child's role ([`run_child_if_asked`] runs it).
//! Children are started once, when a contender is made, and live until it
//! is dropped. Every child blocks only on its channel and exits at end of
//! stream, so none outlives the bench; the DGRAM child, whose socket has no
//! end of stream, watches a SEQPACKET companion instead.
//!
//! One file per family:
//! - [`raw_socket`]: a SEQPACKET socketpair driven with plain nix calls;
//! - [`raw_pipe`]: two pipes, plain `write`/`read`;
//! - [`raw_shm`]: a memfd ring mapped once in both processes, with
//!   SEQPACKET notifications and credits;
//! - [`transport`]: courier-transport's `SeqPacketSocket`;
//! - [`typed`]: courier's typed channel over SEQPACKET, DGRAM and pipes;
//! - [`ipc`]: servo's ipc-channel.
//!
//! What each measurement does is the same for all contenders:
//! - `rtt_small`: the parent sends a small message (a `u64`, or 8 raw
//!   bytes), the child echoes it;
//! - `rtt_bytes`: the same with a byte payload of `size` bytes, which the
//!   child receives into a buffer it owns and sends back;
//! - `rtt_fds`: an 8-byte message (a `u64` plus the fds, for the typed
//!   channel) carrying `n` fds; the child sends the same fds back and
//!   closes its copies, the parent closes what comes back;
//! - `tput`: the parent sends `count` payloads of `size` bytes, the child
//!   receives each into a buffer it owns and acknowledges once at the end.

// Each bench uses most, not all, of what is shared here.
#![allow(dead_code)]

pub mod ipc;
pub mod raw_pipe;
pub mod raw_shm;
pub mod raw_socket;
pub mod transport;
pub mod typed;

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// The environment variable naming a child's role.
pub const ROLE_ENV: &str = "COURIER_BENCH_ROLE";

/// Payload sizes of the matrix (and of the compare bench's size tables).
pub const SIZES: [usize; 6] = [8, 64, 4 << 10, 64 << 10, 1 << 20, 16 << 20];

/// Fd counts per message of the matrix (253 is the kernel's SCM_MAX_FD).
pub const FD_COUNTS: [usize; 4] = [0, 1, 64, 253];

/// The largest payload any contender is asked to move.
pub const MAX_SIZE: usize = 16 << 20;

/// The contenders, in table order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A SEQPACKET socketpair with plain nix `send`/`recv`/`sendmsg`/`recvmsg`.
    RawSeqPacket,
    /// Two pipes with plain `write`/`read`.
    RawPipe,
    /// A memfd ring set up once, notifications over SEQPACKET, pieces of
    /// at most 256 KiB.
    RawShm,
    /// The same with pieces of at most 2 MiB.
    RawShmLarge,
    /// courier-transport's `SeqPacketSocket`, used directly.
    Transport,
    /// courier's typed channel over SEQPACKET (the default).
    TypedSeqPacket,
    /// courier's typed channel over DGRAM.
    TypedDgram,
    /// courier's typed channel over two pipes.
    TypedPipe,
    /// servo's ipc-channel.
    IpcChannel,
}

impl Kind {
    /// Every contender, in table order.
    pub const ALL: [Kind; 9] = [
        Kind::RawSeqPacket,
        Kind::RawPipe,
        Kind::RawShm,
        Kind::RawShmLarge,
        Kind::Transport,
        Kind::TypedSeqPacket,
        Kind::TypedDgram,
        Kind::TypedPipe,
        Kind::IpcChannel,
    ];

    /// The name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Kind::RawSeqPacket => "raw SEQPACKET",
            Kind::RawPipe => "raw pipe",
            Kind::RawShm => "raw shm, 256K pieces",
            Kind::RawShmLarge => "raw shm, 2M pieces",
            Kind::Transport => "courier-transport",
            Kind::TypedSeqPacket => "typed SEQPACKET",
            Kind::TypedDgram => "typed DGRAM",
            Kind::TypedPipe => "typed pipes",
            Kind::IpcChannel => "ipc-channel",
        }
    }

    /// The id in criterion benchmark names (`rtt/<id>/...`).
    pub fn id(self) -> &'static str {
        match self {
            Kind::RawSeqPacket => "raw-seqpacket",
            Kind::RawPipe => "raw-pipe",
            Kind::RawShm => "raw-shm",
            Kind::RawShmLarge => "raw-shm-2m",
            Kind::Transport => "transport",
            Kind::TypedSeqPacket => "typed-seqpacket",
            Kind::TypedDgram => "typed-dgram",
            Kind::TypedPipe => "typed-pipe",
            Kind::IpcChannel => "ipc-channel",
        }
    }

    /// One line on how it works, for the docs.
    pub fn how(self) -> String {
        match self {
            Kind::RawSeqPacket => format!(
                "AF_UNIX SOCK_SEQPACKET socketpair, plain nix `send`/`recv` (MSG_NOSIGNAL), \
                 `sendmsg`/`recvmsg` with SCM_RIGHTS and MSG_CMSG_CLOEXEC for fds; \
                 SO_SNDBUF/SO_RCVBUF set to {} (the kernel doubles the request, capped by \
                 net.core.wmem_max: {} here); payloads split into {} packets; the \
                 receiver reads into one reused buffer.",
                human(raw_socket::SOCK_BUF),
                human(raw_socket::effective_send_buffer()),
                human(raw_socket::CHUNK)
            ),
            Kind::RawPipe => format!(
                "two pipes (the child's stdin and stdout), plain `write`/`read`, capacity \
                 raised with F_SETPIPE_SZ towards {} ({} here); the receiver reads into one \
                 reused buffer.",
                human(raw_pipe::PIPE_SIZE),
                human(raw_pipe::probe_capacity())
            ),
            Kind::RawShm | Kind::RawShmLarge => format!(
                "a memfd of {} mapped once in both processes (the fd passed once at setup, \
                 MAP_POPULATE), one {} ring per direction of variable-size slots; the sender \
                 copies each piece of at most {} into the next free stretch of the ring and \
                 sends a 24-byte notification over a SEQPACKET socket, the receiver copies it \
                 out into its own reused buffer and returns credits (once a quarter of the \
                 ring is owed, or piggybacked on its own notifications). No fds. Two \
                 contenders, one per piece size ({} and {}): which is faster depends on the \
                 machine, and the best raw path takes the faster where they differ (payloads \
                 larger than the small piece).",
                human(2 * raw_shm::RING),
                human(raw_shm::RING),
                human(match self {
                    Kind::RawShm => raw_shm::PIECES[0],
                    _ => raw_shm::PIECES[1],
                }),
                human(raw_shm::PIECES[0]),
                human(raw_shm::PIECES[1])
            ),
            Kind::Transport => format!(
                "courier-transport's `SeqPacketSocket` used directly: `send`/`recv`, and \
                 `send_msg`/`recv_with_fds` for fds (owned fds, stack control buffer, \
                 truncation checks); same {} packets and buffer sizes as raw SEQPACKET.",
                human(raw_socket::CHUNK)
            ),
            Kind::TypedSeqPacket => "courier's typed `Endpoint` from `Command::spawn_endpoint` / \
                 `from_env` (SEQPACKET, handshaken): `u64` messages, `Bytes` payloads sent \
                 with `send_ref` (above 64 KiB through the sender's shared ring, the 16 MiB \
                 ones streamed through it while the receiver decodes), fd messages an enum: \
                 `One { n: u64, fd: Fd<OwnedFd> }` for one fd, \
                 `Many { n: u64, fds: Vec<Fd<OwnedFd>> }` for other counts."
                .to_string(),
            Kind::TypedDgram => "the same typed `Endpoint`s made by \
                 `Config::new().datagram(true).endpoints()` in the parent, one end sent to \
                 the child inside a message over a spawned SEQPACKET endpoint (which also \
                 tells the child when the parent is gone)."
                .to_string(),
            Kind::TypedPipe => "the same typed `Endpoint`s over two pipes, from \
                 `spawn_endpoint_over(Transport::Pipe, ..)`; no fds."
                .to_string(),
            Kind::IpcChannel => "servo's ipc-channel 0.19: `IpcSender<u64>`/`IpcReceiver<u64>` \
                 for round trips, `ipc::bytes_channel` (`IpcBytesSender::send(&[u8])`) for \
                 payloads, connected through `IpcOneShotServer`; it cannot pass arbitrary \
                 fds."
                .to_string(),
        }
    }

    /// Whether it passes fds.
    pub fn passes_fds(self) -> bool {
        matches!(
            self,
            Kind::RawSeqPacket | Kind::Transport | Kind::TypedSeqPacket | Kind::TypedDgram
        )
    }

    /// Whether it is one of the raw baselines.
    pub fn is_raw(self) -> bool {
        matches!(
            self,
            Kind::RawSeqPacket | Kind::RawPipe | Kind::RawShm | Kind::RawShmLarge
        )
    }

    /// The raw baseline it is compared with in round-trip tables.
    pub fn baseline(self) -> Kind {
        match self {
            Kind::RawPipe | Kind::TypedPipe => Kind::RawPipe,
            Kind::RawShm => Kind::RawShm,
            Kind::RawShmLarge => Kind::RawShmLarge,
            _ => Kind::RawSeqPacket,
        }
    }

    /// Starts the contender: its children, connected and ready.
    pub fn start(self) -> Box<dyn Contender> {
        match self {
            Kind::RawSeqPacket => Box::new(raw_socket::RawSocket::start()),
            Kind::RawPipe => Box::new(raw_pipe::RawPipe::start()),
            Kind::RawShm => Box::new(raw_shm::RawShm::start(self, raw_shm::PIECES[0])),
            Kind::RawShmLarge => Box::new(raw_shm::RawShm::start(self, raw_shm::PIECES[1])),
            Kind::Transport => Box::new(transport::TransportSocket::start()),
            Kind::TypedSeqPacket => Box::new(typed::Typed::start(typed::Over::SeqPacket)),
            Kind::TypedDgram => Box::new(typed::Typed::start(typed::Over::Dgram)),
            Kind::TypedPipe => Box::new(typed::Typed::start(typed::Over::Pipe)),
            Kind::IpcChannel => Box::new(ipc::Ipc::start()),
        }
    }
}

/// One contender's parent side. Every method returns the wall time of the
/// whole exchange; callers divide.
pub trait Contender {
    /// Which contender this is.
    fn kind(&self) -> Kind;
    /// `iters` round trips of a small message (`u64`, or 8 raw bytes).
    fn rtt_small(&mut self, iters: u64) -> Duration;
    /// `iters` round trips of a `size`-byte payload.
    fn rtt_bytes(&mut self, size: usize, iters: u64) -> Duration;
    /// `iters` round trips of a small message whose writes cannot raise
    /// SIGPIPE, where that is a different call than [`rtt_small`]'s
    /// (raw pipes: `pwritev2` with `RWF_NOSIGNAL` instead of `write`).
    ///
    /// [`rtt_small`]: Contender::rtt_small
    fn rtt_small_nosignal(&mut self, iters: u64) -> Option<Duration> {
        let _ = iters;
        None
    }
    /// `iters` round trips of a message carrying `fds` fds each way.
    /// Only called when [`Kind::passes_fds`].
    fn rtt_fds(&mut self, fds: usize, iters: u64) -> Duration;
    /// `count` one-way payloads of `size` bytes, acknowledged once.
    fn tput(&mut self, size: usize, count: u64) -> Duration;
    /// The child processes, for pinning.
    fn pids(&self) -> Vec<u32>;
}

/// Runs this process's child role if [`ROLE_ENV`] names one; returns
/// whether it did (the bench's `main` then returns).
pub fn run_child_if_asked() -> bool {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return false;
    };
    let (family, mode) = role.split_once(':').unwrap_or((role.as_str(), ""));
    match family {
        "raw-seqpacket" => raw_socket::child(),
        "raw-pipe" => raw_pipe::child(),
        "raw-shm" => raw_shm::child(),
        "transport" => transport::child(),
        "typed" => typed::child(mode),
        "ipc" => ipc::child(mode),
        other => panic!("unknown bench child role {other:?}"),
    }
    true
}

/// A command for this bench binary in child role `role`.
pub fn child_command(role: &str) -> Command {
    let exe = std::env::current_exe().expect("the bench binary's path");
    let mut cmd = Command::new(exe);
    cmd.env(ROLE_ENV, role);
    cmd
}

/// Waits up to 5 s for `child` to exit (its channel was closed first), then
/// kills it. Never blocks longer.
pub fn reap(child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return,
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
    eprintln!("bench child {} did not exit; killing it", child.id());
    let _ = child.kill();
    let _ = child.wait();
}

/// A child process that is reaped (bounded) when dropped. Declare it after
/// the channel fields of a struct, so that they close first and the child
/// sees end of stream.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        reap(&mut self.0);
    }
}

// ---- the command protocol of the raw contenders --------------------------

/// What the parent asks a raw child to do next (raw SEQPACKET, raw pipe,
/// courier-transport; the shm ring has its own control messages).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmd {
    /// Echo `count` payloads of `size` bytes.
    Echo { size: usize, count: u64 },
    /// Receive `count` payloads of `size` bytes, then send an 8-byte ack.
    Sink { size: usize, count: u64 },
    /// Echo `count` 8-byte messages with `fds` fds each.
    EchoFds { fds: usize, count: u64 },
    /// Echo `count` 8-byte messages, writing with [`write_nosignal`].
    EchoNoSignal { count: u64 },
}

/// The encoded length of a [`Cmd`].
pub const CMD_LEN: usize = 24;

impl Cmd {
    /// 24 bytes: op, then two little-endian `u64`s.
    pub fn encode(self) -> [u8; CMD_LEN] {
        let (op, a, b) = match self {
            Cmd::Echo { size, count } => (1u64, size as u64, count),
            Cmd::Sink { size, count } => (2, size as u64, count),
            Cmd::EchoFds { fds, count } => (3, fds as u64, count),
            Cmd::EchoNoSignal { count } => (4, 8, count),
        };
        let mut out = [0u8; CMD_LEN];
        out[..8].copy_from_slice(&op.to_le_bytes());
        out[8..16].copy_from_slice(&a.to_le_bytes());
        out[16..].copy_from_slice(&b.to_le_bytes());
        out
    }

    /// The command in `bytes`; panics on anything else (only this bench
    /// writes to the child).
    pub fn decode(bytes: &[u8]) -> Cmd {
        assert_eq!(bytes.len(), CMD_LEN, "short command");
        let word = |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap());
        let (a, b) = (word(1), word(2));
        let size = usize::try_from(a).unwrap();
        assert!(size <= MAX_SIZE, "payload size {size} out of range");
        match word(0) {
            1 => Cmd::Echo { size, count: b },
            2 => Cmd::Sink { size, count: b },
            3 => Cmd::EchoFds {
                fds: size,
                count: b,
            },
            4 => Cmd::EchoNoSignal { count: b },
            op => panic!("unknown command {op}"),
        }
    }
}

// ---- payloads ------------------------------------------------------------

/// Payload buffers by size, built once (their pages touched outside any
/// timed region) and reused by every send.
#[derive(Default)]
pub struct Payloads<T> {
    made: Vec<(usize, T)>,
}

impl<T> Payloads<T> {
    /// The payload of `size` bytes, made by `make` the first time.
    pub fn get(&mut self, size: usize, make: impl FnOnce(Vec<u8>) -> T) -> &T {
        let at = match self.made.iter().position(|(s, _)| *s == size) {
            Some(at) => at,
            None => {
                self.made.push((size, make(pattern(size))));
                self.made.len() - 1
            }
        };
        &self.made[at].1
    }
}

/// `size` bytes of a non-zero pattern.
pub fn pattern(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8 + 1).collect()
}

/// A receive buffer of [`MAX_SIZE`] bytes with every page touched, so that
/// receiving into it never faults.
pub fn receive_buffer() -> Vec<u8> {
    vec![0u8; MAX_SIZE]
}

/// `count` fds for `/dev/null`, opened once and sent again and again.
pub fn dev_null_fds(count: usize) -> Vec<OwnedFd> {
    let file = File::open("/dev/null").expect("/dev/null");
    (0..count)
        .map(|_| OwnedFd::from(file.try_clone().expect("dup /dev/null")))
        .collect()
}

// ---- child helpers -------------------------------------------------------

/// A close-on-exec copy of this process's stdin, where a raw child's
/// parent put the child's socket end.
pub fn stdin_fd() -> OwnedFd {
    io::stdin().as_fd().try_clone_to_owned().expect("dup stdin")
}

/// Reads exactly `buf.len()` bytes; `false` at end of stream before the
/// first byte.
pub fn read_exact_or_eof(r: &mut impl Read, buf: &mut [u8]) -> bool {
    let mut at = 0;
    while at < buf.len() {
        match r.read(&mut buf[at..]) {
            Ok(0) if at == 0 => return false,
            Ok(0) => panic!("end of stream inside a message"),
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    true
}

/// Writes all of `buf`.
pub fn write_all(w: &mut impl Write, buf: &[u8]) {
    w.write_all(buf).expect("write");
}

/// `RWF_NOSIGNAL` (Linux 6.18+, `linux/fs.h`): a write to a pipe whose
/// reader is gone fails with `EPIPE` without raising SIGPIPE.
const RWF_NOSIGNAL: nix::libc::c_int = 0x100;

/// Writes all of `buf` with `pwritev2(RWF_NOSIGNAL)`: what a pipe writer
/// that must survive a reader that went away calls instead of `write`,
/// whatever the process's SIGPIPE disposition.
pub fn write_nosignal(fd: BorrowedFd<'_>, mut buf: &[u8]) {
    use nix::libc;
    while !buf.is_empty() {
        let iov = libc::iovec {
            iov_base: buf.as_ptr().cast_mut().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: `iov` describes `buf`, a live borrow the kernel only
        // reads during the call; offset -1 is the file position (a pipe's
        // only one).
        let n = unsafe { libc::pwritev2(fd.as_raw_fd(), &iov, 1, -1, RWF_NOSIGNAL) };
        match n {
            n if n > 0 => buf = &buf[n as usize..],
            n if n < 0 && Errno::last() == Errno::EINTR => {}
            n if n < 0 => panic!("pwritev2: {}", Errno::last()),
            _ => panic!("pwritev2 wrote nothing"),
        }
    }
}

// ---- pinning -------------------------------------------------------------

/// Where the two processes of a measurement run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Parent and child on one CPU: a round trip is two context switches
    /// on that CPU, not a cross-CPU wakeup whose cost swings with where the
    /// scheduler puts the two sides (unpinned round trips on this 2-core
    /// VM swing 5-52 µs).
    SameCpu,
    /// Parent on one CPU, child on another: a pipelined stream's sender and
    /// receiver copy at the same time.
    SplitCpus,
}

impl Placement {
    /// A short description for tables.
    pub fn describe(self) -> String {
        let (a, b) = cpus();
        match self {
            Placement::SameCpu => format!("parent and child both on CPU {a}"),
            Placement::SplitCpus if a == b => {
                format!("parent and child both on CPU {a} (only one CPU allowed)")
            }
            Placement::SplitCpus => format!("parent on CPU {a}, child on CPU {b}"),
        }
    }
}

/// Where one-way throughput runs: sender and receiver on different CPUs.
/// Chosen by measurement: in the placement check of `benches/compare.rs`
/// (1 MiB one-way, measured again in every run) two CPUs were as fast as
/// one or faster for raw SEQPACKET, the shm ring and the typed channel
/// (0.97x to 1.6x over five runs while this was written; the spread is the
/// VM's noise). It is also what a pipelined stream wants: the sender fills
/// the next packet or slot while the receiver empties the last, where on
/// one CPU the two alternate and every copy waits for the other.
pub const TPUT_PLACEMENT: Placement = Placement::SplitCpus;

/// The first two CPUs this process may run on (the same one twice on a
/// single-CPU host).
pub fn cpus() -> (usize, usize) {
    static CPUS: OnceLock<(usize, usize)> = OnceLock::new();
    *CPUS.get_or_init(|| {
        let allowed = sched_getaffinity(Pid::from_raw(0)).expect("sched_getaffinity");
        let mut it = (0..CpuSet::count()).filter(|&c| allowed.is_set(c).unwrap_or(false));
        let a = it.next().expect("no CPU allowed");
        (a, it.next().unwrap_or(a))
    })
}

fn pin_thread(tid: i32, cpu: usize) {
    let mut set = CpuSet::new();
    set.set(cpu).expect("cpu index");
    // A thread that exited meanwhile (ESRCH) has nothing to pin.
    let _ = sched_setaffinity(Pid::from_raw(tid), &set);
}

/// Pins the calling thread and every thread of `contender`'s children.
pub fn place(contender: &dyn Contender, placement: Placement) {
    let (a, b) = cpus();
    pin_thread(0, a);
    let child_cpu = match placement {
        Placement::SameCpu => a,
        Placement::SplitCpus => b,
    };
    for pid in contender.pids() {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"));
        let tids: Vec<i32> = match tasks {
            Ok(dir) => dir
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect(),
            Err(_) => vec![pid as i32],
        };
        for tid in tids {
            pin_thread(tid, child_cpu);
        }
    }
}

// ---- stall watchdog --------------------------------------------------------

static LAST_PROGRESS_MS: AtomicU64 = AtomicU64::new(0);

fn clock() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Records that a measurement finished (see [`start_watchdog`]).
pub fn progress() {
    LAST_PROGRESS_MS.store(clock(), Ordering::Relaxed);
}

/// Starts a thread that ends the bench (exit code 3) when no measurement
/// has finished for `limit`: a child that died where its peer cannot see it
/// (a DGRAM socket has no end of stream) would otherwise leave the parent
/// waiting forever. Exiting closes every channel, so the children exit too.
pub fn start_watchdog(limit: Duration) {
    progress();
    std::thread::Builder::new()
        .name("bench-watchdog".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_millis(500));
            let idle = clock().saturating_sub(LAST_PROGRESS_MS.load(Ordering::Relaxed));
            if idle > limit.as_millis() as u64 {
                eprintln!("bench: no progress for {idle} ms; a child must have died. Exiting.");
                std::process::exit(3);
            }
        })
        .expect("watchdog thread");
}

// ---- formatting ------------------------------------------------------------

/// `8 B`, `64 KiB`, `16 MiB`.
pub fn human(size: usize) -> String {
    if size >= 1 << 20 && size.is_multiple_of(1 << 20) {
        format!("{} MiB", size >> 20)
    } else if size >= 1 << 10 && size.is_multiple_of(1 << 10) {
        format!("{} KiB", size >> 10)
    } else {
        format!("{size} B")
    }
}

/// `8B`, `64KiB`, `16MiB`: for benchmark ids.
pub fn human_id(size: usize) -> String {
    human(size).replace(' ', "")
}
