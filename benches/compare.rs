//! courier against raw syscalls, raw shared memory and ipc-channel, across
//! two processes, all contenders interleaved in one run.
//!
//! ```text
//! cargo bench --bench compare                          # 31 rounds
//! cargo bench --bench compare -- --quick               # 15 rounds, under 3 minutes
//! cargo bench --bench compare -- --quick --write-docs  # also writes docs/benchmarks.{md,svg}
//! ```
//!
//! The contenders (`benches/contenders/`, shared with `benches/matrix.rs`):
//! raw SEQPACKET (plain nix calls), raw pipes, a raw shared-memory ring,
//! courier-transport's socket, courier's typed channel over SEQPACKET,
//! DGRAM and pipes, and servo's ipc-channel. Each runs against a child
//! process that is this binary re-executed in a child role.
//!
//! What it measures, in every round, every contender once per measurement
//! (the order rotates from round to round), after one warm-up round:
//! - round trip of a small message (`u64`, or 8 raw bytes), both processes
//!   pinned to one CPU;
//! - round trip of an 8-byte message with no fds through the paths that can
//!   carry fds (raw SEQPACKET then uses sendmsg/recvmsg with a control
//!   buffer): the floor of any receiver that accepts fds;
//! - round trip of an 8-byte message carrying 1 fd each way (the contenders
//!   that pass fds), same pinning;
//! - round trip of byte payloads of 8 B .. 16 MiB (the child receives the
//!   payload into a buffer it owns and sends it back), same pinning: the
//!   latency plot;
//! - one-way throughput of byte payloads of 8 B .. 16 MiB: the parent sends
//!   N payloads, the child receives each into a buffer it owns and acks once
//!   at the end; sender and receiver on different CPUs (the placement check
//!   table shows why);
//! - the placement check: 1 MiB throughput of three contenders on one CPU
//!   and on two;
//! - heap allocations of the parent per small typed message in steady state
//!   (a counting global allocator, this thread only).
//!
//! Tables give medians over rounds and ratios of medians to the raw
//! baselines; the last line is a machine-readable `summary:`.
//!
//! Without `--bench` (which `cargo bench` passes), as under `cargo test
//! --benches`, it runs one tiny round as a smoke test of every contender.

// Unsafe code here: the counting global allocator (an unsafe trait that
// forwards to `System`), and the mmap of the shared-memory ring in
// `contenders/raw_shm.rs`. One operation per block, each with its SAFETY.
#![allow(unsafe_code)]

#[path = "contenders/mod.rs"]
mod contenders;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use contenders::{human, place, progress, Contender, Kind, Placement, SIZES, TPUT_PLACEMENT};

// ---- counting allocator ----------------------------------------------------

thread_local! {
    /// Allocations (and reallocations) made by this thread. `const`
    /// initialised and without a destructor, so touching it never allocates.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn note_allocation() {
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

/// This thread's allocations so far.
fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

struct CountingAllocator;

// SAFETY: every method forwards its arguments unchanged to `System`, which
// implements `GlobalAlloc` correctly; the counting only touches a
// const-initialised thread-local, which does not allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract for
        // `layout`, which is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` (through this allocator)
        // with `layout`, as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: `ptr`/`layout` come from this allocator, i.e. `System`, and
        // `new_size` satisfies `realloc`'s contract, as the caller guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

// ---- the plan --------------------------------------------------------------

/// The payload size of the placement check.
const CHECK_SIZE: usize = 1 << 20;

/// The contenders of the placement check.
const CHECKED: [Kind; 3] = [Kind::RawShm, Kind::RawSeqPacket, Kind::TypedSeqPacket];

struct Plan {
    rounds: usize,
    rtt_iters: u64,
    fd_iters: u64,
    /// Bytes moved per throughput measurement (before the clamp below).
    tput_bytes: usize,
    /// Bounds on the number of messages per throughput measurement.
    tput_count: (u64, u64),
    /// Bytes moved (each way) per sized round-trip measurement.
    rtt_bytes: usize,
    rtt_count: (u64, u64),
    alloc_iters: u64,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            // The small and fd round trips take well under a second per
            // round: they get the full run's iterations (fewer made the
            // quick run's ratios swing by 0.1 between runs of one build).
            Plan {
                rounds: 15,
                rtt_iters: 10_000,
                fd_iters: 5_000,
                tput_bytes: 128 << 20,
                tput_count: (4, 30_000),
                rtt_bytes: 48 << 20,
                rtt_count: (3, 2_000),
                alloc_iters: 5_000,
            }
        } else {
            Plan {
                rounds: 31,
                rtt_iters: 10_000,
                fd_iters: 5_000,
                tput_bytes: 256 << 20,
                tput_count: (8, 60_000),
                rtt_bytes: 96 << 20,
                rtt_count: (4, 4_000),
                alloc_iters: 20_000,
            }
        }
    }

    /// One small round of everything: a check, not a measurement.
    fn smoke() -> Plan {
        Plan {
            rounds: 1,
            rtt_iters: 50,
            fd_iters: 50,
            tput_bytes: 4 << 20,
            tput_count: (1, 100),
            rtt_bytes: 4 << 20,
            rtt_count: (1, 20),
            alloc_iters: 100,
        }
    }

    fn tput_count(&self, size: usize) -> u64 {
        ((self.tput_bytes / size) as u64).clamp(self.tput_count.0, self.tput_count.1)
    }

    fn rtt_count(&self, size: usize) -> u64 {
        ((self.rtt_bytes / size) as u64).clamp(self.rtt_count.0, self.rtt_count.1)
    }
}

