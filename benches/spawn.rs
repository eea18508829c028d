//! What a spawned child with a channel costs, and how fast a death is
//! noticed.
//!
//! ```text
//! cargo bench --bench spawn            # 40 rounds
//! cargo bench --bench spawn -- --quick # 10 rounds
//! ```
//!
//! Interleaved in each round:
//! - `plain spawn + 1 byte`: `Command::spawn` of this binary with a piped
//!   stdout, until the child's first byte arrives (the baseline: a process
//!   started and able to talk);
//! - `spawn_endpoint + handshake`: the same binary through
//!   `CommandExt::spawn_endpoint`, until the handshake is complete;
//! - `kill -> Disconnected`: a child that sent 100 values and then waits is
//!   killed with SIGKILL; from `kill()` until the parent's receiver,
//!   having drained the 100 values, reports `Disconnected`;
//! - `kill -> pidfd readable`: in the same trial, from `kill()` until the
//!   child's pidfd polls readable (it is checked after the disconnect, so
//!   it is never earlier than that).

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use courier::{from_env, CommandExt, Config, Endpoint, RecvError};

const ROLE_ENV: &str = "COURIER_BENCH_SPAWN_ROLE";
const QUEUED: u32 = 100;

fn config() -> Config {
    Config::new().protocol("courier-bench/spawn", 1)
}

fn main() {
    match std::env::var(ROLE_ENV).as_deref() {
        Ok("plain") => {
            std::io::stdout().write_all(b"!").unwrap();
            return;
        }
        Ok("channel") => {
            let ep: Endpoint<u32, ()> = from_env(config()).expect("from_env");
            let _ = ep.recv(); // until the parent drops its end
            return;
        }
        Ok("doomed") => {
            let ep: Endpoint<u32, ()> = from_env(config()).expect("from_env");
            for i in 0..=QUEUED {
                ep.send(i).unwrap(); // the last one says "all sent"
            }
            std::thread::sleep(Duration::from_secs(60));
            return;
        }
        _ => {}
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds = if quick { 10 } else { 40 };
    let exe = std::env::current_exe().unwrap();
    let mut plain = Vec::new();
    let mut spawn = Vec::new();
    let mut death = Vec::new();
    let mut pidfd_death = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        let mut child = Command::new(&exe)
            .env(ROLE_ENV, "plain")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut byte = [0];
        child.stdout.take().unwrap().read_exact(&mut byte).unwrap();
        plain.push(start.elapsed());
        child.wait().unwrap();

        let start = Instant::now();
        let mut s = Command::new(&exe)
            .env(ROLE_ENV, "channel")
            .spawn_endpoint::<(), u32>(config())
            .unwrap();
        spawn.push(start.elapsed());
        drop(s.endpoint);
        assert!(s.child.wait().unwrap().success());

        let mut s = Command::new(&exe)
            .env(ROLE_ENV, "doomed")
            .spawn_endpoint::<(), u32>(config())
            .unwrap();
        // Wait until everything is queued: the last value.
        let mut received = Vec::new();
        while received.last() != Some(&QUEUED) {
            received.push(s.endpoint.recv().unwrap());
        }
        received.pop();
        let start = Instant::now();
        s.child.kill().unwrap();
        // Nothing is queued any more; the next recv waits for the death.
        assert!(matches!(s.endpoint.recv(), Err(RecvError::Disconnected)));
        death.push(start.elapsed());
        if let Some(pidfd) = &s.pidfd {
            assert!(pidfd.wait_timeout(Duration::from_secs(10)).unwrap());
            pidfd_death.push(start.elapsed());
        }
        s.child.wait().unwrap();
        assert_eq!(received, (0..QUEUED).collect::<Vec<_>>());
    }
    println!("{rounds} rounds, interleaved; median and max:");
    report("plain spawn + 1 byte", &mut plain);
    report("spawn_endpoint + handshake", &mut spawn);
    report("kill -> Disconnected", &mut death);
    report("kill -> pidfd readable", &mut pidfd_death);
    let ratio = median(&mut spawn).as_secs_f64() / median(&mut plain).as_secs_f64();
    println!("spawn_endpoint+handshake / plain spawn = {ratio:.3}");
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn report(name: &str, v: &mut [Duration]) {
    if v.is_empty() {
        println!("{name:28} (not measured on this kernel)");
        return;
    }
    let m = median(v);
    println!(
        "{name:28} median {m:>10.1?}   max {:>10.1?}",
        v[v.len() - 1]
    );
}
