//! courier's typed channel, over SEQPACKET (the default), DGRAM and pipes.
//!
//! Each workload has its own child with an exactly typed endpoint:
//! `u64` echo, `Bytes` echo, fd-message echo and a `Bytes` sink that acks
//! with a `u64`. Payloads are sent with `send_ref`, so the bench does not
//! rebuild them per message; every receive returns an owned value (a new
//! `Vec` inside `Bytes`), as a user gets it.
//!
//! SEQPACKET and pipe children come from `spawn_endpoint_over` /
//! `from_env`. A DGRAM endpoint cannot be spawned, so the parent makes a
//! DGRAM pair with `Config::new().datagram(true).endpoints()` and sends one
//! end to the child inside a message over a spawned SEQPACKET endpoint; the
//! child keeps that SEQPACKET endpoint in a thread that exits the process
//! at its end of stream (a DGRAM socket has none).

use std::any::Any;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use courier::{from_env, Bytes, CommandExt, Config, Endpoint, Fd, Transport};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Contender, Kind, Payloads, Reaped};

/// The fd message: a number and its fds. One fd travels as a field of its
/// own, the way a value that carries one fd is written; a `Vec` would add
/// an allocation of the value itself on both sides (callgrind, one fd per
/// message, an in-process round trip: 3,856 instructions as `One`, 4,798
/// as `Many`).
#[derive(Debug, Serialize, Deserialize)]
pub enum FdMsg {
    /// A sequence number and one fd.
    One {
        /// A sequence number.
        n: u64,
        /// The fd.
        fd: Fd<OwnedFd>,
    },
    /// A sequence number and any number of fds.
    Many {
        /// A sequence number.
        n: u64,
        /// The fds.
        fds: Vec<Fd<OwnedFd>>,
    },
}

impl FdMsg {
    /// A message carrying `fds`: [`FdMsg::One`] for one fd.
    fn new(mut fds: Vec<Fd<OwnedFd>>) -> Self {
        match fds.len() {
            1 => FdMsg::One {
                n: 0,
                fd: fds.pop().expect("one fd"),
            },
            _ => FdMsg::Many { n: 0, fds },
        }
    }

    /// How many fds it carries.
    fn fd_count(&self) -> usize {
        match self {
            FdMsg::One { .. } => 1,
            FdMsg::Many { fds, .. } => fds.len(),
        }
    }
}

/// Which transport the typed channel runs over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Over {
    /// `Transport::SeqPacket`, handshaken by `spawn_endpoint`.
    SeqPacket,
    /// A DGRAM pair, one end sent to the child.
    Dgram,
    /// `Transport::Pipe`, handshaken by `spawn_endpoint_over`.
    Pipe,
}

impl Over {
    fn id(self) -> &'static str {
        match self {
            Over::SeqPacket => "seqpacket",
            Over::Dgram => "dgram",
            Over::Pipe => "pipe",
        }
    }
}

/// A child and the parent's endpoint to it. Fields drop in order: the
/// endpoint, then (DGRAM) the SEQPACKET companion whose end of stream tells
/// the child to exit, then the child is reaped.
struct Peer<S, R> {
    ep: Endpoint<S, R>,
    companion: Option<Box<dyn Any>>,
    child: Reaped,
}

fn spawn<S, R>(over: Over, mode: &str) -> Peer<S, R>
where
    S: Serialize + DeserializeOwned + 'static,
    R: Serialize + DeserializeOwned + 'static,
{
    let mut cmd = super::child_command(&format!("typed:{}:{mode}", over.id()));
    match over {
        Over::SeqPacket | Over::Pipe => {
            let transport = if over == Over::Pipe {
                Transport::Pipe
            } else {
                Transport::SeqPacket
            };
            let spawned = cmd
                .spawn_endpoint_over::<S, R>(transport, Config::new())
                .unwrap_or_else(|e| panic!("spawn typed {} child: {e}", over.id()));
            Peer {
                ep: spawned.endpoint,
                companion: None,
                child: Reaped(spawned.child),
            }
        }
        Over::Dgram => {
            let (ours, theirs) = Config::new()
                .datagram(true)
                .endpoints::<S, R>()
                .expect("DGRAM endpoints");
            let spawned = cmd
                .spawn_endpoint_over::<Endpoint<R, S>, u64>(Transport::SeqPacket, Config::new())
                .unwrap_or_else(|e| panic!("spawn typed DGRAM child: {e}"));
            spawned
                .endpoint
                .send(theirs)
                .unwrap_or_else(|e| panic!("send the DGRAM end: {e}"));
            Peer {
                ep: ours,
                companion: Some(Box::new(spawned.endpoint)),
                child: Reaped(spawned.child),
            }
        }
    }
}

/// The parent side of one typed contender.
pub struct Typed {
    over: Over,
    small: Peer<u64, u64>,
    bytes: Peer<Bytes, Bytes>,
    fds: Option<Peer<FdMsg, FdMsg>>,
    sink: Peer<Bytes, u64>,
    payloads: Payloads<Bytes>,
    fd_msgs: Vec<FdMsg>,
    end_of_batch: Bytes,
}

