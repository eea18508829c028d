//! Two processes, one file descriptor: the parent listens on an unguessable
//! abstract name, starts a child (this program again), checks that the
//! process that connected is that child (SO_PEERCRED), and sends it the
//! write end of a pipe. The child writes a line through the pipe and
//! answers over the socket; the parent reads the line from the pipe.
//!
//! ```text
//! cargo run --example fd_passing
//! ```

use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::process::Command;
use std::time::Duration;

use courier::transport::{AbstractName, Address, Listener, SeqPacketSocket};

const TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    match std::env::args_os()
        .nth(1)
        .as_deref()
        .and_then(OsStr::to_str)
    {
        Some("--child") => child(),
        _ => parent(),
    }
}

fn parent() -> Result<(), Box<dyn std::error::Error>> {
    let name = AbstractName::random()?;
    let listener = Listener::bind(&Address::from(name.clone()))?;
    // A random name is printable ASCII, so it travels as an argument as is.
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--child")
        .arg(OsStr::from_bytes(name.as_bytes()))
        .spawn()?;

    let conn = listener.accept_timeout(TIMEOUT)?;
    // Abstract names have no permission check: make sure it is our child.
    let peer = conn.peer_cred()?;
    if peer.pid() != child.id() as i32 {
        return Err(format!(
            "unexpected peer pid {} (child is {})",
            peer.pid(),
            child.id()
        )
        .into());
    }
    println!(
        "parent {}: child {} connected (uid {})",
        std::process::id(),
        peer.pid(),
        peer.uid()
    );

    let (mut reader, writer) = std::io::pipe()?;
    conn.send_with_fds(b"please write a line into this pipe", &[writer.as_fd()])?;
    drop(writer); // the child holds the only write end now
    println!("parent: sent the pipe's write end");

    let mut buf = [0; 128];
    let n = conn.recv_timeout(&mut buf, TIMEOUT)?;
    println!(
        "parent: child answered {:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    let status = child.wait()?;

    let mut line = String::new();
    reader.read_to_string(&mut line)?;
    println!("parent: read from the pipe: {:?}", line.trim_end());
    if !status.success() || line.is_empty() {
        return Err("the child did not do its part".into());
    }
    Ok(())
}

fn child() -> Result<(), Box<dyn std::error::Error>> {
    let name = std::env::args_os().nth(2).ok_or("missing address")?;
    let conn = SeqPacketSocket::connect(&Address::from(AbstractName::new(name.as_bytes())?))?;

    let mut buf = [0; 128];
    let mut fds = Vec::new();
    let got = conn.recv_with_fds(&mut buf, &mut fds, 1)?;
    let request = String::from_utf8_lossy(&buf[..got.len]);
    let fd = fds.pop().ok_or("the message carried no fd")?;
    println!("child {}: got {request:?} with 1 fd", std::process::id());

    let mut pipe = std::fs::File::from(fd);
    std::io::Write::write_all(
        &mut pipe,
        format!("hello from child {}\n", std::process::id()).as_bytes(),
    )?;
    drop(pipe);
    conn.send(b"done: wrote one line")?;
    Ok(())
}