// ---- samples ---------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum What {
    /// µs per small round trip.
    RttSmall,
    /// µs per small round trip with writes that cannot raise SIGPIPE.
    RttNoSignal,
    /// µs per round trip with this many fds each way.
    RttFds(usize),
    /// µs per round trip of a payload of this size.
    Rtt(usize),
    /// MB/s one way with payloads of this size.
    Tput(usize),
    /// MB/s one way at [`CHECK_SIZE`] under a placement.
    Check(bool),
}

#[derive(Default)]
struct Samples(BTreeMap<(What, Kind), Vec<f64>>);

impl Samples {
    fn push(&mut self, what: What, kind: Kind, value: f64) {
        self.0.entry((what, kind)).or_default().push(value);
    }

    fn median(&self, what: What, kind: Kind) -> Option<f64> {
        let mut v = self.0.get(&(what, kind))?.clone();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        Some(if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        })
    }

    /// The 25th and 75th percentiles (nearest rank).
    fn spread(&self, what: What, kind: Kind) -> Option<(f64, f64)> {
        let mut v = self.0.get(&(what, kind))?.clone();
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Some((at(0.25), at(0.75)))
    }

    /// The best raw contender's median for `what` (lowest time or highest
    /// throughput) and which one it is. The raw shm ring with large pieces
    /// counts only for payloads larger than the small pieces: below that
    /// both rings move a payload as one piece, the same path measured
    /// twice, and the faster of two measurements of one path is only the
    /// luckier one.
    fn best_raw(&self, what: What) -> Option<(Kind, f64)> {
        let higher_is_better = matches!(what, What::Tput(_) | What::Check(_));
        let differs = |k: Kind| match (k, what) {
            (Kind::RawShmLarge, What::Tput(size) | What::Rtt(size)) => {
                size > contenders::raw_shm::PIECES[0]
            }
            (Kind::RawShmLarge, What::Check(_)) => true,
            (Kind::RawShmLarge, _) => false,
            _ => true,
        };
        Kind::ALL
            .iter()
            .filter(|k| k.is_raw() && differs(**k))
            .filter_map(|&k| Some((k, self.median(what, k)?)))
            .reduce(|a, b| {
                let b_wins = if higher_is_better {
                    b.1 > a.1
                } else {
                    b.1 < a.1
                };
                if b_wins {
                    b
                } else {
                    a
                }
            })
    }

    fn ratio(&self, what: What, a: Kind, b: Kind) -> Option<f64> {
        Some(self.median(what, a)? / self.median(what, b)?)
    }
}

fn micros_per(d: Duration, n: u64) -> f64 {
    d.as_secs_f64() * 1e6 / n as f64
}

fn mb_per_s(d: Duration, bytes: usize, n: u64) -> f64 {
    (bytes as f64 * n as f64) / d.as_secs_f64() / 1e6
}

// ---- main ------------------------------------------------------------------

fn main() {
    if contenders::run_child_if_asked() {
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let write_docs = args.iter().any(|a| a == "--write-docs");
    let shown: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| *a != "--bench")
        .collect();
    let command = if shown.is_empty() {
        "cargo bench --bench compare".to_string()
    } else {
        format!("cargo bench --bench compare -- {}", shown.join(" "))
    };
    // Like criterion: `cargo bench` passes `--bench`; without it (`cargo
    // test --benches`, `cargo test --all-targets`) this is a test run, and
    // one tiny round checks that every contender works.
    let smoke = !args.iter().any(|a| a == "--bench");
    let plan = if smoke {
        println!("no --bench flag: test mode, one tiny round (run `cargo bench --bench compare`)");
        Plan::smoke()
    } else {
        Plan::new(quick)
    };
    contenders::start_watchdog(Duration::from_secs(120));

    let machine = Machine::read();
    let mut out = Report::default();
    out.line(format!("command: {command}"));
    out.line(format!(
        "machine: {}, {} cores, Linux {}",
        machine.cpu, machine.cores, machine.kernel
    ));
    out.flush();

    let mut all: Vec<Box<dyn Contender>> = Kind::ALL.iter().map(|k| k.start()).collect();
    progress();
    let started = std::time::Instant::now();
    let mut samples = Samples::default();
    for round in 0..=plan.rounds {
        run_round(&mut all, &plan, round, &mut samples);
        eprintln!(
            "round {round}/{} done{} ({:.0} s)",
            plan.rounds,
            if round == 0 {
                " (warm-up, discarded)"
            } else {
                ""
            },
            started.elapsed().as_secs_f64()
        );
    }
    let allocs = count_allocations(&mut all, plan.alloc_iters);
    drop(all); // closes every channel; the children exit and are reaped

    let tables = Tables::build(&samples, &allocs, &plan);
    out.line(format!(
        "{} interleaved rounds after 1 warm-up round; medians over rounds (over rounds x \
         {RTT_PASSES} passes for the small and fd round trips)",
        plan.rounds
    ));
    for table in &tables.list {
        out.line(String::new());
        out.line(table.text());
    }
    out.line(String::new());
    out.line(tables.summary.clone());
    if write_docs && !smoke {
        let date = today();
        let md = docs_markdown(&machine, &date, &command, &plan, &tables);
        let svg = plot_svg(&samples);
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/docs");
        std::fs::create_dir_all(dir).expect("docs/");
        std::fs::write(format!("{dir}/benchmarks.md"), md).expect("write docs/benchmarks.md");
        std::fs::write(format!("{dir}/benchmarks.svg"), svg).expect("write docs/benchmarks.svg");
        eprintln!("wrote {dir}/benchmarks.md and {dir}/benchmarks.svg");
    }
    out.flush();
}

