//! Handing a channel to a process courier did not spawn: it finds the
//! service by name.
//!
//! A service listens on an unguessable abstract socket name. Any process of
//! the same user that knows the name connects (the service checks its
//! credentials and the handshake), asks for a feed of events, and gets
//! back a `Receiver` inside a message: a new channel, handed over, which
//! the service then fills.
//!
//! ```text
//! cargo run --example connect_by_name                      # both sides, for a demo
//! cargo run --example connect_by_name -- serve             # prints its name, serves until killed
//! cargo run --example connect_by_name -- connect <name>    # from any other shell
//! ```

use std::process::Command;
use std::time::Duration;

use courier::{AbstractName, Address, Config, Endpoint, Listener, Receiver};
use serde::{Deserialize, Serialize};

/// What a client asks.
#[derive(Serialize, Deserialize)]
struct Subscribe {
    /// How many events it wants.
    count: u32,
}

/// What the service answers: the receiving end of a new channel.
#[derive(Serialize, Deserialize)]
struct Feed {
    events: Receiver<Event>,
}

#[derive(Serialize, Deserialize, Debug)]
struct Event {
    seq: u32,
    from_pid: u32,
}

const TIMEOUT: Duration = Duration::from_secs(10);

fn config() -> Config {
    Config::new()
        .protocol("courier-example/feed", 1)
        .handshake_timeout(TIMEOUT)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [mode] if mode == "serve" => serve(None),
        [mode, name] if mode == "connect" => connect(name),
        [] => serve(Some(1)),
        _ => Err("usage: connect_by_name [serve | connect <name>]".into()),
    }
}

/// Serves `clients` clients (forever when `None`). In demo mode it starts
/// one client itself, as an ordinary process that is told only the name.
fn serve(clients: Option<usize>) -> Result<(), Box<dyn std::error::Error>> {
    let name = AbstractName::random()?;
    let listener = Listener::<Feed, Subscribe>::bind(&Address::from(name.clone()), config())?;
    let printable = String::from_utf8(name.as_bytes().to_vec())?;
    println!(
        "service {}: listening on abstract name {printable:?}",
        std::process::id()
    );
    let mut demo_client = match clients {
        Some(_) => Some(
            Command::new(std::env::current_exe()?)
                .args(["connect", &printable])
                .spawn()?,
        ),
        None => {
            println!("connect with: cargo run --example connect_by_name -- connect {printable}");
            None
        }
    };
    let mut served = 0;
    while clients.is_none_or(|n| served < n) {
        let client = match listener.accept() {
            Ok(client) => client,
            Err(e) => {
                // One peer's failure (wrong user, wrong protocol) is not ours.
                println!("service: refused a connection: {e}");
                continue;
            }
        };
        let pid = client.peer_cred()?.pid();
        let Subscribe { count } = client.recv_timeout(TIMEOUT)?;
        let (events_tx, events_rx) = courier::channel::<Event>()?;
        client
            .send(Feed { events: events_rx })
            .map_err(|e| format!("handing over the feed: {e}"))?;
        println!("service: handed a channel to pid {pid}; sending {count} events into it");
        for seq in 0..count {
            events_tx
                .send(Event {
                    seq,
                    from_pid: std::process::id(),
                })
                .map_err(|e| format!("event: {e}"))?;
        }
        served += 1;
    }
    if let Some(mut child) = demo_client.take() {
        let status = child.wait()?;
        println!("service: client exited with {status}");
        if !status.success() {
            return Err("the client failed".into());
        }
    }
    Ok(())
}

fn connect(name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let addr = Address::from(AbstractName::new(name.as_bytes())?);
    // Checks that the service runs as our user: anyone could have taken
    // an abstract name.
    let service: Endpoint<Subscribe, Feed> = Endpoint::connect(&addr, config())?;
    println!(
        "client {}: connected to service pid {}",
        std::process::id(),
        service.peer_cred()?.pid()
    );
    service
        .send(Subscribe { count: 3 })
        .map_err(|e| format!("subscribe: {e}"))?;
    let Feed { events } = service.recv_timeout(TIMEOUT)?;
    drop(service); // the feed is a channel of its own
    for event in events.iter() {
        println!("client: {:?}", event?);
    }
    println!("client: the feed ended (the service dropped its sender)");
    Ok(())
}
