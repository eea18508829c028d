//! The plugin side: connect to the host by path, then serve its calls.

use std::path::PathBuf;

use courier::channel::{Call, Reply};
use courier::{Address, Endpoint};
use serde::{Deserialize, Serialize};

/// What the host asks a plugin.
#[derive(Serialize, Deserialize, Debug)]
pub enum Request {
    /// Transform this text.
    Transform(String),
}

/// What a plugin answers.
#[derive(Serialize, Deserialize, Debug)]
pub enum Response {
    /// The transformed text.
    Text(String),
}

/// A plugin's refusal, sent back as a typed value.
#[derive(Serialize, Deserialize, Debug)]
pub enum TransformError {
    /// There was nothing to transform.
    Empty,
}

/// Connects to the host at `socket` and serves until the host goes away.
pub fn run(name: &str, socket: &str) -> Result<(), Box<dyn std::error::Error>> {
    let addr = Address::Path(PathBuf::from(socket));
    // Connecting also checks that the listening process runs as our user.
    let endpoint: Endpoint<Reply<Response, TransformError>, Call<Request>> =
        Endpoint::connect(&addr, super::config())?;
    let transform: fn(&str) -> String = match name {
        "upper" => |s| s.to_uppercase(),
        "reverse" => |s| s.chars().rev().collect(),
        "count" => |s| format!("{} words", s.split_whitespace().count()),
        other => return Err(format!("unknown plugin {other}").into()),
    };
    let served = endpoint.serve(|Request::Transform(text)| {
        if text.is_empty() {
            Err(TransformError::Empty)
        } else {
            Ok(Response::Text(transform(&text)))
        }
    })?;
    println!(
        "plugin {name} (pid {}): host gone after {} calls; exiting",
        std::process::id(),
        served.calls
    );
    Ok(())
}