/// Passes per round of the small round-trip measurements.
const RTT_PASSES: usize = 5;

/// `0..n` rotated left by `by`.
fn rotated(n: usize, by: usize) -> Vec<usize> {
    (0..n).map(|i| (i + by) % n).collect()
}

/// One round: every measurement, every contender once, in an order rotated
/// by the round number. Round 0 is the warm-up and is not recorded.
fn run_round(all: &mut [Box<dyn Contender>], plan: &Plan, round: usize, samples: &mut Samples) {
    let n = all.len();
    let order = rotated(n, round);
    let mut record = |what: What, kind: Kind, value: f64| {
        progress();
        if round > 0 {
            samples.push(what, kind, value);
        }
    };
    // The small round trips are short: each round runs them in several
    // passes, every contender once per pass, so that noise that comes and
    // goes (another process on the CPU) hits all contenders alike, and each
    // pass is one sample.
    for pass in 0..RTT_PASSES {
        let iters = plan.rtt_iters / RTT_PASSES as u64;
        for i in rotated(n, round * RTT_PASSES + pass) {
            let c = &mut all[i];
            place(c.as_ref(), Placement::SameCpu);
            let d = c.rtt_small(iters);
            record(What::RttSmall, c.kind(), micros_per(d, iters));
            if let Some(d) = c.rtt_small_nosignal(iters) {
                record(What::RttNoSignal, c.kind(), micros_per(d, iters));
            }
        }
    }
    for pass in 0..RTT_PASSES {
        let iters = plan.fd_iters / RTT_PASSES as u64;
        for i in rotated(n, round * RTT_PASSES + pass) {
            let c = &mut all[i];
            if c.kind().passes_fds() {
                place(c.as_ref(), Placement::SameCpu);
                // 0 fds: what a receive that may get fds costs (sendmsg,
                // recvmsg with a control buffer) next to plain send/recv.
                for fds in [0, 1] {
                    let d = c.rtt_fds(fds, iters);
                    record(What::RttFds(fds), c.kind(), micros_per(d, iters));
                }
            }
        }
    }
    for size in SIZES {
        let iters = plan.rtt_count(size);
        for &i in &order {
            let c = &mut all[i];
            place(c.as_ref(), Placement::SameCpu);
            let d = c.rtt_bytes(size, iters);
            record(What::Rtt(size), c.kind(), micros_per(d, iters));
        }
    }
    for size in SIZES {
        let count = plan.tput_count(size);
        for &i in &order {
            let c = &mut all[i];
            place(c.as_ref(), TPUT_PLACEMENT);
            let d = c.tput(size, count);
            record(What::Tput(size), c.kind(), mb_per_s(d, size, count));
        }
    }
    let count = plan.tput_count(CHECK_SIZE);
    for &i in &order {
        let c = &mut all[i];
        if CHECKED.contains(&c.kind()) {
            for (split, placement) in [(false, Placement::SameCpu), (true, Placement::SplitCpus)] {
                place(c.as_ref(), placement);
                let d = c.tput(CHECK_SIZE, count);
                record(What::Check(split), c.kind(), mb_per_s(d, CHECK_SIZE, count));
            }
        }
    }
}

/// The parent's allocations per message (a send or a receive) over `iters`
/// small round trips after as many for warm-up, for every contender.
fn count_allocations(all: &mut [Box<dyn Contender>], iters: u64) -> Vec<(Kind, f64)> {
    all.iter_mut()
        .map(|c| {
            place(c.as_ref(), Placement::SameCpu);
            c.rtt_small(iters);
            let before = allocations();
            c.rtt_small(iters);
            let made = allocations() - before;
            progress();
            (c.kind(), made as f64 / (2 * iters) as f64)
        })
        .collect()
}

// ---- machine and date --------------------------------------------------------

struct Machine {
    cpu: String,
    cores: usize,
    kernel: String,
}

impl Machine {
    fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|x| x.1))
            .map_or("unknown CPU".to_string(), |s| s.trim().to_string());
        let cores = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count()
            .max(1);
        // What `uname -r` prints.
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or("unknown".to_string(), |s| s.trim().to_string());
        Machine { cpu, cores, kernel }
    }
}

