//! Spawning a child with a connected, handshaken channel, and the child's
//! side: [`from_env`].

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::process::{Child, Command, Stdio};

use courier_channel::{Config, ConnectError, Endpoint};
use courier_pipe::PipeTransport;
use courier_transport::{InheritedFd, PidFd, SeqPacketSocket};
use nix::fcntl::OFlag;

use crate::Transport;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The environment variable that tells a spawned child where its channel
/// is: `seqpacket:<fd>` or `pipe:<read fd>,<write fd>`. [`from_env`] reads
/// it and removes it.
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
    /// Spawns the command with a channel to it and runs the handshake; the
    /// child calls [`from_env`] with a matching [`Config`]. The transport is
    /// [`Transport::Auto`]: SEQPACKET where the host has it, else pipes.
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
        R: DeserializeOwned,
    {
        self.spawn_endpoint_over(Transport::Auto, config)
    }

    /// [`spawn_endpoint`](Self::spawn_endpoint) over the given transport:
    /// [`Transport::Pipe`] passes two pipe ends instead of a socket
    /// (values cannot carry fds then).
    ///
    /// # Errors
    ///
    /// As [`spawn_endpoint`](Self::spawn_endpoint).
    fn spawn_endpoint_over<S, R>(
        &mut self,
        transport: Transport,
        config: Config,
    ) -> Result<Spawned<S, R>, ConnectError>
    where
        S: Serialize,
        R: DeserializeOwned;

    /// Spawns the command with its stdin and stdout as the channel (pipes),
    /// for a child that only has stdio; it calls [`stdio_endpoint`]. The
    /// child's stderr is left as configured.
    ///
    /// # Errors
    ///
    /// As [`spawn_endpoint`](Self::spawn_endpoint).
    fn spawn_stdio_endpoint<S, R>(&mut self, config: Config) -> Result<Spawned<S, R>, ConnectError>
    where
        S: Serialize,
        R: DeserializeOwned;
}

impl CommandExt for Command {
    fn spawn_endpoint_over<S, R>(
        &mut self,
        transport: Transport,
        config: Config,
    ) -> Result<Spawned<S, R>, ConnectError>
    where
        S: Serialize,
        R: DeserializeOwned,
    {
        match transport.resolve() {
            Transport::Pipe => spawn_over_pipes(self, config),
            _ => spawn_over_socket(self, config),
        }
    }

    fn spawn_stdio_endpoint<S, R>(&mut self, config: Config) -> Result<Spawned<S, R>, ConnectError>
    where
        S: Serialize,
        R: DeserializeOwned,
    {
        let mut child = self.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
        let transport = PipeTransport::from_child(&mut child);
        finish(
            child,
            |ep_config| Endpoint::handshake_transport(Box::new(transport?), ep_config),
            config,
        )
    }
}

fn spawn_over_socket<S, R>(cmd: &mut Command, config: Config) -> Result<Spawned<S, R>, ConnectError>
where
    S: Serialize,
    R: DeserializeOwned,
{
    let (ours, theirs) = SeqPacketSocket::pair()?;
    let passed = courier_transport::inherit(cmd, OwnedFd::from(theirs))?;
    let value = format!("seqpacket:{}", passed.number());
    let child = spawn_with(cmd, value, [passed]);
    finish(child?, |config| Endpoint::handshake(ours, config), config)
}

fn spawn_over_pipes<S, R>(cmd: &mut Command, config: Config) -> Result<Spawned<S, R>, ConnectError>
where
    S: Serialize,
    R: DeserializeOwned,
{
    let (child_reads, parent_writes) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    let (parent_reads, child_writes) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    let reads = courier_transport::inherit(cmd, child_reads)?;
    let writes = courier_transport::inherit(cmd, child_writes)?;
    let value = format!("pipe:{},{}", reads.number(), writes.number());
    let child = spawn_with(cmd, value, [reads, writes]);
    let transport = PipeTransport::new(parent_reads, parent_writes);
    finish(
        child?,
        |config| Endpoint::handshake_transport(Box::new(transport?), config),
        config,
    )
}

/// Spawns `cmd` with [`CHANNEL_ENV`] set to `value`, then closes the
/// parent's copies of the `passed` fds (the child holds the only ones
/// now, so its death is our end of stream) and unsets the variable.
fn spawn_with<const N: usize>(
    cmd: &mut Command,
    value: String,
    passed: [InheritedFd; N],
) -> io::Result<Child> {
    cmd.env(CHANNEL_ENV, value);
    let spawned = cmd.spawn();
    drop(passed);
    cmd.env_remove(CHANNEL_ENV);
    spawned
}

