//! Reliability suite 1: a hostile peer.
//!
//! Two parts, each with the courier side in a child process of its own (so
//! that its fd table and its peak memory are its own) and the hostile side
//! in another: this test binary re-executed in a role (see `common::role`).
//!
//! * **Receiver** (`hostile_frames_to_a_typed_receiver`): a process speaking
//!   the raw transport sends at least 10,000 adversarial frames (short run)
//!   to a typed [`Receiver`] configured with a 1 MiB limit: random bytes,
//!   well-formed bodies with wrong fd indices and depth bombs, lying
//!   lengths, terabyte size claims (header and body), fd counts that
//!   disagree with the header, up to 253 fds of the wrong kinds (pipes,
//!   sockets, /dev/null, a directory, eventfd, timerfd, signalfd, pidfd,
//!   memfd, a regular file), shared-memory bodies (kind 1) and rings
//!   (kind 2) in memfds without seals, of the wrong size or shrunk after
//!   sending, rings rewritten or hole-punched after sending, and empty
//!   frames. Every 25th frame is a valid value from a real courier
//!   [`Sender`] on the same socket (small, with an fd, through the ring, in
//!   a memfd), which must arrive intact. The two sides run in lock step
//!   over a second connection: the hostile side sends a batch, then does
//!   its after-send mischief (`ftruncate`, rewrites), then tells the
//!   receiver how many frames to read and what each was meant to test;
//!   the receiver reads exactly that many (each `recv_timeout` inside
//!   `catch_unwind`) and counts frames, values, typed errors by kind,
//!   expectation violations, panics and timeouts, then checks that its fd
//!   table is back at its baseline and reads its peak RSS (`VmHWM`).
//! * **Listener** (`hostile_connections_to_a_listener`): a hostile process
//!   opens connections to a courier [`Listener`] (handshake timeout
//!   200 ms) that stall (also in a burst), close at once, or lie in their
//!   hello (bad magic, wrong wire version, truncated, over-long, reserved
//!   bits, a name that is not UTF-8, another protocol, fds attached, random
//!   bytes), and some that complete the handshake and then send hostile
//!   frames. Each must end in the expected typed [`ConnectError`] (matched
//!   connection by connection: the listener handles them in order), be
//!   closed by the listener in bounded time, leak no fd and cost bounded
//!   memory; afterwards a valid client (this test process) connects and
//!   exchanges a value.
//! * `frames_queued_behind_an_empty_frame_outlive_the_peer`: the defect the
//!   listener part found (an empty frame from a peer that then left was
//!   taken for the end of stream, losing the frames queued behind it).
//!
//! Seeds are deterministic and printed; `COURIER_HOSTILE_SEED` (decimal or
//! `0x` hex) overrides. `COURIER_SOAK=1` runs ten times the frames and
//! connections:
//!
//! ```text
//! COURIER_SOAK=1 cargo test --release --test reliability_hostile -- --nocapture
//! ```

#[path = "../crates/transport/tests/common/mod.rs"]
mod common;
mod support;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{IoSlice, PipeReader};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::os::unix::process::ExitStatusExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use common::{Guard, ADDR_ENV, CHILD_TIMEOUT};
use courier::channel::{HEADER_LEN, MAX_INLINE_FRAME, WIRE_VERSION};
use courier::transport::{SendMsg, SeqPacketSocket, Wait, MAX_FDS};
use courier::{
    AbstractName, Address, Bytes, ChannelError, Config, ConnectError, Endpoint, Fd, Listener,
    Receiver, RecvTimeoutError, Sender,
};
use nix::fcntl::{fallocate, fcntl, FallocateFlags, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::socket::{self as nixsock, ControlMessage, MsgFlags};
use serde::{Deserialize, Serialize};
use support::figures::{self, median_max, Figures};
use support::{collect_lines, say, wait_line, wait_within, with_stdout_pipe};

// ---- settings -----------------------------------------------------------

/// Overrides the seed (decimal or `0x` hex).
const SEED_ENV: &str = "COURIER_HOSTILE_SEED";
const DEFAULT_SEED: u64 = 0x00c0_0e1e_5eed_0001;
/// How many hostile frames the sender role sends (set by the parent).
const FRAMES_ENV: &str = "COURIER_HOSTILE_FRAMES";
/// How many hostile connections the connector role opens (set by the parent).
const CONNECTIONS_ENV: &str = "COURIER_HOSTILE_CONNECTIONS";

/// The receive limit of every courier end under attack.
const LIMIT: usize = 1 << 20;
/// One valid value from a real sender after this many hostile frames.
const PROBE_EVERY: u64 = 25;
/// How long the receiver waits for a frame the sender has already sent.
const FRAME_WAIT: Duration = Duration::from_secs(10);
/// How long either side of the lock step waits for the other.
const STEP_WAIT: Duration = Duration::from_secs(30);
/// The listener's handshake timeout: short, so that stalls cost little.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(200);
/// How long after its handshake timeout a listener may take to close a
/// stalled or lying connection before it counts as a hang.
const CLOSE_SLACK: Duration = Duration::from_secs(10);
const PROTOCOL: &str = "courier-hostile-suite";
const PROTOCOL_VERSION: u32 = 7;
/// What the valid client's last message carries.
const FINISH: u64 = 0x00f1_7157;

/// A batch (frames sent before the receiver reads them) stays below these,
/// so that it never fills the socket buffer and never has more fds in
/// flight than a 1024-fd RLIMIT_NOFILE allows (ETOOMANYREFS).
const BATCH_FRAMES: usize = 32;
const BATCH_BYTES: usize = 64 << 10;
const BATCH_FDS: usize = 512;

/// Data areas of the hostile sender's valid rings (kind 2); the first is
/// the one it rewrites after sending.
const RING_CAPS: [u64; 10] = [
    64 << 10,
    4 << 10,
    16 << 10,
    64 << 10,
    256 << 10,
    1 << 20,
    4 << 10,
    16 << 10,
    64 << 10,
    256 << 10,
];
/// A ring's control page, before its data area.
const RING_CONTROL: u64 = 4096;
/// Offset of the sender's `closed` word in a ring's control page.
const RING_CLOSED: u64 = 320;

/// Size claims of terabytes and beyond (and just above the limit).
const CLAIMS: [u64; 8] = [
    u64::MAX,
    u64::MAX - 15,
    1 << 63,
    1 << 50,
    1 << 40,
    (1 << 40) + 1,
    1 << 32,
    LIMIT as u64 + 1,
];

/// How much the receiver's peak RSS (`VmHWM`) may grow over its baseline:
/// derived from the limit and the sizes this suite lets through, not from
/// any size a frame claims (claims go up to 2^64 - 1).
///
/// * 4 x limit: a body being decoded (at most the limit), the value it
///   becomes, a kind-1 memfd mapping (at most the limit, MAP_POPULATE) and
///   the 128 KiB receive buffer;
/// * 4 MiB: the probe sender's ring (its minimum size), which the probes
///   cycle through and the receiver reads all of;
/// * 8 MiB: the hostile rings the receiver may keep mapped (at most 8) and
///   read from, each at most 1 MiB of data area here (rings larger than a
///   courier sender makes for the limit are read once and unmapped: the
///   ring walk that checks that is in `reliability_security.rs`);
/// * 16 MiB: slack for code pages first touched during the run and the
///   allocator, in a debug build.
fn receiver_rss_bound_kib() -> u64 {
    (4 * LIMIT as u64 + (4 << 20) + (8 << 20) + (16 << 20)) / 1024
}

/// The listener process's allowance, on the same terms: it decodes at most
/// one value (at most the limit) at a time, through a 128 KiB buffer.
fn listener_rss_bound_kib() -> u64 {
    (4 * LIMIT as u64 + (16 << 20)) / 1024
}

fn seed() -> u64 {
    match std::env::var(SEED_ENV) {
        Ok(s) => {
            let s = s.trim();
            let parsed = match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("{SEED_ENV}={s}: {e}"))
        }
        Err(_) => DEFAULT_SEED,
    }
}

fn env_u64(name: &str) -> u64 {
    let v = std::env::var(name).unwrap_or_else(|_| panic!("{name} not set"));
    v.parse().unwrap_or_else(|e| panic!("{name}={v}: {e}"))
}

// ---- roles --------------------------------------------------------------

const RECEIVER: &str = "hostile-receiver";
const SENDER: &str = "hostile-sender";
const SERVER: &str = "hostile-listener";
const CONNECTOR: &str = "hostile-connector";

const ROLES: &[(&str, fn())] = &[
    (RECEIVER, role_receiver),
    (SENDER, role_sender),
    (SERVER, role_server),
    (CONNECTOR, role_connector),
];

#[test]
#[ignore = "child role: run by the other tests of this file"]
fn role_entry() {
    common::run_role(ROLES)
}

// ---- messages -----------------------------------------------------------

/// What the attacked receiver decodes frames as. The hostile side encodes
/// bodies of this shape by hand (see [`Enc`]): variant indices matter.
#[derive(Serialize, Deserialize, Debug)]
enum Wire {
    /// 0: a valid value from the real sender.
    Probe(Probe),
    /// 1
    Number(u64),
    /// 2
    Text(String),
    /// 3: refuses any fd that is not a pipe.
    Pipes(Vec<Fd<PipeReader>>),
    /// 4: refuses any fd that is not a SEQPACKET socket.
    Socket(Fd<SeqPacketSocket>),
    /// 5: takes fds of any kind.
    Any(Vec<Fd>),
    /// 6
    Pair { a: Option<Fd<File>>, b: Vec<u16> },
    /// 7: recursive, for depth bombs.
    Nested(Option<Box<Wire>>),
}

const V_NUMBER: u64 = 1;
const V_TEXT: u64 = 2;
const V_PIPES: u64 = 3;
const V_SOCKET: u64 = 4;
const V_ANY: u64 = 5;
const V_PAIR: u64 = 6;
const V_NESTED: u64 = 7;

/// A valid value whose bytes the receiver can check.
#[derive(Serialize, Deserialize, Debug)]
struct Probe {
    seq: u64,
    check: u64,
    data: Bytes,
    /// `/dev/null` for every probe with `seq % 4 == 1`.
    file: Option<Fd<File>>,
}

fn probe_data(seq: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| (seq.wrapping_mul(131) ^ i.wrapping_mul(7) ^ (i >> 8)) as u8)
        .collect()
}

/// FNV-1a of the sequence number, the length and the data.
fn probe_check(seq: u64, data: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let len = data.len() as u64;
    for b in seq
        .to_le_bytes()
        .iter()
        .chain(&len.to_le_bytes())
        .chain(data)
    {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// What the listener's endpoints receive.
#[derive(Serialize, Deserialize, Debug)]
enum Ask {
    Ping(u64),
    Finish(u64),
    Text(String),
    Pipes(Vec<Fd<PipeReader>>),
    Any(Vec<Fd>),
}

/// What the listener's endpoints answer.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Reply {
    Pong(u64),
}

// ---- frame categories ---------------------------------------------------

/// What a frame should produce at the receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Expect {
    /// A value or a typed error.
    Any = 0,
    /// A typed error.
    Error = 1,
    /// A value.
    Value = 2,
    /// The next probe, intact.
    Probe = 3,
}

impl Expect {
    fn from_code(code: u8) -> Expect {
        match code {
            0 => Expect::Any,
            1 => Expect::Error,
            2 => Expect::Value,
            3 => Expect::Probe,
            other => panic!("expectation code {other}"),
        }
    }
}

