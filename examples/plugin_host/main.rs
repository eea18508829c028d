//! A host and its plugins, over a rendezvous socket.
//!
//! The host listens on a path socket in a directory it creates (mode 0700,
//! so only its user can even reach the socket), starts three plugins (this
//! program again, in plugin mode: see `plugin.rs`), and accepts them as
//! they connect. Each connection is authenticated (the peer must run as the
//! host's user) and handshaken (protocol name and version) before anything
//! else is read. The host then calls each plugin through a typed
//! request/response client, from several threads at once, prints the
//! results, and shuts down: the plugins see the host go and exit, and no
//! socket file or directory is left behind.
//!
//! ```text
//! cargo run --example plugin_host
//! ```

mod plugin;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use courier::{Address, CallError, Client, Config, Listener};
use plugin::{Request, Response, TransformError};

/// The environment variable a plugin finds the host's socket in.
const SOCKET_ENV: &str = "PLUGIN_HOST_SOCKET";
const PLUGINS: [&str; 3] = ["upper", "reverse", "count"];
const TIMEOUT: Duration = Duration::from_secs(10);

fn config() -> Config {
    Config::new()
        .protocol("courier-example/text-plugin", 1)
        .handshake_timeout(TIMEOUT)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag, name] if flag == "--plugin" => plugin::run(name, &std::env::var(SOCKET_ENV)?),
        _ => host(),
    }
}

fn host() -> Result<(), Box<dyn std::error::Error>> {
    // A directory that does not exist yet: the bind creates it 0700 and the
    // listener removes it (and the socket file) when dropped.
    let dir = std::env::temp_dir().join(format!("courier-plugin-host-{}", std::process::id()));
    let socket: PathBuf = dir.join("plugins.sock");
    let listener = Listener::<Call, Reply>::bind(&Address::Path(socket.clone()), config())?;
    println!("host: listening on {}", socket.display());

    let mut children: BTreeMap<u32, (&str, Child)> = BTreeMap::new();
    for name in PLUGINS {
        let child = Command::new(std::env::current_exe()?)
            .args(["--plugin", name])
            .env(SOCKET_ENV, &socket)
            .spawn()?;
        children.insert(child.id(), (name, child));
    }

    let mut clients = Vec::new();
    while clients.len() < PLUGINS.len() {
        let endpoint = listener.accept_timeout(TIMEOUT)?;
        let cred = endpoint.peer_cred()?;
        let Some((name, _)) = children.get(&(cred.pid() as u32)) else {
            // Same user but not one of ours: talk to it no further.
            println!("host: ignoring unknown process {}", cred.pid());
            continue;
        };
        let hello = endpoint.peer().expect("accepted endpoints are handshaken");
        println!(
            "host: plugin {name:?} connected: pid {}, uid {}, protocol {:?} v{}",
            cred.pid(),
            cred.uid(),
            hello.protocol,
            hello.version
        );
        clients.push((*name, Client::new(endpoint)));
    }

    // Every plugin gets the same texts, from a thread per text: calls from
    // several threads are in flight on one client at once.
    let texts = ["typed messages", "between processes", ""];
    std::thread::scope(|scope| {
        for (name, client) in &clients {
            let calls: Vec<_> = texts
                .iter()
                .map(|text| {
                    scope.spawn(move || {
                        let request = Request::Transform(text.to_string());
                        (text, client.call(request, TIMEOUT))
                    })
                })
                .collect();
            for call in calls {
                let (text, result) = call.join().expect("caller thread");
                match result {
                    Ok(Response::Text(out)) => println!("host: {name}({text:?}) = {out:?}"),
                    Err(CallError::Remote(TransformError::Empty)) => {
                        println!("host: {name}({text:?}) refused: empty input (a typed error)")
                    }
                    Err(e) => panic!("{name}({text:?}) failed: {e}"),
                }
            }
        }
    });

    println!(
        "host: {} peers rejected, {} failed the handshake",
        listener.rejected(),
        listener.failed()
    );
    drop(clients); // each plugin sees end of stream and exits
    for (_, (name, mut child)) in children {
        let status = child.wait()?;
        println!("host: plugin {name:?} exited with {status}");
        if !status.success() {
            return Err(format!("plugin {name} failed").into());
        }
    }
    drop(listener);
    let left = socket.exists() || dir.exists();
    println!(
        "host: shut down; socket file and directory {}",
        if left { "LEFT BEHIND" } else { "removed" }
    );
    if left {
        return Err("the listener left files behind".into());
    }
    Ok(())
}

type Call = courier::channel::Call<Request>;
type Reply = courier::channel::Reply<Response, TransformError>;