impl Typed {
    /// Spawns the children of the workloads `over` supports.
    pub fn start(over: Over) -> Self {
        Typed {
            over,
            small: spawn(over, "echo-u64"),
            bytes: spawn(over, "echo-bytes"),
            fds: (over != Over::Pipe).then(|| spawn(over, "echo-fds")),
            sink: spawn(over, "sink"),
            payloads: Payloads::default(),
            fd_msgs: Vec::new(),
            end_of_batch: Bytes::default(),
        }
    }
}

impl Contender for Typed {
    fn kind(&self) -> Kind {
        match self.over {
            Over::SeqPacket => Kind::TypedSeqPacket,
            Over::Dgram => Kind::TypedDgram,
            Over::Pipe => Kind::TypedPipe,
        }
    }

    fn rtt_small(&mut self, iters: u64) -> Duration {
        let ep = &self.small.ep;
        let start = Instant::now();
        for i in 0..iters {
            ep.send(i).unwrap_or_else(|e| panic!("send: {e}"));
            assert_eq!(ep.recv().unwrap_or_else(|e| panic!("recv: {e}")), i);
        }
        start.elapsed()
    }

    fn rtt_bytes(&mut self, size: usize, iters: u64) -> Duration {
        let ep = &self.bytes.ep;
        let payload = self.payloads.get(size, Bytes::from);
        let mut last = Bytes::default();
        let start = Instant::now();
        for _ in 0..iters {
            ep.send_ref(payload).unwrap_or_else(|e| panic!("send: {e}"));
            last = ep.recv().unwrap_or_else(|e| panic!("recv: {e}"));
        }
        let elapsed = start.elapsed();
        assert_eq!(last.len(), size);
        assert_eq!(last[size - 1], payload[size - 1]);
        elapsed
    }

    fn rtt_fds(&mut self, fds: usize, iters: u64) -> Duration {
        let ep = &self.fds.as_ref().expect("no fds over pipes").ep;
        let msg = match self.fd_msgs.iter().position(|m| m.fd_count() == fds) {
            Some(at) => &self.fd_msgs[at],
            None => {
                let fds = super::dev_null_fds(fds).into_iter().map(Fd::new).collect();
                self.fd_msgs.push(FdMsg::new(fds));
                self.fd_msgs.last().unwrap()
            }
        };
        let start = Instant::now();
        for _ in 0..iters {
            ep.send_ref(msg).unwrap_or_else(|e| panic!("send: {e}"));
            let back = ep.recv().unwrap_or_else(|e| panic!("recv: {e}"));
            assert_eq!(back.fd_count(), fds);
            drop(back); // closes them
        }
        start.elapsed()
    }

    fn tput(&mut self, size: usize, count: u64) -> Duration {
        let ep = &self.sink.ep;
        let payload = self.payloads.get(size, Bytes::from);
        let start = Instant::now();
        for _ in 0..count {
            ep.send_ref(payload).unwrap_or_else(|e| panic!("send: {e}"));
        }
        ep.send_ref(&self.end_of_batch)
            .unwrap_or_else(|e| panic!("send: {e}"));
        let ack = ep.recv().unwrap_or_else(|e| panic!("recv: {e}"));
        let elapsed = start.elapsed();
        assert_eq!(ack, count);
        elapsed
    }

    fn pids(&self) -> Vec<u32> {
        let mut pids = vec![
            self.small.child.0.id(),
            self.bytes.child.0.id(),
            self.sink.child.0.id(),
        ];
        pids.extend(self.fds.as_ref().map(|p| p.child.0.id()));
        pids
    }
}

/// The child's endpoint over `over`.
fn endpoint<S, R>(over: &str) -> Endpoint<S, R>
where
    S: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    match over {
        "seqpacket" | "pipe" => {
            from_env(Config::new()).unwrap_or_else(|e| panic!("typed child: from_env: {e}"))
        }
        "dgram" => {
            let companion: Endpoint<u64, Endpoint<S, R>> = from_env(Config::new())
                .unwrap_or_else(|e| panic!("typed DGRAM child: from_env: {e}"));
            let ep = companion
                .recv()
                .unwrap_or_else(|e| panic!("typed DGRAM child: no DGRAM end: {e}"));
            std::thread::spawn(move || {
                // Nothing more is sent on it: this returns when the parent
                // is gone, and the DGRAM end would never say so.
                let _ = companion.recv();
                std::process::exit(0);
            });
            ep
        }
        other => panic!("unknown typed transport {other:?}"),
    }
}

fn echo<T: Serialize + DeserializeOwned + Send + 'static>(over: &str) {
    let ep = endpoint::<T, T>(over);
    while let Ok(value) = ep.recv() {
        if ep.send_ref(&value).is_err() {
            return;
        }
        // `value` drops here: an fd message's fds are closed.
    }
}

fn sink(over: &str) {
    let ep = endpoint::<u64, Bytes>(over);
    let mut count = 0u64;
    while let Ok(bytes) = ep.recv() {
        if bytes.is_empty() {
            if ep.send(count).is_err() {
                return;
            }
            count = 0;
        } else {
            count += 1;
        }
    }
}

/// The child of role `typed:<over>:<workload>`.
pub fn child(role: &str) {
    let (over, workload) = role.split_once(':').expect("typed:<over>:<workload>");
    match workload {
        "echo-u64" => echo::<u64>(over),
        "echo-bytes" => echo::<Bytes>(over),
        "echo-fds" => echo::<FdMsg>(over),
        "sink" => sink(over),
        other => panic!("unknown typed workload {other:?}"),
    }
}