/// Today's date (UTC), `YYYY-MM-DD`.
fn today() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Howard Hinnant's days-to-civil algorithm.
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

// ---- tables ----------------------------------------------------------------

/// Printed lines, flushed to stdout in one go.
#[derive(Default)]
struct Report(String);

impl Report {
    fn line(&mut self, s: String) {
        self.0.push_str(&s);
        self.0.push('\n');
    }

    fn flush(&mut self) {
        print!("{}", self.0);
        self.0.clear();
    }
}

struct Table {
    title: String,
    note: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(title: impl Into<String>, note: impl Into<String>, header: &[&str]) -> Table {
        Table {
            title: title.into(),
            note: note.into(),
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn widths(&self) -> Vec<usize> {
        (0..self.header.len())
            .map(|i| {
                self.rows
                    .iter()
                    .map(|r| r[i].chars().count())
                    .chain([self.header[i].chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect()
    }

    fn text(&self) -> String {
        let w = self.widths();
        let mut s = format!("== {}\n", self.title);
        if !self.note.is_empty() {
            let _ = writeln!(s, "   ({})", self.note);
        }
        let line = |cells: &[String]| {
            let mut l = String::new();
            for (i, c) in cells.iter().enumerate() {
                if i == 0 {
                    let _ = write!(l, "{c:<w$}", w = w[0]);
                } else {
                    let _ = write!(l, "  {c:>w$}", w = w[i]);
                }
            }
            l.trim_end().to_string()
        };
        s.push_str(&line(&self.header));
        s.push('\n');
        for r in &self.rows {
            s.push_str(&line(r));
            s.push('\n');
        }
        s.pop();
        s
    }

    fn markdown(&self) -> String {
        let mut s = format!("### {}\n\n", self.title);
        if !self.note.is_empty() {
            let _ = writeln!(s, "{}\n", self.note);
        }
        let _ = writeln!(s, "| {} |", self.header.join(" | "));
        let align: Vec<&str> = (0..self.header.len())
            .map(|i| if i == 0 { "---" } else { "---:" })
            .collect();
        let _ = writeln!(s, "| {} |", align.join(" | "));
        for r in &self.rows {
            let _ = writeln!(s, "| {} |", r.join(" | "));
        }
        s
    }
}

fn fmt_us(v: Option<f64>) -> String {
    match v {
        None => "n/a".into(),
        Some(v) if v >= 1000.0 => format!("{v:.0}"),
        Some(v) if v >= 100.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

fn fmt_spread(v: Option<(f64, f64)>) -> String {
    v.map_or("n/a".into(), |(a, b)| {
        format!("{}-{}", fmt_us(Some(a)), fmt_us(Some(b)))
    })
}

fn fmt_mbs(v: Option<f64>) -> String {
    match v {
        None => "n/a".into(),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.1}"),
    }
}

fn fmt_ratio(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.2}"))
}

/// One summary value and its target.
struct Target {
    key: &'static str,
    value: Option<f64>,
    /// `true`: the value must be at most `bound`; `false`: at least.
    at_most: bool,
    bound: f64,
}

impl Target {
    fn met(&self) -> Option<bool> {
        let v = (self.value? * 100.0).round() / 100.0; // as printed
        Some(if self.at_most {
            v <= self.bound
        } else {
            v >= self.bound
        })
    }

    fn printed(&self) -> String {
        match self.value {
            None => "n/a".into(),
            Some(v) if self.key == "allocs_per_msg" && v.fract() == 0.0 => format!("{v:.0}"),
            Some(v) => format!("{v:.2}"),
        }
    }

    fn bound_text(&self) -> String {
        let op = if self.at_most { "<=" } else { ">=" };
        if self.key == "allocs_per_msg" {
            format!("{op} {:.0}", self.bound)
        } else {
            format!("{op} {:.2}", self.bound)
        }
    }
}

struct Tables {
    list: Vec<Table>,
    summary: String,
}

impl Tables {
    fn build(s: &Samples, allocs: &[(Kind, f64)], plan: &Plan) -> Tables {
        let mut list = Vec::new();
        let same = Placement::SameCpu.describe();
        let typed = Kind::TypedSeqPacket;
        let ipc = Kind::IpcChannel;

        // Small round trips.
        let mut t = Table::new(
            "round trip of a small message (u64 typed, 8 bytes raw)",
            format!(
                "{same}; {} round trips per round in {RTT_PASSES} passes, one sample each; \
                 baseline: raw SEQPACKET, raw pipe for pipes",
                plan.rtt_iters
            ),
            &[
                "contender",
                "rtt µs",
                "p25-p75",
                "vs baseline",
                "baseline",
                "vs ipc-channel",
            ],
        );
        for k in Kind::ALL {
            t.row(vec![
                k.name().into(),
                fmt_us(s.median(What::RttSmall, k)),
                fmt_spread(s.spread(What::RttSmall, k)),
                fmt_ratio(s.ratio(What::RttSmall, k, k.baseline())),
                k.baseline().name().into(),
                fmt_ratio(s.ratio(What::RttSmall, k, ipc)),
            ]);
        }
        list.push(t);

        // The floor of a pipe writer that survives a reader that left.
        let mut t = Table::new(
            "round trip of a small message over pipes whose writes cannot raise SIGPIPE",
            format!(
                "{same}; measured with the small round trips; raw pipe here writes with \
                 pwritev2(RWF_NOSIGNAL) instead of write, as a pipe writer that must \
                 survive a reader that went away does (courier's pipe transport writes so); \
                 the last column compares with raw pipe's plain write/read round trip (the \
                 baseline of the pipe round trip)"
            ),
            &[
                "contender",
                "rtt µs",
                "p25-p75",
                "vs raw pwritev2/read",
                "vs raw write/read",
            ],
        );
        let floor = s.median(What::RttNoSignal, Kind::RawPipe);
        let plain = s.median(What::RttSmall, Kind::RawPipe);
        let rows = [
            (
                "raw pipe, pwritev2(RWF_NOSIGNAL)",
                What::RttNoSignal,
                Kind::RawPipe,
            ),
            ("raw pipe, write", What::RttSmall, Kind::RawPipe),
            (Kind::TypedPipe.name(), What::RttSmall, Kind::TypedPipe),
        ];
        for (name, what, k) in rows {
            let v = s.median(what, k);
            t.row(vec![
                name.into(),
                fmt_us(v),
                fmt_spread(s.spread(what, k)),
                fmt_ratio(v.zip(floor).map(|(v, f)| v / f)),
                fmt_ratio(v.zip(plain).map(|(v, p)| v / p)),
            ]);
        }
        list.push(t);

        // fd round trips.
        let mut t = Table::new(
            "round trip of an 8-byte message carrying 1 fd each way",
            format!(
                "{same}; {} round trips per round in {RTT_PASSES} passes, one sample each; \
                 the child sends back the fds it got and closes its copies, the parent \
                 closes what returns",
                plan.fd_iters
            ),
            &["contender", "rtt µs", "p25-p75", "vs raw SEQPACKET"],
        );
        for k in Kind::ALL {
            let v = s.median(What::RttFds(1), k);
            t.row(vec![
                k.name().into(),
                fmt_us(v),
                fmt_spread(s.spread(What::RttFds(1), k)),
                fmt_ratio(s.ratio(What::RttFds(1), k, Kind::RawSeqPacket)),
            ]);
        }
        list.push(t);

        // The floor of an fd-capable receive.
        let mut t = Table::new(
            "round trip of an 8-byte message, no fds, through paths that can carry fds",
            format!(
                "{same}; measured with the fd round trips; raw SEQPACKET here uses \
                 sendmsg and recvmsg with a control buffer for 253 fds, as any receiver that \
                 accepts fds must; the last column compares with raw SEQPACKET's plain \
                 send/recv round trip (the baseline of the small round trip)"
            ),
            &[
                "contender",
                "rtt µs",
                "p25-p75",
                "vs raw sendmsg/recvmsg",
                "vs raw send/recv",
            ],
        );
        let plain = s.median(What::RttSmall, Kind::RawSeqPacket);
        for k in Kind::ALL {
            let v = s.median(What::RttFds(0), k);
            t.row(vec![
                k.name().into(),
                fmt_us(v),
                fmt_spread(s.spread(What::RttFds(0), k)),
                fmt_ratio(s.ratio(What::RttFds(0), k, Kind::RawSeqPacket)),
                fmt_ratio(v.zip(plain).map(|(v, p)| v / p)),
            ]);
        }
        list.push(t);

        // Round trips by payload size.
        let mut header = vec!["contender".to_string()];
        header.extend(SIZES.iter().map(|&z| human(z)));
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        let mut t = Table::new(
            "round trip of a payload by size, µs",
            format!(
                "{same}; the child receives the payload into a buffer it owns and sends it \
                 back; {} to {} round trips per size and round",
                plan.rtt_count.0, plan.rtt_count.1
            ),
            &header,
        );
        for k in Kind::ALL {
            let mut row = vec![k.name().to_string()];
            row.extend(SIZES.iter().map(|&z| fmt_us(s.median(What::Rtt(z), k))));
            t.row(row);
        }
        list.push(t);
        let mut t = Table::new(
            "round trip of a payload by size, ratio to the best raw path at that size",
            "lower is better; 1.00 = as fast as the fastest of the raw paths (SEQPACKET, pipe, shm; shm with 2 MiB pieces above 256 KiB, where it differs from the 256 KiB one)",
            &header,
        );
        for k in Kind::ALL {
            let mut row = vec![k.name().to_string()];
            row.extend(SIZES.iter().map(|&z| {
                let best = s.best_raw(What::Rtt(z)).map(|b| b.1);
                fmt_ratio(s.median(What::Rtt(z), k).zip(best).map(|(v, b)| v / b))
            }));
            t.row(row);
        }
        list.push(t);

        // Throughput by payload size.
        let tput_note = format!(
            "{}; the parent sends N payloads ({} to {} per size and round, about {} each), \
             the child receives each into a buffer it owns and acks once",
            TPUT_PLACEMENT.describe(),
            plan.tput_count.0,
            plan.tput_count.1,
            human(plan.tput_bytes)
        );
        let mut t = Table::new(
            "one-way throughput by payload size, MB/s",
            tput_note,
            &header,
        );
        for k in Kind::ALL {
            let mut row = vec![k.name().to_string()];
            row.extend(SIZES.iter().map(|&z| fmt_mbs(s.median(What::Tput(z), k))));
            t.row(row);
        }
        list.push(t);
        let mut t = Table::new(
            "one-way throughput, ratio to the best raw path at that size",
            "higher is better",
            &header,
        );
        for k in Kind::ALL {
            let mut row = vec![k.name().to_string()];
            row.extend(SIZES.iter().map(|&z| {
                let best = s.best_raw(What::Tput(z)).map(|b| b.1);
                fmt_ratio(s.median(What::Tput(z), k).zip(best).map(|(v, b)| v / b))
            }));
            t.row(row);
        }
        let mut best_row = vec!["(best raw path)".to_string()];
        best_row.extend(SIZES.iter().map(|&z| {
            s.best_raw(What::Tput(z))
                .map_or("n/a".into(), |b| b.0.name().to_string())
        }));
        t.row(best_row);
        let mut ipc_row = vec!["typed SEQPACKET vs ipc-channel".to_string()];
        ipc_row.extend(
            SIZES
                .iter()
                .map(|&z| fmt_ratio(s.ratio(What::Tput(z), typed, ipc))),
        );
        t.row(ipc_row);
        list.push(t);

        // Placement check.
        let mut t = Table::new(
            format!(
                "placement check: one-way throughput at {}, MB/s",
                human(CHECK_SIZE)
            ),
            format!(
                "same CPU: {}; split: {}; the throughput tables use {}",
                Placement::SameCpu.describe(),
                Placement::SplitCpus.describe(),
                if TPUT_PLACEMENT == Placement::SplitCpus {
                    "split"
                } else {
                    "same CPU"
                }
            ),
            &["contender", "same CPU", "split CPUs", "split / same"],
        );
        for k in CHECKED {
            let a = s.median(What::Check(false), k);
            let b = s.median(What::Check(true), k);
            t.row(vec![
                k.name().into(),
                fmt_mbs(a),
                fmt_mbs(b),
                fmt_ratio(a.zip(b).map(|(a, b)| b / a)),
            ]);
        }
        list.push(t);

        // Allocations.
        let mut t = Table::new(
            "heap allocations of the parent per small message in steady state",
            format!(
                "{} round trips after as many for warm-up; allocations / (2 x round trips), \
                 counted on the measuring thread only",
                plan.alloc_iters
            ),
            &["contender", "allocs/msg"],
        );
        for (k, a) in allocs {
            t.row(vec![k.name().into(), format!("{a:.2}")]);
        }
        list.push(t);

        // Summary.
        let tput = |z: usize| Some(s.median(What::Tput(z), typed)? / s.best_raw(What::Tput(z))?.1);
        let typed_allocs = allocs
            .iter()
            .filter(|(k, _)| matches!(k, Kind::TypedSeqPacket | Kind::TypedDgram | Kind::TypedPipe))
            .map(|(_, a)| *a)
            .reduce(f64::max);
        let targets = [
            Target {
                key: "rtt_typed_vs_raw",
                value: s.ratio(What::RttSmall, typed, Kind::RawSeqPacket),
                at_most: true,
                bound: 1.10,
            },
            Target {
                key: "rtt_pipe_vs_rawpipe",
                value: s.ratio(What::RttSmall, Kind::TypedPipe, Kind::RawPipe),
                at_most: true,
                bound: 1.10,
            },
            Target {
                key: "fd1_typed_vs_raw",
                value: s.ratio(What::RttFds(1), typed, Kind::RawSeqPacket),
                at_most: true,
                bound: 1.15,
            },
            Target {
                key: "tput64k_typed_vs_raw",
                value: tput(64 << 10),
                at_most: false,
                bound: 0.85,
            },
            Target {
                key: "tput1m_typed_vs_raw",
                value: tput(1 << 20),
                at_most: false,
                bound: 0.85,
            },
            Target {
                key: "tput16m_typed_vs_raw",
                value: tput(16 << 20),
                at_most: false,
                bound: 0.85,
            },
            Target {
                key: "rtt_typed_vs_ipc_channel",
                value: s.ratio(What::RttSmall, typed, ipc),
                at_most: true,
                bound: 1.00,
            },
            Target {
                key: "tput1m_typed_vs_ipc_channel",
                value: s.ratio(What::Tput(1 << 20), typed, ipc),
                at_most: false,
                bound: 2.0,
            },
            Target {
                key: "tput16m_typed_vs_ipc_channel",
                value: s.ratio(What::Tput(16 << 20), typed, ipc),
                at_most: false,
                bound: 2.0,
            },
            Target {
                key: "allocs_per_msg",
                value: typed_allocs,
                at_most: true,
                bound: 0.0,
            },
        ];
        let mut t = Table::new(
            "summary against targets",
            "typed = courier's typed channel over SEQPACKET; rtt/fd: time ratios (lower is \
             better); tput: throughput ratios against the best raw path or ipc-channel \
             (higher is better); allocs_per_msg: the most over the typed transports",
            &["value", "ratio", "target", "status"],
        );
        for target in &targets {
            t.row(vec![
                target.key.into(),
                target.printed(),
                target.bound_text(),
                match target.met() {
                    Some(true) => "met".into(),
                    Some(false) => "missed".into(),
                    None => "n/a".into(),
                },
            ]);
        }
        list.push(t);
        let summary = format!(
            "summary: {}",
            targets
                .iter()
                .map(|t| format!("{}={}", t.key, t.printed()))
                .collect::<Vec<_>>()
                .join(" ")
        );
        Tables { list, summary }
    }
}

// ---- docs ------------------------------------------------------------------

fn docs_markdown(
    machine: &Machine,
    date: &str,
    command: &str,
    plan: &Plan,
    tables: &Tables,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Benchmarks: courier against raw syscalls and ipc-channel\n"
    );
    let _ = writeln!(
        s,
        "Written by `benches/compare.rs` (`--write-docs`); do not edit by hand.\n"
    );
    let _ = writeln!(
        s,
        "- **machine**: {}, {} cores, Linux {}",
        machine.cpu, machine.cores, machine.kernel
    );
    let _ = writeln!(s, "- **date**: {date}");
    let _ = writeln!(s, "- **command**: `{command}`");
    let _ = writeln!(
        s,
        "- **method**: parent and child are two processes (the child is the bench binary \
         re-executed in a child role); {} rounds after one warm-up round; in each round every \
         contender runs every measurement once, interleaved (the order rotates by round), so \
         noise on this shared machine hits all of them alike; the small and fd round trips run \
         in {RTT_PASSES} passes per round, each pass a sample; tables give medians over samples \
         and ratios of medians.",
        plan.rounds
    );
    let _ = writeln!(
        s,
        "- **pinning**: round trips run with {} (a round trip is then two context switches on \
         one CPU, not a cross-CPU wakeup whose cost swings with where the scheduler puts the \
         two sides: unpinned round trips swing 5-52 µs on this 2-core VM). One-way throughput \
         runs with {}, chosen by measurement: in the placement check (below, measured again in \
         every run) two CPUs were as fast as one or faster for every contender checked (0.97x \
         to 1.6x at 1 MiB over five runs while the bench was written, the spread being this \
         VM's noise), and it is the placement a pipelined stream wants: the sender fills the \
         next packet or slot while the receiver empties the last, where on one CPU the two \
         alternate and every copy waits for the other.",
        Placement::SameCpu.describe(),
        TPUT_PLACEMENT.describe()
    );
    let _ = writeln!(
        s,
        "- **noise**: a 2-vCPU shared VM; compare ratios within one run, not absolute figures \
         across runs.\n"
    );
    let _ = writeln!(
        s,
        "![round trip and throughput by payload size](benchmarks.svg)\n"
    );
    let _ = writeln!(
        s,
        "Left: round-trip time by payload size (measured: the parent sends the payload, the \
         child receives it into a buffer it owns and sends it back; both on one CPU). Right: \
         one-way throughput by payload size (parent and child on different CPUs). Both axes \
         are logarithmic.\n"
    );
    let _ = writeln!(s, "## Contenders\n");
    for k in Kind::ALL {
        let _ = writeln!(s, "- **{}**: {}", k.name(), k.how());
    }
    let _ = writeln!(s, "\n## Results\n");
    for t in &tables.list {
        s.push_str(&t.markdown());
        s.push('\n');
    }
    let _ = writeln!(s, "```text\n{}\n```\n", tables.summary);
    let _ = writeln!(s, "## Running it\n");
    let _ = writeln!(
        s,
        "```text\ncargo bench --bench compare                          # {} rounds\n\
         cargo bench --bench compare -- --quick               # {} rounds, under 3 minutes\n\
         cargo bench --bench compare -- --quick --write-docs  # rewrites this page and the plot\n\
         cargo bench --bench matrix                           # criterion: every contender x size x fd count\n\
         cargo bench --bench matrix -- rtt/typed              # a filter (regex on the benchmark id)\n```",
        Plan::new(false).rounds,
        Plan::new(true).rounds
    );
    let _ = writeln!(
        s,
        "\nThe criterion matrix (`benches/matrix.rs`) names its benchmarks \
         `rtt/<contender>/u64`, `rtt/<contender>/<size>`, `rtt_fds/<contender>/<n>fds` and \
         `tput/<contender>/<size>` with contenders {} and sizes {}.",
        Kind::ALL
            .iter()
            .map(|k| format!("`{}`", k.id()))
            .collect::<Vec<_>>()
            .join(", "),
        SIZES
            .iter()
            .map(|&z| format!("`{}`", contenders::human_id(z)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    s
}

/// Colors per contender, in [`Kind::ALL`] order.
const COLORS: [&str; 9] = [
    "#1f77b4", "#2ca02c", "#9467bd", "#bcbd22", "#8c564b", "#d62728", "#ff7f0e", "#e377c2",
    "#17becf",
];

/// Two log-log panels: round trip (µs) and one-way throughput (MB/s)
/// against payload size, one line per contender, and a legend.
fn plot_svg(s: &Samples) -> String {
    const W: f64 = 1100.0;
    const H: f64 = 560.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="Helvetica, Arial, sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let panels = [
        ("round trip by payload size (µs, log)", "µs", 60.0, true),
        (
            "one-way throughput by payload size (MB/s, log)",
            "MB/s",
            610.0,
            false,
        ),
    ];
    for (title, unit, x0, rtt) in panels {
        let series: Vec<(Kind, Vec<(usize, f64)>)> = Kind::ALL
            .iter()
            .map(|&k| {
                let pts = SIZES
                    .iter()
                    .filter_map(|&z| {
                        let what = if rtt { What::Rtt(z) } else { What::Tput(z) };
                        s.median(what, k).filter(|v| *v > 0.0).map(|v| (z, v))
                    })
                    .collect();
                (k, pts)
            })
            .collect();
        panel(&mut svg, title, unit, x0, 40.0, 430.0, 400.0, &series);
    }
    // Legend, two rows of five.
    for (i, k) in Kind::ALL.iter().enumerate() {
        let x = 60.0 + (i % 5) as f64 * 205.0;
        let y = 505.0 + (i / 5) as f64 * 22.0;
        let dash = if k.is_raw() {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = writeln!(
            svg,
            r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{}" stroke-width="2.5"{dash}/><circle cx="{}" cy="{y}" r="3.5" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            x + 36.0,
            COLORS[i],
            x + 18.0,
            COLORS[i],
            x + 44.0,
            y + 4.0,
            k.name()
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// One panel at (`x0`, `y0`) of `w` x `h` plot area.
#[allow(clippy::too_many_arguments)]
fn panel(
    svg: &mut String,
    title: &str,
    unit: &str,
    x0: f64,
    y0: f64,
    w: f64,
    h: f64,
    series: &[(Kind, Vec<(usize, f64)>)],
) {
    let values: Vec<f64> = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.1))
        .collect();
    let (lo, hi) = values
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if values.is_empty() {
        (1.0, 10.0)
    } else {
        (lo, hi)
    };
    let d0 = lo.log10().floor() as i32;
    let d1 = (hi.log10().ceil() as i32).max(d0 + 1);
    let x_of = |size: usize| {
        let (a, b) = (
            (SIZES[0] as f64).log2(),
            (SIZES[SIZES.len() - 1] as f64).log2(),
        );
        x0 + ((size as f64).log2() - a) / (b - a) * w
    };
    let y_of = |v: f64| y0 + h - (v.log10() - f64::from(d0)) / f64::from(d1 - d0) * h;
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle" font-size="14" font-weight="bold">{title}</text>"#,
        x0 + w / 2.0,
        y0 - 14.0
    );
    let _ = writeln!(
        svg,
        "<rect x=\"{x0}\" y=\"{y0}\" width=\"{w}\" height=\"{h}\" fill=\"none\" stroke=\"#444\"/>"
    );
    for d in d0..=d1 {
        let y = y_of(10f64.powi(d));
        let _ = writeln!(
            svg,
            "<line x1=\"{x0}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            x0 + w,
            x0 - 6.0,
            y + 4.0,
            decade_label(d, unit)
        );
    }
    for &z in &SIZES {
        let x = x_of(z);
        let _ = writeln!(
            svg,
            "<line x1=\"{x:.1}\" y1=\"{y0}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#ddd\"/><text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            y0 + h,
            y0 + h + 18.0,
            human(z)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">payload size (log)</text>"#,
        x0 + w / 2.0,
        y0 + h + 38.0
    );
    for (kind, pts) in series {
        let i = Kind::ALL.iter().position(|k| k == kind).unwrap_or(0);
        let color = COLORS[i];
        let dash = if kind.is_raw() {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let path: Vec<String> = pts
            .iter()
            .map(|&(z, v)| format!("{:.1},{:.1}", x_of(z), y_of(v)))
            .collect();
        // courier's default, the subject of the comparison, stands out.
        let width = if *kind == Kind::TypedSeqPacket {
            3.5
        } else {
            2.0
        };
        if path.len() > 1 {
            let _ = writeln!(
                svg,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="{width}"{dash}/>"#,
                path.join(" ")
            );
        }
        for &(z, v) in pts {
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"><title>{}: {} {}</title></circle>"#,
                x_of(z),
                y_of(v),
                kind.name(),
                human(z),
                if unit == "µs" {
                    fmt_us(Some(v)) + " µs"
                } else {
                    fmt_mbs(Some(v)) + " MB/s"
                }
            );
        }
    }
}

/// `1 µs`, `10 ms`, `100 MB/s`, `10 GB/s` for the decade 10^d of `unit`.
fn decade_label(d: i32, unit: &str) -> String {
    let (units, base): (&[&str], i32) = if unit == "µs" {
        (&["µs", "ms", "s"], 0)
    } else {
        (&["MB/s", "GB/s", "TB/s"], 0)
    };
    if d < base {
        return format!("{} {}", 10f64.powi(d), units[0]);
    }
    let step = ((d - base) / 3).min(units.len() as i32 - 1);
    let mantissa = 10f64.powi(d - base - 3 * step);
    format!("{mantissa} {}", units[step as usize])
}
