//! Small-message round trips over pipes and over SEQPACKET, raw and typed,
//! between two processes, interleaved in one run.
//!
//! ```text
//! cargo bench --bench pipe_rtt            # 15 rounds
//! cargo bench --bench pipe_rtt -- --quick # 5 rounds
//! ```
//!
//! Contenders, each a child process (this binary again) that echoes:
//! - `raw pipe pair`: 8 bytes written to the child's stdin, read back from
//!   its stdout with plain `write`/`read`;
//! - `typed over pipes`: a `u64` through `Endpoint<u64, u64>` over two
//!   pipes (`spawn_endpoint_over(Transport::Pipe, ..)`);
//! - `raw SEQPACKET`: 8 bytes through an inherited socket;
//! - `typed over SEQPACKET`: a `u64` through `Endpoint<u64, u64>`.
//!
//! Each round runs every contender for the same number of round trips;
//! the table gives the median over rounds of the mean round trip, and each
//! typed contender's ratio to its raw baseline.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::time::Instant;

use courier::transport::SeqPacketSocket;
use courier::{from_env, CommandExt, Config, Endpoint, Transport};

const ROLE_ENV: &str = "COURIER_BENCH_PIPE_ROLE";
const FD_ENV: &str = "COURIER_BENCH_FD";

fn main() {
    match std::env::var(ROLE_ENV).as_deref() {
        Ok("raw_pipe") => return raw_pipe_echo(),
        Ok("typed") => return typed_echo(),
        Ok("raw_seqpacket") => return raw_seqpacket_echo(),
        _ => {}
    }
    let quick = std::env::args().any(|a| a == "--quick");
    // Every process on one CPU (children inherit the mask): a round trip is
    // then two context switches on that CPU, not a cross-CPU wakeup whose
    // cost swings with where the scheduler puts the two sides, so the
    // comparison measures software overhead.
    pin_to_one_cpu();
    let (rounds, iters) = if quick { (5, 1_000) } else { (15, 4_000) };
    let exe = std::env::current_exe().unwrap();

    let mut raw_pipe = Command::new(&exe)
        .env(ROLE_ENV, "raw_pipe")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_child = raw_pipe.stdin.take().unwrap();
    let mut from_child = raw_pipe.stdout.take().unwrap();

    let mut typed_pipe = Command::new(&exe)
        .env(ROLE_ENV, "typed")
        .spawn_endpoint_over::<u64, u64>(Transport::Pipe, Config::new())
        .unwrap();
    let mut typed_sock = Command::new(&exe)
        .env(ROLE_ENV, "typed")
        .spawn_endpoint_over::<u64, u64>(Transport::SeqPacket, Config::new())
        .unwrap();

    let (raw_sock, theirs) = SeqPacketSocket::pair().unwrap();
    let mut cmd = Command::new(&exe);
    cmd.env(ROLE_ENV, "raw_seqpacket");
    let passed = courier::transport::inherit(&mut cmd, OwnedFd::from(theirs)).unwrap();
    cmd.env(FD_ENV, passed.number().to_string());
    let mut raw_sock_child = cmd.spawn().unwrap();
    drop(passed);

    let names = [
        "raw pipe pair",
        "typed over pipes",
        "raw SEQPACKET",
        "typed over SEQPACKET",
    ];
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    for _ in 0..rounds {
        let per_rtt = |start: Instant| start.elapsed().as_secs_f64() * 1e6 / iters as f64;

        let start = Instant::now();
        let mut buf = [0u8; 8];
        for i in 0..iters as u64 {
            to_child.write_all(&i.to_le_bytes()).unwrap();
            from_child.read_exact(&mut buf).unwrap();
            assert_eq!(u64::from_le_bytes(buf), i);
        }
        samples[0].push(per_rtt(start));

        let start = Instant::now();
        for i in 0..iters as u64 {
            typed_pipe.endpoint.send(i).unwrap();
            assert_eq!(typed_pipe.endpoint.recv().unwrap(), i);
        }
        samples[1].push(per_rtt(start));

        let start = Instant::now();
        for i in 0..iters as u64 {
            raw_sock.send(&i.to_le_bytes()).unwrap();
            raw_sock.recv(&mut buf).unwrap();
            assert_eq!(u64::from_le_bytes(buf), i);
        }
        samples[2].push(per_rtt(start));

        let start = Instant::now();
        for i in 0..iters as u64 {
            typed_sock.endpoint.send(i).unwrap();
            assert_eq!(typed_sock.endpoint.recv().unwrap(), i);
        }
        samples[3].push(per_rtt(start));
    }
    drop(to_child);
    drop(typed_pipe.endpoint);
    drop(typed_sock.endpoint);
    drop(raw_sock);
    for child in [
        &mut raw_pipe,
        &mut typed_pipe.child,
        &mut typed_sock.child,
        &mut raw_sock_child,
    ] {
        assert!(child.wait().unwrap().success());
    }

    let medians: Vec<f64> = samples.iter_mut().map(|s| median(s)).collect();
    println!("{rounds} interleaved rounds of {iters} round trips; median of the per-round mean");
    println!("{:24} {:>10} {:>10}", "contender", "rtt (us)", "vs raw");
    for (i, name) in names.iter().enumerate() {
        let base = medians[i / 2 * 2];
        println!("{name:24} {:>10.2} {:>10.3}", medians[i], medians[i] / base);
    }
    println!(
        "summary: rtt_pipe_vs_rawpipe={:.3} rtt_typed_vs_raw={:.3}",
        medians[1] / medians[0],
        medians[3] / medians[2]
    );
}

fn pin_to_one_cpu() {
    use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
    use nix::unistd::Pid;
    let allowed = sched_getaffinity(Pid::from_raw(0)).unwrap();
    let cpu = (0..CpuSet::count())
        .find(|&c| allowed.is_set(c).unwrap_or(false))
        .unwrap();
    let mut one = CpuSet::new();
    one.set(cpu).unwrap();
    sched_setaffinity(Pid::from_raw(0), &one).unwrap();
    println!("all processes pinned to CPU {cpu}");
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn raw_pipe_echo() {
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    let mut buf = [0u8; 8];
    while stdin.read_exact(&mut buf).is_ok() {
        stdout.write_all(&buf).unwrap();
        stdout.flush().unwrap();
    }
}

fn typed_echo() {
    let ep: Endpoint<u64, u64> = from_env(Config::new()).unwrap();
    while let Ok(v) = ep.recv() {
        ep.send(v).unwrap();
    }
}

#[allow(unsafe_code)]
fn raw_seqpacket_echo() {
    let raw: i32 = std::env::var(FD_ENV).unwrap().parse().unwrap();
    // SAFETY: the parent made this fd inheritable for this process alone
    // and named it in FD_ENV; nothing else here owns it.
    let sock: SeqPacketSocket = unsafe { courier::transport::adopt_inherited(raw) }.unwrap();
    let mut buf = [0u8; 8];
    loop {
        match sock.recv(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                sock.send(&buf[..n]).unwrap();
            }
        }
    }
}
