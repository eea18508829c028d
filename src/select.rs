//! Choosing the transport: SEQPACKET where the host has it, pipes where it
//! does not, or what the user forces.

use std::io;
use std::sync::OnceLock;

use courier_channel::{Config, Endpoint, Receiver, Sender};
use courier_transport::SeqPacketSocket;
use nix::libc;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The environment variable that forces [`Transport::Auto`]'s choice:
/// `seqpacket` or `pipe` (for testing the fallback, or a host known to
/// need it). Any other value is ignored, as if unset.
pub const TRANSPORT_ENV: &str = "COURIER_TRANSPORT";

/// Which transport the facade's helpers use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// [`TRANSPORT_ENV`] if set, else SEQPACKET if this host can make a
    /// SEQPACKET socketpair, else pipes.
    #[default]
    Auto,
    /// AF_UNIX `SOCK_SEQPACKET`: fds, credentials, race-proof shutdown.
    SeqPacket,
    /// Two pipes (courier-pipe): no fds, no credentials.
    Pipe,
}

impl Transport {
    /// What this transport is on this host: [`Auto`](Self::Auto) resolved,
    /// the others as they are.
    ///
    /// The probe makes one socketpair, once per process; it falls back to
    /// pipes when the kernel refuses it as unsupported or forbidden
    /// (`EAFNOSUPPORT`, `EPROTONOSUPPORT`, `ESOCKTNOSUPPORT`, `EPERM`,
    /// `EACCES`: a seccomp sandbox, a platform without SEQPACKET), not when
    /// it fails for lack of resources.
    pub fn resolve(self) -> Transport {
        match self {
            Transport::Auto => match std::env::var(TRANSPORT_ENV).as_deref() {
                Ok("pipe") => Transport::Pipe,
                Ok("seqpacket") => Transport::SeqPacket,
                _ => probed(),
            },
            other => other,
        }
    }
}

fn probed() -> Transport {
    static PROBED: OnceLock<Transport> = OnceLock::new();
    if let Some(t) = PROBED.get() {
        return *t;
    }
    match SeqPacketSocket::pair() {
        Ok(_) => *PROBED.get_or_init(|| Transport::SeqPacket),
        Err(e) if unsupported(&e) => *PROBED.get_or_init(|| Transport::Pipe),
        // Out of fds or memory: not a property of the host. The caller's
        // own socketpair will report it.
        Err(_) => Transport::SeqPacket,
    }
}

/// Whether a socketpair error means "this host does not do SEQPACKET".
pub(crate) fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EAFNOSUPPORT
                | libc::EPROTONOSUPPORT
                | libc::ESOCKTNOSUPPORT
                | libc::EPERM
                | libc::EACCES
        )
    )
}

/// Two connected endpoints over `transport` (resolved).
///
/// ```
/// use courier::{endpoints_over, Config, Transport};
///
/// let (a, b) = endpoints_over::<String, u64>(Transport::Pipe, Config::new())?;
/// a.send("over pipes".into()).unwrap();
/// assert_eq!(b.recv().unwrap(), "over pipes");
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
///
/// When the socketpair or pipes cannot be made.
pub fn endpoints_over<A, B>(
    transport: Transport,
    config: Config,
) -> io::Result<(Endpoint<A, B>, Endpoint<B, A>)>
where
    A: Serialize + DeserializeOwned,
    B: Serialize + DeserializeOwned,
{
    match transport.resolve() {
        Transport::Pipe => {
            let (a, b) = courier_pipe::pair()?;
            Ok((
                Endpoint::with_transport(Box::new(a), config),
                Endpoint::with_transport(Box::new(b), config),
            ))
        }
        _ => config.endpoints(),
    }
}

/// A one-way channel over `transport` (resolved).
///
/// # Errors
///
/// When the socketpair or pipes cannot be made.
pub fn channel_over<T>(transport: Transport, config: Config) -> io::Result<(Sender<T>, Receiver<T>)>
where
    T: Serialize + DeserializeOwned,
{
    match transport.resolve() {
        Transport::Pipe => {
            let (a, b) = courier_pipe::pair()?;
            Ok((
                Sender::with_transport(Box::new(a), config),
                Receiver::with_transport(Box::new(b), config),
            ))
        }
        _ => config.channel(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unsupported_errors_fall_back() {
        for errno in [
            libc::EAFNOSUPPORT,
            libc::EPROTONOSUPPORT,
            libc::ESOCKTNOSUPPORT,
            libc::EPERM,
            libc::EACCES,
        ] {
            assert!(unsupported(&io::Error::from_raw_os_error(errno)), "{errno}");
        }
        for errno in [libc::EMFILE, libc::ENFILE, libc::ENOMEM, libc::ENOBUFS] {
            assert!(
                !unsupported(&io::Error::from_raw_os_error(errno)),
                "{errno}"
            );
        }
    }

    #[test]
    fn forced_transports_stay_forced() {
        assert_eq!(Transport::Pipe.resolve(), Transport::Pipe);
        assert_eq!(Transport::SeqPacket.resolve(), Transport::SeqPacket);
    }
}