/// Runs the parent's handshake; on failure kills and reaps the child.
fn finish<S, R>(
    mut child: Child,
    handshake: impl FnOnce(Config) -> Result<Endpoint<S, R>, ConnectError>,
    config: Config,
) -> Result<Spawned<S, R>, ConnectError>
where
    S: Serialize,
    R: DeserializeOwned,
{
    let pidfd = PidFd::open(child.id()).ok().flatten();
    match handshake(config) {
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

/// The child's end of the channel its parent made with
/// [`CommandExt::spawn_endpoint`], handshaken with `config` (whose protocol
/// must match the parent's).
///
/// It checks that the fds it is told about are open, were really
/// inherited, and are a connected SEQPACKET socket or the right ends of
/// two pipes; makes them close-on-exec again; and removes
/// [`CHANNEL_ENV`] from the environment, so this process's own children
/// neither inherit the socket nor believe they did.
///
/// What it trusts: that [`CHANNEL_ENV`] was set by a courier parent for
/// this process. The fds it names are taken over (they will be closed when
/// the endpoint drops), so call it once, early in `main`: before any other
/// code that adopts inherited fds (a jobserver client, socket activation)
/// could claim the same numbers, and before starting threads (removing an
/// environment variable is not thread-safe on every libc).
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
    match parse(&value) {
        Some(Passed::SeqPacket(raw)) => {
            let socket = adopt_socket(raw).map_err(|e| not_inherited(e.to_string()))?;
            // getpeername, not SO_PEERCRED: listen(2) gives a listening
            // socket peer credentials (its own) too.
            if let Err(e) = socket.peer_addr() {
                // A listening or unconnected socket: not a channel end.
                return Err(not_inherited(format!("fd {raw} is not connected: {e}")));
            }
            Endpoint::handshake(socket, config)
        }
        Some(Passed::Pipes(r, w)) => {
            // Both checked before either is adopted: a refusal leaves both
            // as they were.
            check_pipe(r, true).map_err(|e| not_inherited(e.to_string()))?;
            check_pipe(w, false).map_err(|e| not_inherited(e.to_string()))?;
            let reader = adopt_pipe(r, true).map_err(|e| not_inherited(e.to_string()))?;
            let writer = adopt_pipe(w, false).map_err(|e| not_inherited(e.to_string()))?;
            let transport = PipeTransport::new(reader, writer)?;
            Endpoint::handshake_transport(Box::new(transport), config)
        }
        None => Err(not_inherited(format!(
            "{CHANNEL_ENV}={value:?} is not of the form seqpacket:<fd> or pipe:<fd>,<fd>"
        ))),
    }
}

/// The child's end of a channel over its own stdin and stdout, made by a
/// parent's [`CommandExt::spawn_stdio_endpoint`] (or any host that frames
/// courier values over the child's stdio), handshaken with `config`.
///
/// stdin and stdout are taken over ([`PipeTransport::stdio`]): fd 0 then
/// reads `/dev/null` and fd 1 writes to stderr, so a stray `println!`
/// cannot corrupt the channel.
///
/// # Errors
///
/// When the fds cannot be taken over; the handshake's errors.
pub fn stdio_endpoint<S, R>(config: Config) -> Result<Endpoint<S, R>, ConnectError>
where
    S: Serialize,
    R: DeserializeOwned,
{
    Endpoint::handshake_transport(Box::new(PipeTransport::stdio()?), config)
}

/// What [`CHANNEL_ENV`] names.
enum Passed {
    SeqPacket(i32),
    Pipes(i32, i32),
}

fn parse(value: &OsStr) -> Option<Passed> {
    let value = value.to_str()?;
    if let Some(n) = value.strip_prefix("seqpacket:") {
        return fd_number(n).map(Passed::SeqPacket);
    }
    let (r, w) = value.strip_prefix("pipe:")?.split_once(',')?;
    let (r, w) = (fd_number(r)?, fd_number(w)?);
    (r != w).then_some(Passed::Pipes(r, w))
}

/// A plain decimal fd number above stdio.
fn fd_number(text: &str) -> Option<i32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|n| *n >= 3)
}

#[allow(unsafe_code)]
fn adopt_socket(raw: i32) -> io::Result<SeqPacketSocket> {
    // SAFETY: the number comes from CHANNEL_ENV, which a spawning parent
    // set to the fd it made inheritable for this process alone; the
    // variable was removed before this call, so no later call adopts the
    // fd again, and nothing else in the process knows the number.
    // adopt_inherited checks the fd is open, inherited and a SEQPACKET
    // socket before owning it.
    unsafe { courier_transport::adopt_inherited(raw) }
}

/// Whether `raw` is the right end of a pipe, for reading or writing.
fn pipe_end(raw: i32, reading: bool) -> impl FnOnce(BorrowedFd<'_>) -> io::Result<()> {
    move |fd| {
        courier_pipe::check_pipe_end(fd, reading)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("fd {raw}: {e}")))
    }
}

#[allow(unsafe_code)]
fn check_pipe(raw: i32, reading: bool) -> io::Result<()> {
    // SAFETY: as for adopt_socket: the number comes from CHANNEL_ENV, read
    // once and removed; nothing else in the process knows it.
    unsafe { courier_transport::check_inherited_fd(raw, pipe_end(raw, reading)) }
}

#[allow(unsafe_code)]
fn adopt_pipe(raw: i32, reading: bool) -> io::Result<OwnedFd> {
    // SAFETY: as for adopt_socket: the number comes from CHANNEL_ENV, read
    // once and removed; adopt_inherited_fd checks the fd is open and
    // inherited, and that it is the right end of a pipe, before owning it.
    unsafe { courier_transport::adopt_inherited_fd(raw, pipe_end(raw, reading)) }
}