/// The categories of frames, with their share of the hostile frames (in
/// percent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Cat {
    Probe = 0,
    Random,
    Shaped,
    LyingLen,
    Terabyte,
    FdMismatch,
    WrongFds,
    Empty,
    ShmBad,
    ShmShrunk,
    RingOk,
    RingBad,
    RingShrunk,
    RingRewrite,
}

const CATS: [(Cat, &str, u64); 14] = [
    (Cat::Probe, "probe", 0),
    (Cat::Random, "random", 20),
    (Cat::Shaped, "shaped", 12),
    (Cat::LyingLen, "lying_len", 10),
    (Cat::Terabyte, "terabyte", 8),
    (Cat::FdMismatch, "fd_mismatch", 10),
    (Cat::WrongFds, "wrong_fds", 8),
    (Cat::Empty, "empty", 5),
    (Cat::ShmBad, "shm_bad", 8),
    (Cat::ShmShrunk, "shm_shrunk", 4),
    (Cat::RingOk, "ring_ok", 5),
    (Cat::RingBad, "ring_bad", 6),
    (Cat::RingShrunk, "ring_shrunk", 2),
    (Cat::RingRewrite, "ring_rewrite", 2),
];

fn cat_name(code: u8) -> &'static str {
    CATS.get(usize::from(code))
        .map(|c| c.1)
        .unwrap_or_else(|| panic!("category code {code}"))
}

// ---- randomness and encoding ------------------------------------------------

/// xorshift64*: reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng((seed ^ 0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// A postcard encoder for hand-made bodies: varints (every integer wider
/// than a byte, enum variants, lengths), raw bytes.
#[derive(Default)]
struct Enc(Vec<u8>);

impl Enc {
    fn var(mut self, mut v: u64) -> Self {
        loop {
            let low = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.0.push(low);
                return self;
            }
            self.0.push(low | 0x80);
        }
    }

    fn raw(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }

    fn list(self, items: &[u64]) -> Self {
        items
            .iter()
            .fold(self.var(items.len() as u64), |e, &i| e.var(i))
    }

    fn done(self) -> Vec<u8> {
        self.0
    }
}

fn number_body(x: u64) -> Vec<u8> {
    Enc::default().var(V_NUMBER).var(x).done()
}

fn text_body(text: &[u8]) -> Vec<u8> {
    Enc::default()
        .var(V_TEXT)
        .var(text.len() as u64)
        .raw(text)
        .done()
}

/// A small valid body without fds: a number or a short text.
fn plain_body(rng: &mut Rng, max_text: usize) -> Vec<u8> {
    if rng.chance(1, 2) {
        number_body(rng.next())
    } else {
        let len = rng.index(max_text + 1);
        text_body(&vec![b'a' + (rng.below(26) as u8); len])
    }
}

/// A 16-byte header, any field possibly wrong.
fn header(kind: u8, fd_count: u16, flags: u8, body_len: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN + 24);
    h.extend_from_slice(b"CR");
    h.push(WIRE_VERSION);
    h.push(kind);
    h.extend_from_slice(&fd_count.to_le_bytes());
    h.push(flags);
    h.push(0);
    h.extend_from_slice(&body_len.to_le_bytes());
    h
}

/// An honest inline frame.
fn inline_frame(fd_count: u16, body: &[u8]) -> Vec<u8> {
    let mut f = header(0, fd_count, 0, body.len() as u64);
    f.extend_from_slice(body);
    f
}

/// A kind-2 frame: header, then ring id, start and retired ring.
fn ring_frame(
    fd_count: u16,
    flags: u8,
    body_len: u64,
    id: u64,
    start: u64,
    retire: u64,
) -> Vec<u8> {
    let mut f = header(2, fd_count, flags, body_len);
    for field in [id, start, retire] {
        f.extend_from_slice(&field.to_le_bytes());
    }
    f
}

// ---- fds of every kind -------------------------------------------------------

