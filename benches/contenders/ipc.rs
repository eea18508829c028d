//! servo's ipc-channel, the peer crate: `IpcSender<u64>` for round trips,
//! `ipc::bytes_channel` (its fastest path for bytes: no serde) for
//! payloads. It cannot pass arbitrary fds.
//!
//! Each workload has its own child, which connects to the parent's
//! `IpcOneShotServer` and hands over the ends the parent needs.

use std::time::{Duration, Instant};

use ipc_channel::ipc::{
    self, IpcBytesReceiver, IpcBytesSender, IpcOneShotServer, IpcReceiver, IpcSender,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Contender, Kind, Payloads, Reaped};

const SERVER_ENV: &str = "COURIER_BENCH_IPC_SERVER";

/// Spawns the child of `workload` and takes what it hands over. If the
/// child dies before connecting, `accept` waits forever: the benches'
/// watchdog ends that.
fn connect<T: Serialize + DeserializeOwned>(workload: &str) -> (T, Reaped) {
    let (server, name) = IpcOneShotServer::<T>::new().expect("IpcOneShotServer");
    let child = super::child_command(&format!("ipc:{workload}"))
        .env(SERVER_ENV, name)
        .spawn()
        .expect("spawn ipc-channel child");
    let child = Reaped(child);
    let (_, boot) = server.accept().expect("ipc-channel child connected");
    (boot, child)
}

/// The parent side. Channels are declared before the children, so they
/// close first and the children see end of stream.
pub struct Ipc {
    small: (IpcSender<u64>, IpcReceiver<u64>),
    bytes: (IpcBytesSender, IpcBytesReceiver),
    sink: (IpcBytesSender, IpcReceiver<u64>),
    payloads: Payloads<Vec<u8>>,
    children: Vec<Reaped>,
}

impl Ipc {
    /// Spawns and connects the three children.
    pub fn start() -> Self {
        let (small, a) = connect("echo-u64");
        let (bytes, b) = connect("echo-bytes");
        let (sink, c) = connect("sink");
        Ipc {
            small,
            bytes,
            sink,
            payloads: Payloads::default(),
            children: vec![a, b, c],
        }
    }
}

impl Contender for Ipc {
    fn kind(&self) -> Kind {
        Kind::IpcChannel
    }

    fn rtt_small(&mut self, iters: u64) -> Duration {
        let (tx, rx) = &self.small;
        let start = Instant::now();
        for i in 0..iters {
            tx.send(i).expect("send");
            assert_eq!(rx.recv().expect("recv"), i);
        }
        start.elapsed()
    }

    fn rtt_bytes(&mut self, size: usize, iters: u64) -> Duration {
        let (tx, rx) = &self.bytes;
        let payload = self.payloads.get(size, |v| v);
        let mut last = Vec::new();
        let start = Instant::now();
        for _ in 0..iters {
            tx.send(payload).expect("send");
            last = rx.recv().expect("recv");
        }
        let elapsed = start.elapsed();
        assert_eq!(last.len(), size);
        elapsed
    }

    fn rtt_fds(&mut self, _fds: usize, _iters: u64) -> Duration {
        unreachable!("ipc-channel cannot pass arbitrary fds")
    }

    fn tput(&mut self, size: usize, count: u64) -> Duration {
        let (tx, ack) = &self.sink;
        let payload = self.payloads.get(size, |v| v);
        let start = Instant::now();
        for _ in 0..count {
            tx.send(payload).expect("send");
        }
        tx.send(&[]).expect("send");
        let acked = ack.recv().expect("recv");
        let elapsed = start.elapsed();
        assert_eq!(acked, count);
        elapsed
    }

    fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|c| c.0.id()).collect()
    }
}

/// The child of role `ipc:<workload>`: runs until the parent's ends close.
pub fn child(workload: &str) {
    let name = std::env::var(SERVER_ENV).expect("the parent's server name");
    match workload {
        "echo-u64" => {
            let (to_child, requests) = ipc::channel::<u64>().expect("channel");
            let (replies, to_parent) = ipc::channel::<u64>().expect("channel");
            IpcSender::connect(name)
                .expect("connect")
                .send((to_child, to_parent))
                .expect("hand over");
            while let Ok(v) = requests.recv() {
                if replies.send(v).is_err() {
                    return;
                }
            }
        }
        "echo-bytes" => {
            let (to_child, requests) = ipc::bytes_channel().expect("channel");
            let (replies, to_parent) = ipc::bytes_channel().expect("channel");
            IpcSender::connect(name)
                .expect("connect")
                .send((to_child, to_parent))
                .expect("hand over");
            while let Ok(v) = requests.recv() {
                if replies.send(&v).is_err() {
                    return;
                }
            }
        }
        "sink" => {
            let (to_child, payloads) = ipc::bytes_channel().expect("channel");
            let (acks, to_parent) = ipc::channel::<u64>().expect("channel");
            IpcSender::connect(name)
                .expect("connect")
                .send((to_child, to_parent))
                .expect("hand over");
            let mut count = 0u64;
            while let Ok(v) = payloads.recv() {
                if v.is_empty() {
                    if acks.send(count).is_err() {
                        return;
                    }
                    count = 0;
                } else {
                    count += 1;
                }
            }
        }
        other => panic!("unknown ipc-channel workload {other:?}"),
    }
}
