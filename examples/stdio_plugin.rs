//! A plugin whose only channel is its stdin and stdout.
//!
//! Some hosts can only hand a plugin its stdio (no sockets, no extra fds).
//! courier frames typed values over those pipes: the host starts the
//! plugin (this program again) with piped stdin/stdout, the two shake
//! hands, the host sends typed requests and gets typed responses, then
//! closes the channel; the plugin sees the end and exits cleanly. The
//! plugin's stray `println!` goes to stderr, not into the channel.
//!
//! ```text
//! cargo run --example stdio_plugin
//! ```

use std::process::Command;
use std::time::Duration;

use courier::{stdio_endpoint, CommandExt, Config, Endpoint, RecvError};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug)]
enum Request {
    /// Sum these numbers.
    Sum(Vec<i64>),
    /// Describe yourself.
    Hello,
}

#[derive(Serialize, Deserialize, Debug)]
enum Response {
    Sum(i64),
    Hello { pid: u32, transport: String },
}

fn config() -> Config {
    Config::new()
        .protocol("courier-example/stdio-plugin", 1)
        .handshake_timeout(Duration::from_secs(10))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().nth(1).as_deref() == Some("--plugin") {
        plugin()
    } else {
        host()
    }
}

fn host() -> Result<(), Box<dyn std::error::Error>> {
    let mut plugin = Command::new(std::env::current_exe()?)
        .arg("--plugin")
        .spawn_stdio_endpoint::<Request, Response>(config())?;
    println!(
        "host: plugin {} started; its stdin and stdout are the channel",
        plugin.child.id()
    );
    let requests = [
        Request::Hello,
        Request::Sum(vec![1, 2, 3, 4]),
        Request::Sum((1..=1000).collect()),
    ];
    for request in requests {
        match &request {
            Request::Sum(numbers) if numbers.len() > 8 => {
                println!("host: -> Sum of {} numbers", numbers.len())
            }
            other => println!("host: -> {other:?}"),
        }
        plugin
            .endpoint
            .send(request)
            .map_err(|e| format!("send: {e}"))?;
        let response = plugin.endpoint.recv_timeout(Duration::from_secs(10))?;
        println!("host: <- {response:?}");
    }
    drop(plugin.endpoint); // closes the plugin's stdin: its end of stream
    let status = plugin.child.wait()?;
    println!("host: plugin exited with {status}");
    if !status.success() {
        return Err("the plugin failed".into());
    }
    Ok(())
}

fn plugin() -> Result<(), Box<dyn std::error::Error>> {
    // Takes over stdin and stdout; from here on println! goes to stderr.
    let host: Endpoint<Response, Request> = stdio_endpoint(config())?;
    println!("plugin: this line goes to stderr, not into the channel");
    loop {
        let response = match host.recv() {
            Ok(Request::Sum(numbers)) => Response::Sum(numbers.iter().sum()),
            Ok(Request::Hello) => Response::Hello {
                pid: std::process::id(),
                transport: "stdin/stdout".into(),
            },
            Err(RecvError::Disconnected) => {
                eprintln!("plugin: the host closed the channel; exiting");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        host.send(response).map_err(|e| format!("send: {e}"))?;
    }
}