/// A new eventfd (nix's `event` feature is not enabled here).
#[allow(unsafe_code)]
fn eventfd() -> OwnedFd {
    // SAFETY: eventfd(2) takes two integers and touches no memory of ours.
    let raw = unsafe { nix::libc::eventfd(0, nix::libc::EFD_CLOEXEC) };
    assert!(raw >= 0, "eventfd: {}", std::io::Error::last_os_error());
    // SAFETY: `raw` is a new fd that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

/// A memfd holding `body`, `len` bytes long (sparse past the body), with
/// `seals`.
fn memfd(body: &[u8], len: u64, seals: SealFlag) -> File {
    let fd = memfd_create(
        c"courier-hostile",
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
fn body_seals() -> SealFlag {
    SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_SEAL
}

/// The seals a courier sender puts on a ring.
fn ring_seals() -> SealFlag {
    SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL
}

/// A ring memfd: control page (with `id` at offset 0) and `cap` bytes of
/// data area, with `seals`.
fn ring_file(cap: u64, id: u64, seals: SealFlag) -> File {
    memfd(&id.to_le_bytes(), RING_CONTROL + cap, seals)
}

/// fds of the wrong kinds, attached to frames again and again.
struct Pool {
    fds: Vec<(&'static str, Box<dyn AsFd>)>,
}

const POOL_PIPE_R: usize = 0;
const POOL_SEQPACKET: usize = 2;
const POOL_MEMFD: usize = 3;

impl Pool {
    fn new() -> Pool {
        let (pipe_r, pipe_w) = std::io::pipe().expect("pipe");
        let (seq_a, _) = SeqPacketSocket::pair().expect("seqpacket pair");
        let (dgram, _) = UnixDatagram::pair().expect("dgram pair");
        let (stream, _) = UnixStream::pair().expect("stream pair");
        let timer = nix::sys::timerfd::TimerFd::new(
            nix::sys::timerfd::ClockId::CLOCK_MONOTONIC,
            nix::sys::timerfd::TimerFlags::TFD_CLOEXEC,
        )
        .expect("timerfd");
        let signal = nix::sys::signalfd::SignalFd::with_flags(
            &nix::sys::signal::SigSet::empty(),
            nix::sys::signalfd::SfdFlags::SFD_CLOEXEC,
        )
        .expect("signalfd");
        let mut fds: Vec<(&'static str, Box<dyn AsFd>)> = vec![
            ("pipe_r", Box::new(pipe_r)),
            ("pipe_w", Box::new(pipe_w)),
            ("seqpacket", Box::new(seq_a)),
            (
                "memfd",
                Box::new(memfd(b"not a body", 10, SealFlag::empty())),
            ),
            ("dgram", Box::new(dgram)),
            ("stream", Box::new(stream)),
            (
                "devnull",
                Box::new(File::open("/dev/null").expect("/dev/null")),
            ),
            ("dir", Box::new(File::open("/").expect("open /"))),
            ("eventfd", Box::new(eventfd())),
            ("timerfd", Box::new(timer)),
            ("signalfd", Box::new(signal)),
            ("file", Box::new(tempfile::tempfile().expect("temp file"))),
        ];
        if let Some(pidfd) = courier::PidFd::open(std::process::id()).expect("pidfd_open") {
            fds.push(("pidfd", Box::new(pidfd)));
        }
        Pool { fds }
    }

    fn fd(&self, i: usize) -> BorrowedFd<'_> {
        self.fds[i].1.as_fd()
    }

    fn any(&self, rng: &mut Rng) -> usize {
        rng.index(self.fds.len())
    }

    /// Neither end of a pipe.
    fn non_fifo(&self, rng: &mut Rng) -> usize {
        2 + rng.index(self.fds.len() - 2)
    }

    /// Not a SEQPACKET socket.
    fn non_seqpacket(&self, rng: &mut Rng) -> usize {
        loop {
            let i = self.any(rng);
            if i != POOL_SEQPACKET {
                return i;
            }
        }
    }

    /// Not a memfd.
    fn non_memfd(&self, rng: &mut Rng) -> usize {
        loop {
            let i = self.any(rng);
            if i != POOL_MEMFD {
                return i;
            }
        }
    }

    fn many(&self, rng: &mut Rng, n: usize) -> Vec<FdRef> {
        (0..n).map(|_| FdRef::Pool(self.any(rng))).collect()
    }
}

// ---- the hostile sender ---------------------------------------------------

/// Where a frame's fd comes from.
#[derive(Clone, Copy)]
enum FdRef {
    Pool(usize),
    /// One of the frame's own files.
    Own(usize),
    /// A valid ring of the sender.
    Ring(usize),
    /// One of the sender's long-lived bad memfds.
    Bad(usize),
}

/// What to do after the frame was sent and before the receiver reads it;
/// returns a note to count (e.g. that the kernel refused a shrink).
type After = Box<dyn FnOnce() -> Option<&'static str>>;

/// One hostile frame.
struct Built {
    cat: Cat,
    expect: Expect,
    bytes: Vec<u8>,
    fds: Vec<FdRef>,
    own: Vec<File>,
    after: Option<After>,
    /// The valid ring whose data area this frame writes (one such frame
    /// per ring per batch, so that bodies do not overwrite each other).
    uses_ring: Option<usize>,
}

impl Built {
    fn new(cat: Cat, expect: Expect, bytes: Vec<u8>) -> Built {
        Built {
            cat,
            expect,
            bytes,
            fds: Vec::new(),
            own: Vec::new(),
            after: None,
            uses_ring: None,
        }
    }

    fn fds(mut self, fds: Vec<FdRef>) -> Built {
        self.fds = fds;
        self
    }

    fn own(mut self, file: File) -> Built {
        self.fds.push(FdRef::Own(self.own.len()));
        self.own.push(file);
        self
    }

    fn after(mut self, after: impl FnOnce() -> Option<&'static str> + 'static) -> Built {
        self.after = Some(Box::new(after));
        self
    }
}

/// A valid ring of the hostile sender.
struct HRing {
    file: File,
    id: u64,
    cap: u64,
}

/// Long-lived bad memfds (indices for [`FdRef::Bad`]).
const BAD_SEALED_BODY: usize = 0;
const BAD_UNSEALED_BODY: usize = 1;
const BAD_PARTIAL_BODY: usize = 2;
const BAD_TIB_BODY: usize = 3;
const BAD_RING_UNSEALED: usize = 4;
const BAD_RING_NO_DATA: usize = 5;
const BAD_RING_TOO_BIG: usize = 6;
const BAD_RING_TIB: usize = 7;
const BAD_RING_HUGE_ID: u64 = 0x0bad_0bad_0bad_0bad;

struct Hostile {
    rng: Rng,
    pool: Pool,
    rings: Vec<HRing>,
    bad: Vec<File>,
    /// The body in the bad body memfds.
    bad_body: Vec<u8>,
    /// Rings whose data area the current batch writes.
    rings_in_batch: Vec<bool>,
}

impl Hostile {
    fn new(seed: u64) -> Hostile {
        let mut rng = Rng::new(seed);
        let rings = RING_CAPS
            .iter()
            .map(|&cap| {
                let id = rng.next() | 1;
                HRing {
                    file: ring_file(cap, id, ring_seals()),
                    id,
                    cap,
                }
            })
            .collect::<Vec<_>>();
        let bad_body = number_body(0x00ba_dbad);
        let len = bad_body.len() as u64;
        let partial = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW;
        let bad = vec![
            memfd(&bad_body, len, body_seals()),
            memfd(&bad_body, len, SealFlag::empty()),
            memfd(&bad_body, len, partial),
            memfd(&bad_body, 1 << 40, body_seals()),
            ring_file(4096, BAD_RING_HUGE_ID, SealFlag::empty()),
            ring_file(0, BAD_RING_HUGE_ID, ring_seals()),
            ring_file((64 << 20) + 4096, BAD_RING_HUGE_ID, ring_seals()),
            ring_file(1 << 40, BAD_RING_HUGE_ID, ring_seals()),
        ];
        Hostile {
            rng,
            pool: Pool::new(),
            rings_in_batch: vec![false; rings.len()],
            rings,
            bad,
            bad_body,
        }
    }

    fn fd(&self, r: FdRef) -> BorrowedFd<'_> {
        match r {
            FdRef::Pool(i) => self.pool.fd(i),
            FdRef::Ring(i) => self.rings[i].file.as_fd(),
            FdRef::Bad(i) => self.bad[i].as_fd(),
            FdRef::Own(_) => unreachable!("own fds are borrowed from the frame"),
        }
    }

    /// A category by weight.
    fn pick(&mut self) -> Cat {
        let total: u64 = CATS.iter().map(|c| c.2).sum();
        let mut at = self.rng.below(total);
        for (cat, _, weight) in CATS {
            if at < weight {
                return cat;
            }
            at -= weight;
        }
        unreachable!()
    }

    /// A valid ring (not the rewrite ring) that this batch has not written
    /// to yet, if any.
    fn free_ring(&mut self) -> Option<usize> {
        let free: Vec<usize> = (1..self.rings.len())
            .filter(|&i| !self.rings_in_batch[i])
            .collect();
        (!free.is_empty()).then(|| free[self.rng.index(free.len())])
    }

    /// Places `body` in ring `k` at a random position (of a random lap);
    /// returns the position.
    fn place(&mut self, k: usize, body: &[u8]) -> u64 {
        let ring = &self.rings[k];
        let len = body.len() as u64;
        assert!(len <= ring.cap, "body larger than ring {k}");
        let offset = self.rng.below(ring.cap - len + 1);
        let lap = self.rng.below(1 << 24);
        ring.file
            .write_all_at(body, RING_CONTROL + offset)
            .expect("write ring body");
        lap * ring.cap + offset
    }

    fn build(&mut self, cat: Cat) -> Built {
        match cat {
            Cat::Probe => unreachable!("probes come from the real sender"),
            Cat::Random => self.random(),
            Cat::Shaped => self.shaped(),
            Cat::LyingLen => self.lying_len(),
            Cat::Terabyte => self.terabyte(),
            Cat::FdMismatch => self.fd_mismatch(),
            Cat::WrongFds => self.wrong_fds(),
            Cat::Empty => self.empty(),
            Cat::ShmBad => self.shm_bad(),
            Cat::ShmShrunk => self.shm_shrunk(),
            Cat::RingOk => self.ring_ok(),
            Cat::RingBad => self.ring_bad(),
            Cat::RingShrunk => self.ring_shrunk(),
            Cat::RingRewrite => self.ring_rewrite(),
        }
    }

    /// Random bytes, sometimes behind a valid prefix, with a few fds.
    fn random(&mut self) -> Built {
        let rng = &mut self.rng;
        let len = 1 + rng.index(300);
        let mut bytes = rng.bytes(len);
        match rng.below(3) {
            0 => {}
            1 if len >= 4 => {
                bytes[..3].copy_from_slice(&[b'C', b'R', WIRE_VERSION]);
                bytes[3] = rng.below(3) as u8;
            }
            _ => {
                // An honest header before a random body.
                bytes = inline_frame(0, &bytes);
            }
        }
        let n = rng.index(4);
        if bytes.len() >= HEADER_LEN && rng.chance(1, 2) {
            bytes[4..6].copy_from_slice(&(n as u16).to_le_bytes());
        }
        let fds = self.pool.many(&mut self.rng, n);
        Built::new(Cat::Random, Expect::Any, bytes).fds(fds)
    }

    /// Bodies of the receiver's shape with random contents: fd indices in
    /// and out of range, unknown variants, trailing bytes, depth bombs.
    fn shaped(&mut self) -> Built {
        let rng = &mut self.rng;
        let n = rng.index(4);
        let index = |rng: &mut Rng| rng.below(n as u64 + 2);
        let mut expect = Expect::Any;
        let body = match rng.below(9) {
            0 => number_body(rng.next()),
            1 => {
                let len = rng.index(40);
                text_body(&rng.bytes(len)) // often not UTF-8
            }
            2 => {
                let idx: Vec<u64> = (0..rng.below(4)).map(|_| index(rng)).collect();
                Enc::default().var(V_PIPES).list(&idx).done()
            }
            3 => Enc::default().var(V_SOCKET).var(index(rng)).done(),
            4 => {
                let idx: Vec<u64> = (0..rng.below(5)).map(|_| index(rng)).collect();
                Enc::default().var(V_ANY).list(&idx).done()
            }
            5 => {
                let a = rng.chance(1, 2).then(|| index(rng));
                let b: Vec<u64> = (0..rng.below(5)).map(|_| rng.below(1 << 17)).collect();
                let e = Enc::default().var(V_PAIR);
                let e = match a {
                    Some(i) => e.var(1).var(i),
                    None => e.var(0),
                };
                e.list(&b).done()
            }
            6 => {
                let depth = 1 + rng.below(400);
                if depth >= 200 {
                    expect = Expect::Error; // deeper than MAX_DEPTH
                }
                let mut e = Enc::default();
                for _ in 0..depth {
                    e = e.var(V_NESTED).var(1);
                }
                e.var(V_NUMBER).var(depth).done()
            }
            7 => {
                expect = Expect::Error; // no such variant
                Enc::default().var(8 + rng.below(1 << 20)).done()
            }
            _ => {
                expect = Expect::Error; // bytes after the value
                let extra = 1 + rng.index(20);
                let mut body = number_body(rng.next());
                body.extend(rng.bytes(extra));
                body
            }
        };
        let fds = self.pool.many(&mut self.rng, n);
        Built::new(Cat::Shaped, expect, inline_frame(n as u16, &body)).fds(fds)
    }

    /// Lengths that disagree: body_len vs the frame, inline bytes after a
    /// kind-1 or kind-2 header, headers cut short, frames longer than any
    /// inline frame.
    fn lying_len(&mut self) -> Built {
        let body = plain_body(&mut self.rng, 200);
        let actual = body.len() as u64;
        let e = Expect::Error;
        match self.rng.below(25) {
            0..=7 => {
                let delta = 1 + self.rng.below(1000);
                let declared = if self.rng.chance(1, 2) || delta > actual {
                    actual + delta
                } else {
                    actual - delta
                };
                let mut f = header(0, 0, 0, declared);
                f.extend_from_slice(&body);
                Built::new(Cat::LyingLen, e, f)
            }
            8..=10 => {
                let mut f = header(0, 0, 0, 0);
                f.extend_from_slice(&body);
                Built::new(Cat::LyingLen, e, f)
            }
            11..=14 => {
                let mut f = header(1, 0, 0, self.bad_body.len() as u64);
                let extra = 1 + self.rng.index(100);
                f.extend(self.rng.bytes(extra));
                Built::new(Cat::LyingLen, e, f).fds(vec![FdRef::Bad(BAD_SEALED_BODY)])
            }
            15..=18 => {
                let k = self.rng.index(self.rings.len());
                let mut f = ring_frame(0, 1, 8, self.rings[k].id, 0, 0);
                let keep = loop {
                    let keep = self.rng.index(HEADER_LEN + 100);
                    if keep != f.len() {
                        break keep;
                    }
                };
                f.resize(keep.max(HEADER_LEN), 0);
                Built::new(Cat::LyingLen, e, f).fds(vec![FdRef::Ring(k)])
            }
            19..=23 => {
                let cut = 1 + self.rng.index(HEADER_LEN - 1);
                let mut f = inline_frame(0, &body);
                f.truncate(cut);
                let n = self.rng.index(3);
                let fds = self.pool.many(&mut self.rng, n);
                Built::new(Cat::LyingLen, e, f).fds(fds)
            }
            _ => {
                // Longer than any inline frame: discarded unread (TooLong).
                let len = MAX_INLINE_FRAME - HEADER_LEN + 1 + self.rng.index(4096);
                let text = vec![b'x'; len];
                let mut f = header(0, 0, 0, 0);
                let body = text_body(&text);
                f[8..16].copy_from_slice(&(body.len() as u64).to_le_bytes());
                f.extend_from_slice(&body);
                Built::new(Cat::LyingLen, e, f)
            }
        }
    }

    /// Size claims of terabytes, in headers (every kind) and inside bodies,
    /// and memfds of a terabyte.
    fn terabyte(&mut self) -> Built {
        let claim = CLAIMS[self.rng.index(CLAIMS.len())];
        let e = Expect::Error;
        match self.rng.below(8) {
            0 => {
                let mut f = header(0, 0, 0, claim);
                let len = self.rng.index(64);
                f.extend(self.rng.bytes(len));
                Built::new(Cat::Terabyte, e, f)
            }
            1 => Built::new(Cat::Terabyte, e, header(1, 0, 0, claim))
                .fds(vec![FdRef::Bad(BAD_SEALED_BODY)]),
            2 => {
                let k = self.rng.index(self.rings.len());
                let f = ring_frame(0, 1, claim, self.rings[k].id, self.rng.next(), 0);
                Built::new(Cat::Terabyte, e, f).fds(vec![FdRef::Ring(k)])
            }
            3 => {
                // Lengths inside the body: a string, a sequence, a vector.
                let body = match self.rng.below(3) {
                    0 => Enc::default().var(V_TEXT).var(claim).raw(b"short").done(),
                    1 => Enc::default().var(V_PIPES).var(claim).var(0).done(),
                    _ => Enc::default().var(V_PAIR).var(0).var(claim).var(1).done(),
                };
                Built::new(Cat::Terabyte, e, inline_frame(0, &body))
            }
            4 => {
                // A memfd of a terabyte (sparse) holding a valid body.
                let f = header(1, 0, 0, self.bad_body.len() as u64);
                Built::new(Cat::Terabyte, Expect::Value, f).fds(vec![FdRef::Bad(BAD_TIB_BODY)])
            }
            5 => {
                // The same memfd, declared as large as the limit allows:
                // mapped (1 MiB), then refused for the bytes after the value.
                let f = header(1, 0, 0, LIMIT as u64);
                Built::new(Cat::Terabyte, e, f).fds(vec![FdRef::Bad(BAD_TIB_BODY)])
            }
            6 => {
                // A ring of a terabyte.
                let f = ring_frame(0, 1, 8, BAD_RING_HUGE_ID, 0, 0);
                Built::new(Cat::Terabyte, e, f).fds(vec![FdRef::Bad(BAD_RING_TIB)])
            }
            _ => {
                // A ring start and retire of terabytes, with a claim.
                let k = self.rng.index(self.rings.len());
                let f = ring_frame(0, 1, claim, self.rings[k].id, claim, claim);
                Built::new(Cat::Terabyte, e, f).fds(vec![FdRef::Ring(k)])
            }
        }
    }

    /// fd counts that disagree with the header, for each kind.
    fn fd_mismatch(&mut self) -> Built {
        let e = Expect::Error;
        let declared = |rng: &mut Rng| -> u16 {
            match rng.below(4) {
                0 => rng.below(6) as u16,
                1 => 253,
                2 => [254, 1000, u16::MAX][rng.index(3)],
                _ => rng.below(254) as u16,
            }
        };
        match self.rng.below(3) {
            0 => {
                let d = declared(&mut self.rng);
                let a = loop {
                    let a = self.rng.index(MAX_FDS + 1);
                    if a != usize::from(d) {
                        break a;
                    }
                };
                let fds = self.pool.many(&mut self.rng, a);
                let mut f = header(0, d, 0, 0);
                let body = number_body(self.rng.next());
                f[8..16].copy_from_slice(&(body.len() as u64).to_le_bytes());
                f.extend_from_slice(&body);
                Built::new(Cat::FdMismatch, e, f).fds(fds)
            }
            1 => {
                let d = declared(&mut self.rng);
                let a = loop {
                    let a = 1 + self.rng.index(MAX_FDS);
                    if a != usize::from(d) + 1 {
                        break a;
                    }
                };
                let mut fds = self.pool.many(&mut self.rng, a - 1);
                fds.push(FdRef::Bad(BAD_SEALED_BODY));
                let f = header(1, d, 0, self.bad_body.len() as u64);
                Built::new(Cat::FdMismatch, e, f).fds(fds)
            }
            _ => {
                let k = self.rng.index(self.rings.len());
                let id = self.rings[k].id;
                match self.rng.below(3) {
                    // The flag says the ring is attached; nothing is.
                    0 => Built::new(Cat::FdMismatch, e, ring_frame(0, 1, 8, id, 0, 0)),
                    // No flag, but an fd.
                    1 => Built::new(Cat::FdMismatch, e, ring_frame(0, 0, 8, id, 0, 0))
                        .fds(vec![FdRef::Ring(k)]),
                    // Three user fds declared, one arrives with the ring.
                    _ => Built::new(Cat::FdMismatch, e, ring_frame(3, 1, 8, id, 0, 0))
                        .fds(vec![FdRef::Pool(POOL_PIPE_R), FdRef::Ring(k)]),
                }
            }
        }
    }

    /// Up to 253 fds of the wrong kinds, behind honest headers.
    fn wrong_fds(&mut self) -> Built {
        let n = if self.rng.chance(1, 3) {
            MAX_FDS
        } else {
            1 + self.rng.index(MAX_FDS)
        };
        let mut fds = self.pool.many(&mut self.rng, n);
        let all: Vec<u64> = (0..n as u64).collect();
        let (expect, body) = match self.rng.below(6) {
            0 => {
                // Pipes only, but one is not a pipe.
                let at = self.rng.index(n);
                fds[at] = FdRef::Pool(self.pool.non_fifo(&mut self.rng));
                (Expect::Error, Enc::default().var(V_PIPES).list(&all).done())
            }
            1 => {
                fds[0] = FdRef::Pool(self.pool.non_seqpacket(&mut self.rng));
                let e = Enc::default().var(V_SOCKET).var(0).done();
                (Expect::Error, e)
            }
            2 => (Expect::Error, number_body(self.rng.next())),
            3 => {
                // A File takes any fd: fine with one, left over with more.
                let e = Enc::default().var(V_PAIR).var(1).var(0).var(0).done();
                let expect = if n == 1 { Expect::Value } else { Expect::Error };
                (expect, e)
            }
            4 => (
                Expect::Value,
                Enc::default().var(V_ANY).list(&all).done(), // taken, then closed
            ),
            _ => {
                // An index out of range, or one used twice.
                let mut idx = all;
                let at = self.rng.index(n);
                idx[at] = if n > 1 && self.rng.chance(1, 2) {
                    ((at + 1) % n) as u64
                } else {
                    n as u64 + self.rng.below(1000)
                };
                (Expect::Error, Enc::default().var(V_ANY).list(&idx).done())
            }
        };
        Built::new(Cat::WrongFds, expect, inline_frame(n as u16, &body)).fds(fds)
    }

    /// Zero-length messages, with no fds up to 253.
    fn empty(&mut self) -> Built {
        let n = match self.rng.below(4) {
            0 => 0,
            1 => 1,
            2 => 1 + self.rng.index(MAX_FDS),
            _ => MAX_FDS,
        };
        let fds = self.pool.many(&mut self.rng, n);
        Built::new(Cat::Empty, Expect::Error, Vec::new()).fds(fds)
    }

    /// Kind-1 bodies in memfds without (all) seals, in fds that are no
    /// memfd, in memfds smaller than declared, of length 0.
    fn shm_bad(&mut self) -> Built {
        let len = self.bad_body.len() as u64;
        let e = Expect::Error;
        match self.rng.below(6) {
            0 => Built::new(Cat::ShmBad, e, header(1, 0, 0, len))
                .fds(vec![FdRef::Bad(BAD_UNSEALED_BODY)]),
            1 => Built::new(Cat::ShmBad, e, header(1, 0, 0, len))
                .fds(vec![FdRef::Bad(BAD_PARTIAL_BODY)]),
            2 => {
                let body_fd = self.pool.non_memfd(&mut self.rng);
                let claim = self.rng.below(1000);
                Built::new(Cat::ShmBad, e, header(1, 0, 0, claim)).fds(vec![FdRef::Pool(body_fd)])
            }
            3 => {
                let claim = len + 1 + self.rng.below(1000);
                Built::new(Cat::ShmBad, e, header(1, 0, 0, claim))
                    .fds(vec![FdRef::Bad(BAD_SEALED_BODY)])
            }
            4 => Built::new(Cat::ShmBad, e, header(1, 0, 0, 0))
                .fds(vec![FdRef::Bad(BAD_SEALED_BODY)]),
            _ => {
                // User fds the value does not use, before a valid memfd.
                let n = 1 + self.rng.index(MAX_FDS - 1);
                let mut fds = self.pool.many(&mut self.rng, n);
                fds.push(FdRef::Bad(BAD_SEALED_BODY));
                Built::new(Cat::ShmBad, e, header(1, n as u16, 0, len)).fds(fds)
            }
        }
    }

    /// Kind-1 bodies in memfds that are shrunk (or, sealed, that the
    /// sender tries to shrink) after sending.
    fn shm_shrunk(&mut self) -> Built {
        let body = plain_body(&mut self.rng, 3000);
        let len = body.len() as u64;
        let (seals, expect) = match self.rng.below(4) {
            0 => (SealFlag::empty(), Expect::Error),
            1 => (
                SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_WRITE,
                Expect::Error,
            ),
            2 => (SealFlag::F_SEAL_GROW, Expect::Error),
            _ => (body_seals(), Expect::Value),
        };
        let file = memfd(&body, len + self.rng.below(8192), seals);
        let shrink = file.try_clone().expect("dup memfd");
        Built::new(Cat::ShmShrunk, expect, header(1, 0, 0, len))
            .own(file)
            .after(move || {
                shrink_after_send(&shrink, expect == Expect::Value, "shm_shrink_blocked")
            })
    }

    /// Valid frames in the sender's own rings, sometimes with user fds,
    /// retiring another ring, or closing the ring.
    fn ring_ok(&mut self) -> Built {
        let Some(k) = self.free_ring() else {
            return self.ring_bad();
        };
        let ring_cap = self.rings[k].cap;
        let with_fds = self.rng.chance(1, 10);
        let n = if with_fds { 1 + self.rng.index(8) } else { 0 };
        let body = if with_fds {
            let all: Vec<u64> = (0..n as u64).collect();
            Enc::default().var(V_ANY).list(&all).done()
        } else {
            let max = (ring_cap as usize).min(4096) - 16;
            plain_body(&mut self.rng, max)
        };
        let start = self.place(k, &body);
        let retire = if self.rng.chance(1, 10) {
            let other = 1 + self.rng.index(self.rings.len() - 1);
            if other == k {
                0
            } else {
                self.rings[other].id
            }
        } else {
            0
        };
        let f = ring_frame(
            n as u16,
            1,
            body.len() as u64,
            self.rings[k].id,
            start,
            retire,
        );
        let mut fds = self.pool.many(&mut self.rng, n);
        fds.push(FdRef::Ring(k));
        let mut built = Built::new(Cat::RingOk, Expect::Value, f).fds(fds);
        built.uses_ring = Some(k);
        if self.rng.chance(1, 10) {
            // The sender says it is done with the ring (the receiver drops
            // it at its next adoption), and takes that back later.
            let ring = self.rings[k].file.try_clone().expect("dup ring");
            let closed = u64::from(self.rng.chance(1, 2));
            built = built.after(move || {
                ring.write_all_at(&closed.to_le_bytes(), RING_CLOSED)
                    .expect("write closed");
                None
            });
        }
        built
    }

    /// Rings that must be refused: unsealed, of the wrong size, of another
    /// id, never sent, not a memfd, bodies outside the ring, flag bits set.
    fn ring_bad(&mut self) -> Built {
        let e = Expect::Error;
        let k = self.rng.index(self.rings.len());
        let (id, cap) = (self.rings[k].id, self.rings[k].cap);
        let cat = Cat::RingBad;
        match self.rng.below(9) {
            0 => Built::new(cat, e, ring_frame(0, 1, 8, BAD_RING_HUGE_ID, 0, 0))
                .fds(vec![FdRef::Bad(BAD_RING_UNSEALED)]),
            1 => {
                let wrong = self.rng.next() | (1 << 62);
                Built::new(cat, e, ring_frame(0, 1, 8, wrong, 0, 0)).fds(vec![FdRef::Ring(k)])
            }
            2 => Built::new(cat, e, ring_frame(0, 1, 8, 0, 0, 0)).fds(vec![FdRef::Ring(k)]),
            3 => {
                let unknown = self.rng.next() | (1 << 62);
                Built::new(cat, e, ring_frame(0, 0, 8, unknown, 0, 0))
            }
            4 => {
                // Outside the ring: longer than it, across its end, or a
                // start that overflows.
                let (len, start) = match self.rng.below(3) {
                    0 => {
                        // Longer than the ring (or, for a ring as large as
                        // the limit, as long but not at its start).
                        let len = (cap + 1 + self.rng.below(1000)).min(LIMIT as u64);
                        let start = if len > cap {
                            self.rng.below(cap)
                        } else {
                            1 + self.rng.below(cap - 1)
                        };
                        (len, start)
                    }
                    1 => {
                        let len = 2 + self.rng.below(cap - 1);
                        (len, cap - len + 1 + self.rng.below(len - 1))
                    }
                    _ => (cap.min(4096), u64::MAX - self.rng.below(4096)),
                };
                Built::new(cat, e, ring_frame(0, 1, len, id, start, 0)).fds(vec![FdRef::Ring(k)])
            }
            5 => {
                let which = [BAD_RING_NO_DATA, BAD_RING_TOO_BIG][self.rng.index(2)];
                Built::new(cat, e, ring_frame(0, 1, 8, BAD_RING_HUGE_ID, 0, 0))
                    .fds(vec![FdRef::Bad(which)])
            }
            6 => {
                let not_memfd = self.pool.non_memfd(&mut self.rng);
                Built::new(cat, e, ring_frame(0, 1, 8, id, 0, 0)).fds(vec![FdRef::Pool(not_memfd)])
            }
            7 => {
                let flags = 2 + self.rng.below(254) as u8;
                Built::new(cat, e, ring_frame(0, flags, 8, id, 0, 0)).fds(vec![FdRef::Ring(k)])
            }
            _ => {
                // A kind-1 body memfd (write-sealed, no ring id in it).
                Built::new(cat, e, ring_frame(0, 1, 8, 0x00ba_dbad, 0, 0))
                    .fds(vec![FdRef::Bad(BAD_SEALED_BODY)])
            }
        }
    }

    /// Fresh rings shrunk after sending (those not sealed against it), or
    /// sealed ones the sender fails to shrink.
    fn ring_shrunk(&mut self) -> Built {
        let cap = [4096, 65536][self.rng.index(2)];
        let id = self.rng.next() | 1;
        let (seals, expect) = match self.rng.below(4) {
            0 => (SealFlag::empty(), Expect::Error),
            1 => (SealFlag::F_SEAL_GROW, Expect::Error),
            2 => (
                SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_WRITE,
                Expect::Error,
            ),
            _ => (ring_seals(), Expect::Value),
        };
        let file = ring_file(cap, id, SealFlag::empty());
        let body = plain_body(&mut self.rng, 1000);
        let offset = self.rng.below(cap - body.len() as u64 + 1);
        file.write_all_at(&body, RING_CONTROL + offset)
            .expect("write ring body");
        if !seals.is_empty() {
            fcntl(&file, FcntlArg::F_ADD_SEALS(seals)).expect("seal ring");
        }
        let f = ring_frame(0, 1, body.len() as u64, id, offset, 0);
        let shrink = file.try_clone().expect("dup ring");
        Built::new(Cat::RingShrunk, expect, f)
            .own(file)
            .after(move || {
                let sealed = expect == Expect::Value;
                let note = shrink_after_send(&shrink, sealed, "ring_shrink_blocked");
                if sealed {
                    // Done with it: the receiver drops it at its next adoption.
                    shrink
                        .write_all_at(&1u64.to_le_bytes(), RING_CLOSED)
                        .expect("write closed");
                }
                note
            })
    }

    /// Valid frames in ring 0, whose body (or control page) the sender
    /// rewrites or punches a hole in after sending.
    fn ring_rewrite(&mut self) -> Built {
        if self.rings_in_batch[0] {
            return self.random();
        }
        let body = plain_body(&mut self.rng, 2000);
        let start = self.place(0, &body);
        let ring = &self.rings[0];
        let f = ring_frame(0, 1, body.len() as u64, ring.id, start, 0);
        let file = ring.file.try_clone().expect("dup ring");
        let offset = RING_CONTROL + start % ring.cap;
        let len = body.len() as u64;
        let garbage = self.rng.bytes(body.len());
        let how = self.rng.below(3);
        let control = self.rng.bytes(64);
        let mut built = Built::new(Cat::RingRewrite, Expect::Any, f)
            .fds(vec![FdRef::Ring(0)])
            .after(move || {
                match how {
                    0 => file.write_all_at(&garbage, offset).expect("rewrite body"),
                    1 => fallocate(
                        &file,
                        FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
                        offset as i64,
                        len as i64,
                    )
                    .expect("punch a hole in the ring"),
                    _ => {
                        // consumed, acked, wake, wake_at, closed: garbage.
                        for at in [64u64, 128, 192, 256, 320] {
                            file.write_all_at(&control[..8], at).expect("write control");
                        }
                    }
                }
                None
            });
        built.uses_ring = Some(0);
        built
    }
}

/// Shrinks `file` to nothing; when `sealed`, the kernel must refuse.
fn shrink_after_send(file: &File, sealed: bool, blocked: &'static str) -> Option<&'static str> {
    match nix::unistd::ftruncate(file, 0) {
        Ok(()) if !sealed => None,
        Ok(()) => panic!("a memfd sealed against shrinking was shrunk"),
        Err(nix::errno::Errno::EPERM) if sealed => Some(blocked),
        Err(e) => panic!("ftruncate after send: {e}"),
    }
}

/// Sends `bytes` with `fds` as one message (a zero-length one by a raw
/// `sendmsg`, which courier's transport refuses to send), waiting at most
/// [`FRAME_WAIT`] for room.
fn send_frame(sock: &SeqPacketSocket, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
    if !bytes.is_empty() {
        let bufs = [IoSlice::new(bytes)];
        let sent = sock.send_msg(
            &SendMsg::new(&bufs).with_fds(fds),
            Wait::timeout(FRAME_WAIT),
        )?;
        assert_eq!(sent, bytes.len(), "short send");
        return Ok(());
    }
    let raw: Vec<i32> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let cmsgs: Vec<ControlMessage<'_>> = if raw.is_empty() {
        Vec::new()
    } else {
        vec![ControlMessage::ScmRights(&raw)]
    };
    let deadline = Instant::now() + FRAME_WAIT;
    loop {
        let flags = MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT;
        match nixsock::sendmsg::<()>(sock.as_raw_fd(), &[], &cmsgs, flags, None) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EAGAIN) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The frames sent since the receiver last read, and what to do before it
/// does.
#[derive(Default)]
struct Batch {
    entries: Vec<(u8, u8)>,
    after: Vec<After>,
    own: Vec<File>,
    bytes: usize,
    fds: usize,
}

impl Batch {
    fn room_for(&self, bytes: usize, fds: usize) -> bool {
        self.entries.is_empty()
            || (self.entries.len() < BATCH_FRAMES
                && self.bytes + bytes <= BATCH_BYTES
                && self.fds + fds <= BATCH_FDS)
    }
}

/// The hostile sender's lock step with the receiver.
struct Stepper {
    control: SeqPacketSocket,
    batches: u64,
    notes: BTreeMap<&'static str, u64>,
}

impl Stepper {
    /// Does the after-send mischief, tells the receiver what the batch
    /// holds, and waits until it has read it all.
    fn flush(&mut self, batch: &mut Batch, hostile: &mut Hostile) {
        if batch.entries.is_empty() {
            return;
        }
        for after in batch.after.drain(..) {
            if let Some(note) = after() {
                *self.notes.entry(note).or_default() += 1;
            }
        }
        let mut msg = vec![b'B'];
        msg.extend_from_slice(&(batch.entries.len() as u16).to_le_bytes());
        for &(cat, expect) in &batch.entries {
            msg.extend_from_slice(&[cat, expect]);
        }
        self.control
            .send_timeout(&msg, STEP_WAIT)
            .expect("send a batch notice");
        let mut ack = [0u8; 8];
        let n = self
            .control
            .recv_timeout(&mut ack, STEP_WAIT)
            .expect("the receiver's ack (it hung or died)");
        assert_eq!(&ack[..n], b"A", "the receiver's ack");
        self.batches += 1;
        *batch = Batch::default();
        hostile.rings_in_batch.iter_mut().for_each(|u| *u = false);
    }
}

/// The hostile sender: raw frames, and probes from real courier senders,
/// on one connection to the receiver; lock step on another.
fn role_sender() {
    let seed = seed();
    let frames = env_u64(FRAMES_ENV);
    let addr = common::parent_addr();
    let data = SeqPacketSocket::connect_timeout(&addr, STEP_WAIT).expect("connect (data)");
    let control = SeqPacketSocket::connect_timeout(&addr, STEP_WAIT).expect("connect (control)");
    let config = Config::new().limit(LIMIT);
    // One sender through its ring, one through a memfd per value: both
    // kept until the end (dropping a sender shuts the socket's writing).
    let ring_tx = Sender::<Wire>::from_socket(data.try_clone().expect("dup"), config);
    let shm_tx = Sender::<Wire>::from_socket(data.try_clone().expect("dup"), config.shared_ring(0));
    let mut hostile = Hostile::new(seed);
    let mut probe_rng = Rng::new(seed ^ 0x0050_524f_4245);
    let mut stepper = Stepper {
        control,
        batches: 0,
        notes: BTreeMap::new(),
    };
    let mut batch = Batch::default();
    let mut sent = [0u64; CATS.len()];
    let mut fds_sent = 0u64;
    let mut probe_seq = 0u64;
    for i in 0..frames {
        if i % PROBE_EVERY == 0 {
            if !batch.room_for(4096, 1) {
                stepper.flush(&mut batch, &mut hostile);
            }
            let seq = probe_seq;
            let len = match seq % 4 {
                0 | 1 => probe_rng.index(512),
                _ => 100_000 + probe_rng.index(200_000),
            };
            let data = probe_data(seq, len);
            let file = (seq % 4 == 1).then(|| Fd::new(File::open("/dev/null").expect("/dev/null")));
            let probe = Wire::Probe(Probe {
                seq,
                check: probe_check(seq, &data),
                data: Bytes::from(data),
                file,
            });
            let tx = if seq % 4 == 3 { &shm_tx } else { &ring_tx };
            tx.send_timeout(probe, FRAME_WAIT)
                .unwrap_or_else(|e| panic!("probe {seq}: {e:?} (seed {seed:#x})"));
            batch.entries.push((Cat::Probe as u8, Expect::Probe as u8));
            batch.bytes += 1024;
            batch.fds += 2;
            sent[Cat::Probe as usize] += 1;
            probe_seq += 1;
        }
        let cat = hostile.pick();
        let built = hostile.build(cat);
        if !batch.room_for(built.bytes.len() + 512, built.fds.len()) {
            stepper.flush(&mut batch, &mut hostile);
        }
        let fds: Vec<BorrowedFd<'_>> = built
            .fds
            .iter()
            .map(|&r| match r {
                FdRef::Own(j) => built.own[j].as_fd(),
                other => hostile.fd(other),
            })
            .collect();
        send_frame(&data, &built.bytes, &fds).unwrap_or_else(|e| {
            panic!(
                "frame {i} ({}): send failed: {e} (seed {seed:#x})",
                cat_name(built.cat as u8)
            )
        });
        fds_sent += fds.len() as u64;
        drop(fds);
        if let Some(k) = built.uses_ring {
            hostile.rings_in_batch[k] = true;
        }
        batch.entries.push((built.cat as u8, built.expect as u8));
        batch.bytes += built.bytes.len() + 512;
        batch.fds += built.fds.len();
        batch.after.extend(built.after);
        batch.own.extend(built.own);
        sent[built.cat as usize] += 1;
    }
    stepper.flush(&mut batch, &mut hostile);
    drop((ring_tx, shm_tx, data));
    stepper
        .control
        .send_timeout(b"E", STEP_WAIT)
        .expect("send the end notice");
    let mut line = format!(
        "sent: frames={frames} batches={} fds={fds_sent}",
        stepper.batches
    );
    for (cat, name, _) in CATS {
        line.push_str(&format!(" {name}={}", sent[cat as usize]));
    }
    for (note, count) in &stepper.notes {
        line.push_str(&format!(" {note}={count}"));
    }
    say(&line);
}

// ---- the attacked receiver ---------------------------------------------------

#[derive(Default)]
struct CatTally {
    frames: u64,
    values: u64,
    errors: u64,
    violations: u64,
}

#[derive(Default)]
struct Tally {
    cats: BTreeMap<u8, CatTally>,
    errors: BTreeMap<String, u64>,
    frames: u64,
    values: u64,
    typed_errors: u64,
    panics: u64,
    timeouts: u64,
    probes_ok: u64,
    next_probe: u64,
    violations: Vec<String>,
}

/// The name of an error's variant, e.g. `Frame.TooLarge` or `Refused`.
fn error_name(e: &ChannelError) -> String {
    let variant = |debug: String| -> String {
        debug
            .split(|c: char| !c.is_alphanumeric() && c != '_')
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    match e {
        ChannelError::Frame(f) => format!("Frame.{}", variant(format!("{f:?}"))),
        other => variant(format!("{other:?}")),
    }
}

impl Tally {
    fn violation(&mut self, cat: u8, what: String) {
        self.cats.entry(cat).or_default().violations += 1;
        if self.violations.len() < 20 {
            self.violations
                .push(format!("frame {} ({}): {what}", self.frames, cat_name(cat)));
        }
    }

    fn record(
        &mut self,
        cat: u8,
        expect: Expect,
        got: std::thread::Result<Result<Wire, RecvTimeoutError>>,
    ) {
        self.frames += 1;
        self.cats.entry(cat).or_default().frames += 1;
        match got {
            Err(panic) => {
                self.panics += 1;
                let text = support::panic_text(&*panic);
                self.violation(cat, format!("receive panicked: {text}"));
            }
            Ok(Ok(value)) => {
                self.cats.entry(cat).or_default().values += 1;
                match expect {
                    Expect::Error => self.violation(cat, format!("accepted {value:?}")),
                    Expect::Probe => self.check_probe(cat, value),
                    Expect::Any | Expect::Value => self.values += 1,
                }
            }
            Ok(Err(RecvTimeoutError::Failed(e))) => {
                self.typed_errors += 1;
                self.cats.entry(cat).or_default().errors += 1;
                *self.errors.entry(error_name(&e)).or_default() += 1;
                if matches!(expect, Expect::Value | Expect::Probe) {
                    self.violation(cat, format!("refused: {e:?}"));
                }
            }
            Ok(Err(RecvTimeoutError::Timeout)) => {
                self.timeouts += 1;
                self.violation(cat, format!("no outcome within {FRAME_WAIT:?}"));
            }
            Ok(Err(other)) => self.violation(cat, format!("untyped outcome {other:?}")),
        }
    }

    fn check_probe(&mut self, cat: u8, value: Wire) {
        let seq = self.next_probe;
        self.next_probe += 1;
        let Wire::Probe(p) = value else {
            return self.violation(cat, format!("probe {seq} arrived as {value:?}"));
        };
        let data_ok = p.check == probe_check(p.seq, &p.data)
            && p.data[..] == probe_data(p.seq, p.data.len())[..];
        let file_ok = match &p.file {
            Some(f) => seq % 4 == 1 && f.metadata().is_ok_and(|m| m.file_type().is_char_device()),
            None => seq % 4 != 1,
        };
        if p.seq == seq && data_ok && file_ok {
            self.probes_ok += 1;
        } else {
            let (got, len) = (p.seq, p.data.len());
            self.violation(
                cat,
                format!("probe {seq} damaged: seq {got}, {len} bytes, data ok {data_ok}, fd ok {file_ok}"),
            );
        }
    }
}

/// The courier receiver under attack: reads exactly the frames each batch
/// notice announces, then checks its fds and memory.
fn role_receiver() {
    let listener = courier::transport::Listener::bind(&common::parent_addr()).expect("bind");
    say("ready");
    let data = listener.accept_timeout(STEP_WAIT).expect("accept (data)");
    let control = listener
        .accept_timeout(STEP_WAIT)
        .expect("accept (control)");
    drop(listener);
    let data_fd = data.as_raw_fd();
    let baseline = common::fd_table();
    let base_rss = figures::peak_rss_kib();
    let rx = Receiver::<Wire>::from_socket(data, Config::new().limit(LIMIT));
    let mut tally = Tally::default();
    let mut notice = vec![0u8; 4 + 2 * 4096];
    loop {
        let n = control
            .recv_timeout(&mut notice, STEP_WAIT)
            .expect("a batch notice (the sender hung)");
        match &notice[..n] {
            [] => panic!("the sender closed the lock step early"),
            [b'E'] => break,
            [b'B', lo, hi, entries @ ..] => {
                let count = usize::from(u16::from_le_bytes([*lo, *hi]));
                assert_eq!(entries.len(), 2 * count, "batch notice length");
                for entry in entries.chunks(2) {
                    let got = catch_unwind(AssertUnwindSafe(|| rx.recv_timeout(FRAME_WAIT)));
                    tally.record(entry[0], Expect::from_code(entry[1]), got);
                }
            }
            other => panic!("unknown notice {other:?}"),
        }
        control.send_timeout(b"A", STEP_WAIT).expect("ack");
    }
    // Everything sent has been read; the sender is gone.
    let end = catch_unwind(AssertUnwindSafe(|| rx.recv_timeout(FRAME_WAIT)));
    let disconnected = matches!(end, Ok(Err(RecvTimeoutError::Disconnected)));
    // Held while the receiver lives: the rings it keeps mapped (at most 8
    // hostile ones plus the probe sender's). Anything else is a leak.
    let held: Vec<_> = common::fd_table()
        .into_iter()
        .filter(|(fd, _)| !baseline.contains_key(fd))
        .collect();
    let stray = held
        .iter()
        .filter(|(_, target)| !target.to_string_lossy().starts_with("/memfd:"))
        .count();
    drop(rx);
    let mut expected = baseline;
    expected.remove(&data_fd);
    let now = common::fd_table();
    let opened: Vec<_> = now
        .iter()
        .filter(|(fd, _)| !expected.contains_key(fd))
        .collect();
    let closed: Vec<_> = expected
        .iter()
        .filter(|(fd, _)| !now.contains_key(fd))
        .collect();
    for (fd, target) in &opened {
        say(&format!("leak: fd {fd} -> {}", target.display()));
    }
    let peak_rss = figures::peak_rss_kib();
    for v in &tally.violations {
        say(&format!("violation: {v}"));
    }
    for (code, c) in &tally.cats {
        say(&format!(
            "cat: {} frames={} values={} errors={} violations={}",
            cat_name(*code),
            c.frames,
            c.values,
            c.errors,
            c.violations
        ));
    }
    let kinds: Vec<String> = tally
        .errors
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    say(&format!("errors: {}", kinds.join(" ")));
    let violations: u64 = tally.cats.values().map(|c| c.violations).sum();
    say(&format!(
        "result: frames={} values={} typed_errors={} error_kinds={} probes_ok={} panics={} \
         timeouts={} violations={violations} disconnected={} ring_fds_held={} stray_fds_held={stray} \
         fds_leaked={} fds_closed={} base_rss_kib={base_rss} peak_rss_kib={peak_rss}",
        tally.frames,
        tally.values,
        tally.typed_errors,
        tally.errors.len(),
        tally.probes_ok,
        tally.panics,
        tally.timeouts,
        u8::from(disconnected),
        held.len() - stray,
        opened.len(),
        closed.len(),
    ));
}

// ---- the listener and its hostile connections ---------------------------------

/// Hostile connection kinds: plan code, name, weight (per mille).
const CONN_KINDS: [(char, &str, u64); 14] = [
    ('c', "connect_close", 80),
    ('s', "stall", 5),
    ('b', "stall_burst", 1),
    ('m', "bad_magic", 100),
    ('v', "wrong_version", 80),
    ('t', "truncated", 80),
    ('e', "empty_or_tiny", 40),
    ('o', "over_long", 80),
    ('r', "reserved_bits", 60),
    ('u', "name_not_utf8", 50),
    ('p', "wrong_protocol", 100),
    ('f', "fds_in_hello", 80),
    ('h', "garbage_after_handshake", 64),
    ('x', "random_hello", 180),
];

/// How many stalled connections a burst opens at once.
const BURST: usize = 6;

/// The listener's outcomes each kind of connection may end in.
fn allowed(plan: char) -> &'static str {
    match plan {
        'c' => "C",
        's' | 'b' => "T",
        'm' => "N",
        'v' => "W",
        't' | 'o' | 'r' | 'u' | 'f' => "M",
        'e' => "NC",
        'p' => "P",
        'h' | 'V' => "O",
        'x' => "NMWP",
        _ => "",
    }
}

fn outcome_code(e: &ConnectError) -> char {
    match e {
        ConnectError::Timeout { .. } => 'T',
        ConnectError::Closed => 'C',
        ConnectError::NotCourier => 'N',
        ConnectError::Malformed { .. } => 'M',
        ConnectError::WireVersion { .. } => 'W',
        ConnectError::ProtocolMismatch { .. } => 'P',
        ConnectError::Io(_) => 'I',
        ConnectError::Unauthorized { .. } => 'U',
        _ => 'Z',
    }
}

fn server_config() -> Config {
    Config::new()
        .protocol(PROTOCOL, PROTOCOL_VERSION)
        .limit(LIMIT)
        .handshake_timeout(HANDSHAKE_TIMEOUT)
}

/// A hello as courier sends it, for our protocol unless changed.
fn hello(name: &[u8], version: u32) -> Vec<u8> {
    let mut h = b"CRHS".to_vec();
    h.push(WIRE_VERSION);
    h.push(1); // accepts fds
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(&version.to_le_bytes());
    h.extend_from_slice(&(LIMIT as u64).to_le_bytes());
    h.push(name.len() as u8);
    h.extend_from_slice(name);
    h
}

/// The courier listener under attack.
fn role_server() {
    let run_limit = Duration::from_secs(figures::scaled(240, 2400));
    let listener =
        Listener::<Reply, Ask>::bind(&common::parent_addr(), server_config()).expect("bind");
    let baseline = common::fd_table();
    let base_rss = figures::peak_rss_kib();
    say("ready");
    let deadline = Instant::now() + run_limit;
    let mut outcomes = String::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let (mut panics, mut hangs, mut post_frames, mut post_values, mut post_errors) =
        (0, 0, 0, 0, 0);
    let mut finished = false;
    while !finished {
        assert!(
            Instant::now() < deadline,
            "the listener ran past {run_limit:?}"
        );
        let got = catch_unwind(AssertUnwindSafe(|| listener.accept_timeout(STEP_WAIT)));
        let endpoint = match got {
            Err(panic) => {
                panics += 1;
                say(&format!(
                    "violation: accept panicked: {}",
                    support::panic_text(&*panic)
                ));
                outcomes.push('X');
                continue;
            }
            Ok(Err(ConnectError::Io(e))) if e.kind() == std::io::ErrorKind::TimedOut => {
                panic!("no connection for {STEP_WAIT:?}: the hostile side hung")
            }
            Ok(Err(e)) => {
                outcomes.push(outcome_code(&e));
                let name = format!("{e:?}");
                let name = name
                    .split(|c: char| !c.is_alphanumeric())
                    .next()
                    .unwrap_or_default();
                *errors.entry(name.to_owned()).or_default() += 1;
                continue;
            }
            Ok(Ok(endpoint)) => endpoint,
        };
        outcomes.push('O');
        // A connection that completed the handshake: serve it until it
        // goes (hostile) or says it is done (the valid client).
        loop {
            let got = catch_unwind(AssertUnwindSafe(|| endpoint.recv_timeout(FRAME_WAIT)));
            match got {
                Err(panic) => {
                    panics += 1;
                    say(&format!(
                        "violation: recv panicked: {}",
                        support::panic_text(&*panic)
                    ));
                }
                Ok(Ok(Ask::Ping(x))) => {
                    endpoint
                        .send_timeout(Reply::Pong(x + 1), FRAME_WAIT)
                        .expect("reply to a ping");
                }
                Ok(Ok(Ask::Finish(FINISH))) => {
                    finished = true;
                    break;
                }
                Ok(Ok(_)) => {
                    post_frames += 1;
                    post_values += 1;
                }
                Ok(Err(RecvTimeoutError::Failed(_))) => {
                    post_frames += 1;
                    post_errors += 1;
                }
                Ok(Err(RecvTimeoutError::Disconnected)) => break,
                Ok(Err(other)) => {
                    hangs += 1;
                    say(&format!("violation: endpoint gave {other:?}"));
                    break;
                }
            }
        }
    }
    let failed = listener.failed();
    let rejected = listener.rejected();
    let now = common::fd_table();
    let leaked: Vec<_> = now
        .iter()
        .filter(|(fd, _)| !baseline.contains_key(fd))
        .collect();
    for (fd, target) in &leaked {
        say(&format!("leak: fd {fd} -> {}", target.display()));
    }
    let lost = baseline.keys().filter(|fd| !now.contains_key(fd)).count();
    let peak_rss = figures::peak_rss_kib();
    let kinds: Vec<String> = errors.iter().map(|(k, v)| format!("{k}={v}")).collect();
    say(&format!("errors: {}", kinds.join(" ")));
    say(&format!("outcomes: {outcomes}"));
    say(&format!(
        "result: failed={failed} rejected={rejected} panics={panics} hangs={hangs} \
         post_frames={post_frames} post_values={post_values} post_errors={post_errors} \
         fds_leaked={} fds_closed={lost} base_rss_kib={base_rss} peak_rss_kib={peak_rss}",
        leaked.len()
    ));
}

/// Reads from a hostile connection until the listener closes it; the
/// time that took, and whether the listener's hello came first. `None`
/// when it stayed open [`CLOSE_SLACK`] past the handshake timeout (`wait`
/// lengthens that for connections queued behind others).
fn wait_closed(sock: &SeqPacketSocket, since: Instant, wait: Duration) -> Option<(Duration, bool)> {
    let deadline = since + wait + HANDSHAKE_TIMEOUT + CLOSE_SLACK;
    let mut buf = [0u8; 1024];
    let mut hello_seen = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        match sock.recv_timeout(&mut buf, left) {
            Ok(0) => return Some((since.elapsed(), hello_seen)),
            Ok(n) => hello_seen |= n >= 21 && buf.starts_with(b"CRHS"),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return None,
            // Reset, or a frame we cannot read: either way it is over.
            Err(_) => return Some((since.elapsed(), hello_seen)),
        }
    }
}

/// The hostile side of the listener: connections that stall, close, lie,
/// or handshake and then misbehave, one after another.
fn role_connector() {
    let seed = seed();
    let connections = env_u64(CONNECTIONS_ENV) as usize;
    let addr = common::parent_addr();
    let pool = Pool::new();
    let mut rng = Rng::new(seed ^ 0x4c49_5354_454e);
    let total: u64 = CONN_KINDS.iter().map(|k| k.2).sum();
    let mut plan = String::new();
    let (mut stall_close, mut burst_close) = (Vec::new(), Vec::new());
    let (mut hangs, mut hellos, mut post_frames, mut fds_sent) = (0u64, 0u64, 0u64, 0u64);
    let connect = |addr: &Address| {
        SeqPacketSocket::connect_timeout(addr, STEP_WAIT).expect("connect to the listener")
    };
    while plan.len() < connections {
        let mut at = rng.below(total);
        let kind = CONN_KINDS
            .iter()
            .find(|k| {
                let hit = at < k.2;
                at = at.saturating_sub(k.2);
                hit
            })
            .expect("a kind")
            .0;
        if kind == 'b' {
            // Stalled connections queued behind each other: the last is
            // closed about BURST handshake timeouts after it connected.
            let socks: Vec<_> = (0..BURST)
                .map(|_| (connect(&addr), Instant::now()))
                .collect();
            for (sock, since) in &socks {
                plan.push('b');
                match wait_closed(sock, *since, HANDSHAKE_TIMEOUT * BURST as u32) {
                    Some((t, seen)) => {
                        burst_close.push(t);
                        hellos += u64::from(seen);
                    }
                    None => hangs += 1,
                }
            }
            continue;
        }
        let sock = connect(&addr);
        let since = Instant::now();
        plan.push(kind);
        let mut fds: Vec<BorrowedFd<'_>> = Vec::new();
        let good = hello(PROTOCOL.as_bytes(), PROTOCOL_VERSION);
        let lie: Vec<u8> = match kind {
            'c' => {
                drop(sock);
                continue;
            }
            's' => Vec::new(),
            'm' => {
                let len = 4 + rng.index(274); // not over-long: that is checked first
                let mut bytes = rng.bytes(len);
                if bytes.starts_with(b"CRHS") {
                    bytes[3] = b'X';
                }
                if rng.chance(1, 3) {
                    bytes[..4].copy_from_slice(b"CRHX");
                }
                bytes
            }
            'v' => {
                let mut h = good.clone();
                h[4] = [0, 1, WIRE_VERSION + 1, 255][rng.index(4)];
                h
            }
            't' => good[..4 + rng.index(17)].to_vec(),
            'e' => good[..rng.index(4)].to_vec(),
            'o' => match rng.below(3) {
                0 => {
                    let mut h = good.clone();
                    let extra = 1 + rng.index(300);
                    h.extend(rng.bytes(extra));
                    h
                }
                1 => {
                    let mut h = good.clone();
                    h[20] = 255; // claims a longer name than it has
                    h
                }
                _ => {
                    let mut h = good.clone();
                    h.resize(1 << 16, b'z'); // longer than any hello
                    h
                }
            },
            'r' => {
                let mut h = good.clone();
                if rng.chance(1, 2) {
                    h[5] |= 2 << rng.below(7);
                } else {
                    h[6 + rng.index(2)] = 1 + rng.below(255) as u8;
                }
                h
            }
            'u' => {
                let name = [0xff, 0xfe, b'a', 0xc0, 0x80];
                hello(&name[..2 + rng.index(4)], PROTOCOL_VERSION)
            }
            'p' => match rng.below(3) {
                0 => hello(b"another-protocol", PROTOCOL_VERSION),
                1 => hello(PROTOCOL.as_bytes(), PROTOCOL_VERSION + 1),
                _ => hello(b"", 0),
            },
            'f' => {
                let n = if rng.chance(1, 3) {
                    MAX_FDS
                } else {
                    1 + rng.index(MAX_FDS)
                };
                fds = (0..n).map(|_| pool.fd(pool.any(&mut rng))).collect();
                good.clone()
            }
            'h' => good.clone(),
            _ => {
                let len = rng.index(300);
                let mut bytes = rng.bytes(len);
                if len >= 5 && rng.chance(1, 2) {
                    bytes[..4].copy_from_slice(b"CRHS");
                    if rng.chance(1, 2) {
                        bytes[4] = WIRE_VERSION;
                    }
                }
                bytes
            }
        };
        if kind != 's' {
            send_frame(&sock, &lie, &fds).expect("send a hostile hello");
            fds_sent += fds.len() as u64;
        }
        if kind == 'h' {
            // The handshake completes; then frames the endpoint must refuse
            // (or take), then the connection goes.
            let mut buf = [0u8; 1024];
            let n = sock
                .recv_timeout(&mut buf, STEP_WAIT)
                .expect("the listener's hello");
            assert!(buf[..n].starts_with(b"CRHS"), "the listener's hello");
            hellos += 1;
            let count = 1 + rng.below(8);
            for i in 0..count {
                let (mut frame, n) = match rng.below(5) {
                    0 => {
                        let len = 1 + rng.index(200);
                        (rng.bytes(len), rng.index(3))
                    }
                    1 => (header(0, 0, 0, CLAIMS[rng.index(CLAIMS.len())]), 0),
                    2 => (Vec::new(), rng.index(3)),
                    3 => {
                        let n = 1 + rng.index(MAX_FDS);
                        let all: Vec<u64> = (0..n as u64).collect();
                        // Ask::Pipes over fds of any kind.
                        (
                            inline_frame(n as u16, &Enc::default().var(3).list(&all).done()),
                            n,
                        )
                    }
                    _ => (
                        inline_frame(0, &Enc::default().var(2).var(1 << 40).done()),
                        0,
                    ),
                };
                if frame.is_empty() && i + 1 == count {
                    // After an empty message without fds, a departed peer's
                    // end of stream is recognised by the bytes still queued
                    // (FIONREAD): end on a frame that has some. Empty frames
                    // after the last one with bytes read as the end.
                    let len = 1 + rng.index(40);
                    frame = rng.bytes(len);
                }
                let fds: Vec<_> = (0..n).map(|_| pool.fd(pool.any(&mut rng))).collect();
                send_frame(&sock, &frame, &fds).expect("send after the handshake");
                fds_sent += n as u64;
                post_frames += 1;
            }
            continue; // closed here; the listener serves it to the end
        }
        match wait_closed(&sock, since, Duration::ZERO) {
            Some((t, seen)) => {
                if kind == 's' {
                    stall_close.push(t);
                }
                hellos += u64::from(seen);
            }
            None => {
                hangs += 1;
                say(&format!(
                    "violation: connection {} ({kind}) was never closed",
                    plan.len()
                ));
            }
        }
    }
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e3);
    let min = stall_close.iter().min().copied().unwrap_or_default();
    let (median, max) = if stall_close.is_empty() {
        (Duration::ZERO, Duration::ZERO)
    } else {
        median_max(&mut stall_close)
    };
    let burst_max = burst_close.iter().max().copied().unwrap_or_default();
    say(&format!("plan: {plan}"));
    say(&format!(
        "connector: hangs={hangs} hellos={hellos} post_frames={post_frames} fds_sent={fds_sent} \
         stalls={} stall_close_min_ms={} stall_close_median_ms={} stall_close_max_ms={} \
         burst_stalls={} burst_close_max_ms={}",
        stall_close.len(),
        ms(min),
        ms(median),
        ms(max),
        burst_close.len(),
        ms(burst_max),
    ));
}

// ---- the tests -------------------------------------------------------------------

/// `key=value` pairs of a line, after its prefix.
fn pairs(line: &str) -> BTreeMap<String, String> {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn num(map: &BTreeMap<String, String>, key: &str) -> u64 {
    map.get(key)
        .unwrap_or_else(|| panic!("no {key} in {map:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("{key}: {e}"))
}

fn line_with<'a>(lines: &'a [String], prefix: &str) -> Option<&'a str> {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(prefix))
        .map(str::trim)
}

fn describe(status: ExitStatus) -> String {
    match status.signal() {
        Some(sig) => format!("killed by signal {sig}"),
        None => format!("{status}"),
    }
}

/// Starts role `name` on the abstract address `hex`, its stdout piped.
fn start(
    name: &str,
    hex: &str,
    extra: &[(&str, String)],
) -> (Guard, std::sync::mpsc::Receiver<String>) {
    let mut cmd = common::role(name);
    cmd.env(ADDR_ENV, hex)
        .env(SEED_ENV, format!("{:#x}", seed()));
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let lines = with_stdout_pipe(&mut cmd);
    (Guard::spawn(cmd), lines)
}

/// Waits (bounded) for a child and all its output.
fn finish(
    child: &mut Guard,
    lines: &std::sync::mpsc::Receiver<String>,
    what: &str,
    limit: Duration,
) -> Vec<String> {
    let status =
        wait_within(child, limit).unwrap_or_else(|| panic!("{what} did not exit within {limit:?}"));
    let out = collect_lines(lines, Duration::from_secs(10));
    assert!(
        status.success(),
        "{what} failed ({}); its output:\n{}",
        describe(status),
        out.join("\n")
    );
    out
}

#[test]
fn hostile_frames_to_a_typed_receiver() {
    let seed = seed();
    let frames = figures::scaled(10_000, 100_000);
    let limit = Duration::from_secs(figures::scaled(240, 2400));
    println!(
        "hostile-receiver: seed {seed:#x} (set {SEED_ENV} to change), {frames} hostile frames"
    );
    let started = Instant::now();
    let name = AbstractName::random().expect("random name");
    let hex = common::hex(name.as_bytes());
    let (mut receiver, rlines) = start(RECEIVER, &hex, &[]);
    wait_line(&rlines, "ready", CHILD_TIMEOUT).expect("the receiver did not start");
    let (mut sender, slines) = start(SENDER, &hex, &[(FRAMES_ENV, frames.to_string())]);
    let sent_out = finish(&mut sender, &slines, "the hostile sender", limit);
    let recv_out = finish(&mut receiver, &rlines, "the receiver", limit);
    let elapsed = started.elapsed();

    let sent = pairs(line_with(&sent_out, "sent:").expect("the sender's report"));
    let result = pairs(line_with(&recv_out, "result:").expect("the receiver's report"));
    let details: Vec<&String> = recv_out
        .iter()
        .filter(|l| {
            ["violation:", "leak:", "cat:", "errors:"]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .collect();
    for l in &details {
        println!("  {l}");
    }
    let report = || {
        details
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    };

    let probes = num(&sent, "probe");
    let hostile = num(&sent, "frames");
    assert!(hostile >= frames, "only {hostile} hostile frames sent");
    assert_eq!(
        num(&result, "frames"),
        hostile + probes,
        "frames read != frames sent"
    );
    for (_, cat, _) in CATS {
        let line = recv_out
            .iter()
            .find_map(|l| l.strip_prefix(&format!("cat: {cat} ")))
            .map(pairs)
            .unwrap_or_default();
        let read = line.get("frames").map_or(0, |v| v.parse().unwrap_or(0));
        assert_eq!(read, num(&sent, cat), "{cat}: frames read != sent");
        if cat != "probe" {
            assert!(read > 0, "category {cat} never ran (seed {seed:#x})");
        }
    }
    assert_eq!(
        num(&result, "panics"),
        0,
        "receives panicked:\n{}",
        report()
    );
    assert_eq!(
        num(&result, "timeouts"),
        0,
        "frames gave no outcome:\n{}",
        report()
    );
    assert_eq!(
        num(&result, "violations"),
        0,
        "outcomes that break the expectations (seed {seed:#x}):\n{}",
        report()
    );
    assert_eq!(
        num(&result, "probes_ok"),
        probes,
        "valid values lost or damaged"
    );
    assert_eq!(
        num(&result, "disconnected"),
        1,
        "no Disconnected after the sender left"
    );
    assert_eq!(num(&result, "fds_leaked"), 0, "fds leaked:\n{}", report());
    assert_eq!(
        num(&result, "fds_closed"),
        0,
        "fds of the receiver's own were closed"
    );
    assert_eq!(
        num(&result, "stray_fds_held"),
        0,
        "non-ring fds held by the live receiver"
    );
    assert!(
        num(&result, "ring_fds_held") <= 9,
        "more rings held than a receiver keeps"
    );
    let base = num(&result, "base_rss_kib");
    let peak = num(&result, "peak_rss_kib");
    let bound = receiver_rss_bound_kib();
    assert!(
        peak <= base + bound,
        "receiver peak RSS {peak} KiB > baseline {base} KiB + bound {bound} KiB"
    );
    let typed = num(&result, "typed_errors");
    assert!(
        typed > 0 && num(&result, "values") > 0,
        "no errors or no values at all"
    );

    let mut fig = Figures::new("hostile-receiver");
    fig.add("seed", format!("{seed:#x}"))
        .add("frames", hostile)
        .add("probes", probes)
        .add("probes_intact", num(&result, "probes_ok"))
        .add("typed_errors", typed)
        .add("error_kinds", num(&result, "error_kinds"))
        .add("values", num(&result, "values"))
        .add("panics", num(&result, "panics"))
        .add("timeouts", num(&result, "timeouts"))
        .add("violations", num(&result, "violations"))
        .add("fds_sent", num(&sent, "fds"))
        .add("fds_leaked", num(&result, "fds_leaked"))
        .add("base_rss_kib", base)
        .add("peak_rss_kib", peak)
        .add("rss_growth_kib", peak.saturating_sub(base))
        .add("rss_bound_kib", bound)
        .add("limit_kib", LIMIT / 1024);
    for (_, cat, _) in CATS.iter().skip(1) {
        fig.add(cat, num(&sent, cat));
    }
    for note in ["shm_shrink_blocked", "ring_shrink_blocked"] {
        fig.add(note, sent.get(note).map_or("0", String::as_str));
    }
    fig.add_ms("time", elapsed).report();
}

#[test]
fn hostile_connections_to_a_listener() {
    let seed = seed();
    let connections = figures::scaled(2_000, 20_000);
    let limit = Duration::from_secs(figures::scaled(240, 2400));
    println!(
        "hostile-listener: seed {seed:#x} (set {SEED_ENV} to change), {connections} hostile connections"
    );
    let started = Instant::now();
    let name = AbstractName::random().expect("random name");
    let addr = Address::from(name.clone());
    let hex = common::hex(name.as_bytes());
    let (mut server, server_lines) = start(SERVER, &hex, &[]);
    wait_line(&server_lines, "ready", CHILD_TIMEOUT).expect("the listener did not start");
    let (mut connector, connector_lines) = start(
        CONNECTOR,
        &hex,
        &[(CONNECTIONS_ENV, connections.to_string())],
    );
    let connector_out = finish(
        &mut connector,
        &connector_lines,
        "the hostile connector",
        limit,
    );

    // After all of that, a valid client connects and exchanges a value.
    let client_config = server_config().handshake_timeout(CHILD_TIMEOUT);
    let client = Endpoint::<Ask, Reply>::connect(&addr, client_config)
        .unwrap_or_else(|e| panic!("a valid client could not connect after the attack: {e:?}"));
    client.send(Ask::Ping(41)).expect("send a ping");
    let reply = client
        .recv_timeout(CHILD_TIMEOUT)
        .expect("the listener's reply");
    assert_eq!(reply, Reply::Pong(42), "the exchange after the attack");
    client.send(Ask::Finish(FINISH)).expect("send finish");
    let server_out = finish(&mut server, &server_lines, "the listener", limit);
    drop(client);
    let elapsed = started.elapsed();

    let plan = line_with(&connector_out, "plan:").expect("the connector's plan");
    let conn = pairs(line_with(&connector_out, "connector:").expect("the connector's report"));
    let outcomes = line_with(&server_out, "outcomes:").expect("the listener's outcomes");
    let result = pairs(line_with(&server_out, "result:").expect("the listener's report"));
    let problems: Vec<&String> = server_out
        .iter()
        .chain(&connector_out)
        .filter(|l| l.starts_with("violation:") || l.starts_with("leak:"))
        .collect();
    for l in server_out
        .iter()
        .filter(|l| l.starts_with("errors:"))
        .chain(problems.iter().copied())
    {
        println!("  {l}");
    }

    // Connection by connection: the outcome each kind may end in.
    let expected: Vec<char> = plan.chars().chain(['V']).collect();
    let got: Vec<char> = outcomes.chars().collect();
    assert_eq!(
        got.len(),
        expected.len(),
        "connections accepted != connections made"
    );
    let mismatches: Vec<String> = expected
        .iter()
        .zip(&got)
        .enumerate()
        .filter(|(_, (plan, outcome))| !allowed(**plan).contains(**outcome))
        .map(|(i, (plan, outcome))| format!("#{i}: {plan} ended as {outcome}"))
        .collect();
    assert!(
        mismatches.is_empty(),
        "{} connections ended unexpectedly (seed {seed:#x}): {:?}",
        mismatches.len(),
        &mismatches[..mismatches.len().min(20)]
    );
    let mut counts = BTreeMap::new();
    for c in plan.chars() {
        *counts.entry(c).or_insert(0u64) += 1;
    }
    for (code, kind, _) in CONN_KINDS {
        assert!(
            counts.get(&code).copied().unwrap_or(0) > 0,
            "{kind} never ran (seed {seed:#x})"
        );
    }
    let accepted = got.iter().filter(|&&c| c == 'O').count() as u64;
    let failed = num(&result, "failed");
    assert_eq!(
        failed,
        got.len() as u64 - accepted,
        "listener.failed() != failed connections"
    );
    assert_eq!(
        num(&result, "rejected"),
        0,
        "peers of our own uid were rejected"
    );
    assert_eq!(
        num(&result, "panics"),
        0,
        "the listener panicked: {problems:?}"
    );
    assert_eq!(num(&result, "hangs"), 0, "endpoints hung: {problems:?}");
    assert_eq!(
        num(&conn, "hangs"),
        0,
        "connections never closed: {problems:?}"
    );
    let stall_min: f64 = conn["stall_close_min_ms"].parse().expect("a number");
    assert!(
        stall_min >= HANDSHAKE_TIMEOUT.as_secs_f64() * 1e3 * 0.9,
        "a stalled connection was closed after {stall_min} ms, before its handshake timeout"
    );
    assert_eq!(
        num(&result, "post_frames"),
        num(&conn, "post_frames"),
        "frames after the handshake lost"
    );
    assert_eq!(num(&result, "fds_leaked"), 0, "fds leaked: {problems:?}");
    assert_eq!(
        num(&result, "fds_closed"),
        0,
        "fds of the listener's own were closed"
    );
    let base = num(&result, "base_rss_kib");
    let peak = num(&result, "peak_rss_kib");
    let bound = listener_rss_bound_kib();
    assert!(
        peak <= base + bound,
        "listener peak RSS {peak} KiB > baseline {base} KiB + bound {bound} KiB"
    );

    let mut fig = Figures::new("hostile-listener");
    fig.add("seed", format!("{seed:#x}"))
        .add("connections", plan.len())
        .add("typed_errors", failed)
        .add("handshakes_ok", accepted)
        .add("mismatches", mismatches.len())
        .add("post_frames", num(&result, "post_frames"))
        .add("post_errors", num(&result, "post_errors"))
        .add("fds_sent", num(&conn, "fds_sent"))
        .add("panics", num(&result, "panics"))
        .add("hangs", num(&result, "hangs") + num(&conn, "hangs"))
        .add("fds_leaked", num(&result, "fds_leaked"))
        .add("base_rss_kib", base)
        .add("peak_rss_kib", peak)
        .add("rss_growth_kib", peak.saturating_sub(base))
        .add("rss_bound_kib", bound)
        .add("limit_kib", LIMIT / 1024)
        .add_ms("handshake_timeout", HANDSHAKE_TIMEOUT)
        .add("stalls", num(&conn, "stalls"))
        .add("stall_close_median_ms", &conn["stall_close_median_ms"])
        .add("stall_close_max_ms", &conn["stall_close_max_ms"])
        .add("burst_stalls", num(&conn, "burst_stalls"))
        .add("burst_close_max_ms", &conn["burst_close_max_ms"])
        .add("valid_exchange", 1);
    for (code, kind, _) in CONN_KINDS {
        fig.add(kind, counts.get(&code).copied().unwrap_or(0));
    }
    fig.add_ms("time", elapsed).report();
}

/// A peer that sends a zero-length message without fds among its frames
/// and then leaves: every frame it sent before leaving still comes out
/// (the empty one as a typed error) before `Disconnected`. (Found by the
/// listener part: such frames after a hostile handshake were lost.)
#[test]
fn frames_queued_behind_an_empty_frame_outlive_the_peer() {
    let (raw, sock) = SeqPacketSocket::pair().expect("socketpair");
    let rx = Receiver::<Wire>::from_socket(sock, Config::new().limit(LIMIT));
    for x in [7, 8] {
        send_frame(&raw, &[], &[]).expect("send an empty frame");
        send_frame(&raw, &inline_frame(0, &number_body(x)), &[]).expect("send a number");
    }
    drop(raw);
    for x in [7, 8] {
        match rx.recv_timeout(FRAME_WAIT) {
            Err(RecvTimeoutError::Failed(ChannelError::Frame(e))) => {
                assert_eq!(format!("{e:?}"), "TooShort { len: 0 }")
            }
            other => panic!("expected the empty frame before {x} refused, got {other:?}"),
        }
        match rx.recv_timeout(FRAME_WAIT) {
            Ok(Wire::Number(got)) => assert_eq!(got, x),
            other => panic!("expected Number({x}) (queued before the peer left), got {other:?}"),
        }
    }
    match rx.recv_timeout(FRAME_WAIT) {
        Err(RecvTimeoutError::Disconnected) => {}
        other => panic!("expected Disconnected at the end, got {other:?}"),
    }
}
