//! Spawning a child with a connected, handshaken channel, and the child's
//! side: [`from_env`].

use std::ffi::OsStr;
use std::fmt;
use std::os::fd::OwnedFd;
use std::process::{Child, Command};

use courier_channel::{Config, ConnectError, Endpoint};
use courier_transport::{PidFd, SeqPacketSocket};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The environment variable that tells a spawned child where its channel
/// is: `seqpacket:<fd number>`. [`from_env`] reads it and removes it.
pub const CHANNEL_ENV: &str = "COURIER_CHANNEL";

/// A child spawned with [`CommandExt::spawn_endpoint`], and the parent's
/// end of its channel.
#[non_exhaustive]
pub struct Spawned<S, R> {
    /// The child process. Waiting on it (or dropping it without waiting)
    /// is the caller's business, as with [`Command::spawn`].
    pub child: Child,
    /// The parent's end of the channel, handshaken.
    pub endpoint: Endpoint<S, R>,
    /// A pidfd for the child (Linux 5.3+; `None` elsewhere): poll it, or
    /// [`PidFd::wait_timeout`], to learn of the child's death even while
    /// the channel is busy or has been handed on.
    pub pidfd: Option<PidFd>,
}

impl<S, R> fmt::Debug for Spawned<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spawned")
            .field("child", &self.child)
            .field("endpoint", &self.endpoint)
            .field("pidfd", &self.pidfd)
            .finish()
    }
}

/// Spawning a [`Command`] with a typed channel to the child.
pub trait CommandExt {
    /// Spawns the command with a SEQPACKET channel to it and runs the
    /// handshake; the child calls [`from_env`] with a matching [`Config`].
    ///
    /// Race-free: the parent's fds are all close-on-exec, and only the
    /// child's end is made inheritable, in the child, between `fork` and
    /// `exec` ([`courier_transport::inherit`]); a process another thread
    /// spawns at the same moment never keeps it. The child finds its end
    /// through [`CHANNEL_ENV`], which is set for this spawn only.
    ///
    /// When the child exits or is killed, the endpoint receives what the
    /// child had sent, then reports `Disconnected`.
    ///
    /// # Errors
    ///
    /// When the spawn fails, or the handshake does (a mismatch, a child
    /// that never calls [`from_env`] within the handshake timeout, or
    /// exits first). A child whose handshake failed is killed and reaped.
    fn spawn_endpoint<S, R>(&mut self, config: Config) -> Result<Spawned<S, R>, ConnectError>
    where
        S: Serialize,
        R: DeserializeOwned;
}

impl CommandExt for Command {
    fn spawn_endpoint<S, R>(&mut self, config: Config) -> Result<Spawned<S, R>, ConnectError>
    where
        S: Serialize,
        R: DeserializeOwned,
    {
        let (ours, theirs) = SeqPacketSocket::pair()?;
        let passed = courier_transport::inherit(self, OwnedFd::from(theirs))?;
        self.env(CHANNEL_ENV, format!("seqpacket:{}", passed.number()));
        let spawned = self.spawn();
        // Closes the parent's copy of the child's end: from here on the
        // child holds the only one, so its death is our end of stream.
        drop(passed);
        self.env_remove(CHANNEL_ENV);
        let mut child = spawned?;
        let pidfd = PidFd::open(child.id()).ok().flatten();
        match Endpoint::handshake(ours, config) {
            Ok(endpoint) => Ok(Spawned {
                child,
                endpoint,
                pidfd,
            }),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }
}

/// The child's end of the channel its parent made with
/// [`CommandExt::spawn_endpoint`], handshaken with `config` (whose protocol
/// must match the parent's).
///
/// It checks that the fd it is told about is open, was really inherited,
/// and is a SEQPACKET socket; makes it close-on-exec again; and removes
/// [`CHANNEL_ENV`] from the environment, so this process's own children
/// neither inherit the socket nor believe they did. Call it early, before
/// starting threads (removing an environment variable is not thread-safe
/// on every libc).
///
/// # Errors
///
/// [`ConnectError::NotInherited`] when there is no channel (the variable
/// is unset, or a second call) or it is not usable; the handshake's errors.
pub fn from_env<S, R>(config: Config) -> Result<Endpoint<S, R>, ConnectError>
where
    S: Serialize,
    R: DeserializeOwned,
{
    let not_inherited = |reason: String| ConnectError::NotInherited { reason };
    let value = std::env::var_os(CHANNEL_ENV)
        .ok_or_else(|| not_inherited(format!("{CHANNEL_ENV} is not set")))?;
    std::env::remove_var(CHANNEL_ENV);
    let raw = parse(&value).ok_or_else(|| {
        not_inherited(format!(
            "{CHANNEL_ENV}={value:?} is not of the form seqpacket:<fd>"
        ))
    })?;
    let socket = adopt(raw).map_err(|e| not_inherited(e.to_string()))?;
    // getpeername, not SO_PEERCRED: listen(2) gives a listening socket
    // peer credentials (its own) too.
    if let Err(e) = socket.peer_addr() {
        // A listening or unconnected socket: not a channel end.
        return Err(not_inherited(format!("fd {raw} is not connected: {e}")));
    }
    Endpoint::handshake(socket, config)
}

fn parse(value: &OsStr) -> Option<i32> {
    let number = value.to_str()?.strip_prefix("seqpacket:")?;
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    number.parse().ok().filter(|n| *n >= 3)
}

#[allow(unsafe_code)]
fn adopt(raw: i32) -> std::io::Result<SeqPacketSocket> {
    // SAFETY: the number comes from CHANNEL_ENV, which a spawning parent
    // set to the fd it made inheritable for this process alone; the
    // variable was removed before this call, so no later call adopts the
    // fd again, and nothing else in the process knows the number.
    // adopt_inherited checks the fd is open, inherited and a SEQPACKET
    // socket before owning it.
    unsafe { courier_transport::adopt_inherited(raw) }
}
