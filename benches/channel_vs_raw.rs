//! Typed channel vs raw SEQPACKET, between two processes, in one run.
//!
//! ```text
//! cargo bench --bench channel_vs_raw            # full
//! cargo bench --bench channel_vs_raw -- --quick # fewer rounds
//! ```
//!
//! The bench re-executes itself as the peer process (environment variable
//! `COURIER_BENCH_PEER`), which connects to a random abstract name. Each
//! contender runs in several rounds, interleaved with the others so that
//! noise on this shared machine hits all of them alike; the table gives the
//! median of the rounds and the ratio to the raw baseline.

use std::ffi::OsStr;
use std::io::IoSlice;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

use courier::channel::{Bytes, Config, Endpoint};
use courier::transport::{AbstractName, Address, Listener, SendMsg, SeqPacketSocket, Wait};

const PEER_ENV: &str = "COURIER_BENCH_PEER";
const MIB: usize = 1 << 20;
const BIG_SNDBUF: usize = 8 * MIB;

fn main() {
    if let Some(name) = std::env::var_os(PEER_ENV) {
        peer(name.as_bytes());
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds = if quick { 5 } else { 15 };
    let name = AbstractName::random().expect("name");
    let listener = Listener::bind(&Address::from(name.clone())).expect("bind");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .env(PEER_ENV, OsStr::from_bytes(name.as_bytes())) // random names are printable ASCII
        .spawn()
        .expect("spawn peer");
    let connect = |mode: &[u8]| {
        let s = listener
            .accept_timeout(Duration::from_secs(10))
            .expect("peer connected");
        s.set_send_buffer_size(BIG_SNDBUF).unwrap();
        s.send(mode).unwrap();
        s
    };
    let raw = connect(b"raw_echo");
    let raw_sink = connect(b"raw_sink");
    let typed = Endpoint::<u64, u64>::from_socket(connect(b"typed_rtt"), Config::new());
    let bytes = Endpoint::<Bytes, u64>::from_socket(connect(b"typed_bytes"), Config::new());
    let bytes_shm = Endpoint::<Bytes, u64>::from_socket(
        connect(b"typed_bytes"),
        Config::new().inline_threshold(0),
    );

    let mut results: Vec<(String, Vec<f64>, &'static str)> = Vec::new();
    let mut record =
        |name: &str, value: f64, unit: &'static str| match results.iter_mut().find(|r| r.0 == name)
        {
            Some(r) => r.1.push(value),
            None => results.push((name.to_string(), vec![value], unit)),
        };
    let rtt_iters = if quick { 2_000 } else { 10_000 };
    for _ in 0..rounds {
        record("rtt u64: raw SEQPACKET", raw_rtt(&raw, rtt_iters), "us");
        record("rtt u64: typed channel", typed_rtt(&typed, rtt_iters), "us");
        for &size in &[16 << 10, 64 << 10, 100 << 10, MIB] {
            let count = (256 * MIB / size).clamp(20, 4000) / if quick { 4 } else { 1 };
            record(
                &format!("tput {}: raw SEQPACKET", human(size)),
                raw_tput(&raw_sink, size, count),
                "MB/s",
            );
            if size <= Config::MAX_INLINE_THRESHOLD {
                record(
                    &format!("tput {}: typed inline", human(size)),
                    typed_tput(&bytes, size, count),
                    "MB/s",
                );
            }
            record(
                &format!("tput {}: typed memfd", human(size)),
                typed_tput(&bytes_shm, size, count),
                "MB/s",
            );
        }
    }
    drop((raw, raw_sink, typed, bytes, bytes_shm));
    let _ = child.wait();

    println!(
        "{:<32} {:>12} {:>8} {:>10}",
        "contender", "median", "unit", "vs raw"
    );
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    for (name, values, unit) in &results {
        let m = median(values);
        let group = name.split(':').next().unwrap();
        let base = results
            .iter()
            .find(|r| r.0 == format!("{group}: raw SEQPACKET"))
            .map(|r| median(&r.1));
        let ratio = base.map_or(String::new(), |b| format!("{:.3}", m / b));
        println!("{name:<32} {m:>12.2} {unit:>8} {ratio:>10}");
    }
    println!("({rounds} interleaved rounds; rtt = round trip between two processes; tput = one-way, acked once per batch)");
}

fn human(size: usize) -> String {
    if size >= MIB {
        format!("{}MiB", size / MIB)
    } else {
        format!("{}KiB", size >> 10)
    }
}

/// Microseconds per round trip of an 8-byte message.
fn raw_rtt(s: &SeqPacketSocket, iters: usize) -> f64 {
    let mut buf = [0u8; 64];
    let start = Instant::now();
    for i in 0..iters as u64 {
        s.send(&i.to_le_bytes()).unwrap();
        s.recv(&mut buf).unwrap();
    }
    start.elapsed().as_secs_f64() * 1e6 / iters as f64
}

fn typed_rtt(e: &Endpoint<u64, u64>, iters: usize) -> f64 {
    let start = Instant::now();
    for i in 0..iters as u64 {
        e.send(i).unwrap();
        assert_eq!(e.recv().unwrap(), i);
    }
    start.elapsed().as_secs_f64() * 1e6 / iters as f64
}

/// MB/s of `count` raw messages of `size` bytes, acked once at the end.
fn raw_tput(s: &SeqPacketSocket, size: usize, count: usize) -> f64 {
    let payload = vec![7u8; size];
    let header = (count as u64).to_le_bytes();
    s.send(&header).unwrap();
    let start = Instant::now();
    for _ in 0..count {
        s.send_msg(&SendMsg::new(&[IoSlice::new(&payload)]), Wait::Block)
            .unwrap();
    }
    s.recv(&mut [0u8; 8]).unwrap();
    (size * count) as f64 / start.elapsed().as_secs_f64() / 1e6
}

fn typed_tput(e: &Endpoint<Bytes, u64>, size: usize, count: usize) -> f64 {
    e.send(Bytes(Vec::new())).unwrap(); // announces a batch
    e.send(Bytes((count as u64).to_le_bytes().to_vec()))
        .unwrap();
    let start = Instant::now();
    for _ in 0..count {
        e.send(Bytes(vec![7u8; size])).unwrap();
    }
    e.recv().unwrap();
    (size * count) as f64 / start.elapsed().as_secs_f64() / 1e6
}

/// The peer process: one thread per connection, each echoing or sinking.
fn peer(name: &[u8]) {
    let addr = Address::from(AbstractName::new(name).unwrap());
    let mut threads = Vec::new();
    for _ in 0..5 {
        let s = SeqPacketSocket::connect(&addr).expect("connect");
        s.set_send_buffer_size(BIG_SNDBUF).unwrap();
        let mut mode = [0u8; 16];
        let n = s.recv(&mut mode).unwrap();
        let mode = mode[..n].to_vec();
        threads.push(std::thread::spawn(move || match &mode[..] {
            b"raw_echo" => raw_echo(s),
            b"raw_sink" => raw_sink(s),
            b"typed_rtt" => {
                let e = Endpoint::<u64, u64>::from_socket(s, Config::new());
                while let Ok(v) = e.recv() {
                    e.send(v).unwrap();
                }
            }
            _ => {
                let e = Endpoint::<u64, Bytes>::from_socket(s, Config::new());
                while let Ok(first) = e.recv() {
                    assert!(first.is_empty());
                    let count = u64::from_le_bytes(e.recv().unwrap()[..8].try_into().unwrap());
                    for _ in 0..count {
                        e.recv().unwrap();
                    }
                    e.send(count).unwrap();
                }
            }
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
}

/// Echoes every message.
fn raw_echo(s: SeqPacketSocket) {
    let mut buf = [0u8; 64];
    while let Ok(n @ 1..) = s.recv(&mut buf) {
        s.send(&buf[..n]).unwrap();
    }
}

/// Batches: an 8-byte count, that many messages, then an 8-byte ack.
fn raw_sink(s: SeqPacketSocket) {
    let mut buf = vec![0u8; 4 * MIB + 64];
    while let Ok(8) = s.recv(&mut buf) {
        let count = u64::from_le_bytes(buf[..8].try_into().unwrap());
        for _ in 0..count {
            s.recv(&mut buf).unwrap();
        }
        s.send(&count.to_le_bytes()).unwrap();
    }
}
