//! The full matrix, with criterion: every contender of `benches/compare.rs`
//! by payload size and fd count, across two processes.
//!
//! ```text
//! cargo bench --bench matrix                         # everything (about 3 minutes here)
//! cargo bench --bench matrix -- rtt/typed            # a filter: a regex on the id
//! cargo bench --bench matrix -- 'tput/.*/16MiB'      # one size, every contender
//! cargo bench --bench matrix -- --list               # the ids
//! ```
//!
//! Benchmark ids:
//! - `rtt/<contender>/u64`: round trip of a small message (a `u64` typed,
//!   8 bytes raw); parent and child on one CPU;
//! - `rtt/<contender>/<size>`: round trip of a payload of 8B, 64B, 4KiB,
//!   64KiB, 1MiB or 16MiB: the child receives it into a buffer it owns and
//!   sends it back; one CPU;
//! - `rtt_fds/<contender>/<n>fds`: round trip of an 8-byte message carrying
//!   0, 1, 64 or 253 fds each way (the contenders that pass fds: raw
//!   SEQPACKET, courier-transport, typed SEQPACKET, typed DGRAM); one CPU;
//! - `tput/<contender>/<size>`: one-way throughput (criterion reports
//!   bytes/s): the parent sends `iters` payloads, the child receives each
//!   into a buffer it owns and acks once at the end; parent and child on
//!   different CPUs.
//!
//! Contenders: `raw-seqpacket`, `raw-pipe`, `raw-shm`, `transport`,
//! `typed-seqpacket`, `typed-dgram`, `typed-pipe`, `ipc-channel` (see
//! `benches/contenders/`). Each contender's children are started once, the
//! first time one of its benchmarks runs, and serve every iteration after
//! that; `iter_custom` times whole exchanges. Samples are few and short
//! (10 samples, 1 s, flat sampling from 64 KiB up) so that the whole
//! matrix stays usable on a 2-core machine; use `compare` for ratios, where
//! the contenders are interleaved.

// Unsafe code here: the mmap of the shared-memory ring in
// `contenders/raw_shm.rs`. One operation per block, each with its SAFETY.
#![allow(unsafe_code)]

#[path = "contenders/mod.rs"]
mod contenders;

use std::time::Duration;

use contenders::{
    human_id, place, progress, Contender, Kind, Placement, FD_COUNTS, SIZES, TPUT_PLACEMENT,
};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput};

/// Contenders, started the first time a benchmark needs them.
#[derive(Default)]
struct Pool(Vec<(Kind, Box<dyn Contender>)>);

impl Pool {
    fn get(&mut self, kind: Kind) -> &mut dyn Contender {
        let at = match self.0.iter().position(|(k, _)| *k == kind) {
            Some(at) => at,
            None => {
                self.0.push((kind, kind.start()));
                self.0.len() - 1
            }
        };
        self.0[at].1.as_mut()
    }
}

/// Flat sampling (the same iteration count in every sample) for slow
/// benchmarks, where linear sampling would take far longer than asked.
fn sampling(group: &mut BenchmarkGroup<'_, WallTime>, size: usize) {
    group.sampling_mode(if size >= 64 << 10 {
        SamplingMode::Flat
    } else {
        SamplingMode::Auto
    });
}

fn rtt(c: &mut Criterion, pool: &mut Pool) {
    let mut group = c.benchmark_group("rtt");
    for kind in Kind::ALL {
        group.sampling_mode(SamplingMode::Auto);
        group.bench_function(format!("{}/u64", kind.id()), |b| {
            let con = pool.get(kind);
            place(con, Placement::SameCpu);
            b.iter_custom(|iters| {
                let d = con.rtt_small(iters);
                progress();
                d
            });
        });
        for size in SIZES {
            sampling(&mut group, size);
            group.bench_function(format!("{}/{}", kind.id(), human_id(size)), |b| {
                let con = pool.get(kind);
                place(con, Placement::SameCpu);
                b.iter_custom(|iters| {
                    let d = con.rtt_bytes(size, iters);
                    progress();
                    d
                });
            });
        }
    }
    group.finish();
}

fn rtt_fds(c: &mut Criterion, pool: &mut Pool) {
    let mut group = c.benchmark_group("rtt_fds");
    for kind in Kind::ALL.into_iter().filter(|k| k.passes_fds()) {
        for fds in FD_COUNTS {
            group.bench_function(format!("{}/{fds}fds", kind.id()), |b| {
                let con = pool.get(kind);
                place(con, Placement::SameCpu);
                b.iter_custom(|iters| {
                    let d = con.rtt_fds(fds, iters);
                    progress();
                    d
                });
            });
        }
    }
    group.finish();
}

fn tput(c: &mut Criterion, pool: &mut Pool) {
    let mut group = c.benchmark_group("tput");
    for kind in Kind::ALL {
        for size in SIZES {
            sampling(&mut group, size);
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_function(format!("{}/{}", kind.id(), human_id(size)), |b| {
                let con = pool.get(kind);
                place(con, TPUT_PLACEMENT);
                b.iter_custom(|iters| {
                    let d = con.tput(size, iters);
                    progress();
                    d
                });
            });
        }
    }
    group.finish();
}

fn main() {
    if contenders::run_child_if_asked() {
        return;
    }
    // A sample of the slowest benchmark takes seconds; a minute without
    // progress means a child died where its peer cannot see it.
    contenders::start_watchdog(Duration::from_secs(120));
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .configure_from_args();
    let mut pool = Pool::default();
    rtt(&mut c, &mut pool);
    rtt_fds(&mut c, &mut pool);
    tput(&mut c, &mut pool);
    c.final_summary();
    drop(pool); // closes every channel; the children exit and are reaped
}
