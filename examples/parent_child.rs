//! A parent and the child it spawns, talking in typed values.
//!
//! The parent spawns this program again as its child, with a channel
//! already connected and handshaken. It sends a typed request that carries
//! an open file descriptor (the write end of a pipe); the child writes a
//! greeting through that fd and answers with a typed response. The parent
//! reads the greeting from the pipe, tells the child to stop, and checks
//! that the channel reports the child's exit.
//!
//! ```text
//! cargo run --example parent_child
//! ```

use std::io::{PipeWriter, Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use courier::{from_env, CommandExt, Config, Endpoint, Fd, RecvError};
use serde::{Deserialize, Serialize};

/// What the parent asks.
#[derive(Serialize, Deserialize)]
enum Request {
    /// Write a greeting for `name` into `output`, then report.
    Greet {
        name: String,
        output: Fd<PipeWriter>,
    },
    /// Finish and exit.
    Stop,
}

/// What the child answers.
#[derive(Serialize, Deserialize, Debug)]
struct Response {
    pid: u32,
    bytes_written: usize,
}

/// Both sides name the protocol; a parent and child built from different
/// versions of it fail at spawn time instead of misreading each other.
fn config() -> Config {
    Config::new()
        .protocol("courier-example/greeter", 1)
        .handshake_timeout(Duration::from_secs(10))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os(courier::CHANNEL_ENV).is_some() {
        child()
    } else {
        parent()
    }
}

fn parent() -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let mut spawned =
        Command::new(std::env::current_exe()?).spawn_endpoint::<Request, Response>(config())?;
    let peer = spawned
        .endpoint
        .peer()
        .expect("spawned endpoints are handshaken");
    println!(
        "parent {}: spawned child {} and shook hands ({:?} v{}) in {:.1?}",
        std::process::id(),
        spawned.child.id(),
        peer.protocol,
        peer.version,
        started.elapsed()
    );

    let (mut reader, writer) = std::io::pipe()?;
    spawned
        .endpoint
        .send(Request::Greet {
            name: "parent".into(),
            output: Fd::new(writer),
        })
        .map_err(|e| match std::error::Error::source(&e) {
            // Over pipes (COURIER_TRANSPORT=pipe) this fails: pipes carry no fds.
            Some(why) => format!("send: {e}: {why}"),
            None => format!("send: {e}"),
        })?;
    // The request owned the only write end; it was closed here when the
    // send succeeded, so the child now holds the only one.
    let response = spawned.endpoint.recv_timeout(Duration::from_secs(10))?;
    println!("parent: child answered {response:?}");

    let mut greeting = String::new();
    spawned
        .endpoint
        .send(Request::Stop)
        .map_err(|e| format!("send: {e}"))?;
    reader.read_to_string(&mut greeting)?; // ends when the child closed its end
    println!("parent: read from the pipe: {:?}", greeting.trim_end());

    match spawned.endpoint.recv_timeout(Duration::from_secs(10)) {
        Err(courier::RecvTimeoutError::Disconnected) => {
            println!("parent: the channel reports the child is gone")
        }
        other => return Err(format!("expected a disconnect, got {other:?}").into()),
    }
    let status = spawned.child.wait()?;
    println!("parent: child exited with {status}");
    if !status.success() || response.pid != spawned.child.id() || greeting.is_empty() {
        return Err("the child did not do its part".into());
    }
    Ok(())
}

fn child() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint: Endpoint<Response, Request> = from_env(config())?;
    loop {
        match endpoint.recv() {
            Ok(Request::Greet { name, output }) => {
                let mut output = output.into_inner();
                let line = format!("hello, {name}, from child {}\n", std::process::id());
                output.write_all(line.as_bytes())?;
                drop(output);
                println!(
                    "child {}: wrote {} bytes into the fd it was sent",
                    std::process::id(),
                    line.len()
                );
                endpoint
                    .send(Response {
                        pid: std::process::id(),
                        bytes_written: line.len(),
                    })
                    .map_err(|e| format!("send: {e}"))?;
            }
            Ok(Request::Stop) | Err(RecvError::Disconnected) => {
                println!("child {}: stopping", std::process::id());
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
    }
}
