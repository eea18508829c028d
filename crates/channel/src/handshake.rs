//! The handshake every courier connection starts with.
//!
//! Both ends send one hello frame at once, then read the other's: neither
//! waits for the other to speak first, so there is no ordering to get
//! wrong. A hello is:
//!
//! | bytes  | field                                          |
//! |--------|------------------------------------------------|
//! | 0..4   | magic `CRHS`                                   |
//! | 4      | courier wire-format version ([`WIRE_VERSION`]) |
//! | 5      | flags: bit 0 = accepts fds; others must be 0   |
//! | 6..8   | reserved, 0                                    |
//! | 8..12  | protocol version, u32 little-endian            |
//! | 12..20 | receive limit in bytes, u64 little-endian      |
//! | 20     | protocol name length `n` (0..=255)             |
//! | 21..   | protocol name, `n` bytes of UTF-8              |
//!
//! It carries no fds: any that arrive with it are closed and the
//! handshake fails.

use std::io::{self, IoSlice};
use std::time::{Duration, Instant};

use courier_transport::{Credentials, FrameTransport, TransportError, Wait};

use crate::{Config, WIRE_VERSION};

const MAGIC: [u8; 4] = *b"CRHS";
const FIXED_LEN: usize = 21;
const MAX_NAME: usize = 255;
const MAX_HELLO: usize = FIXED_LEN + MAX_NAME;
const ACCEPTS_FDS: u8 = 1;

/// What a peer announced in its handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Hello {
    /// courier's wire-format version the peer speaks.
    pub wire_version: u8,
    /// The peer's protocol name ([`Config::protocol`]).
    pub protocol: String,
    /// The peer's protocol version.
    pub version: u32,
    /// Whether the peer accepts fds ([`Config::accept_fds`]).
    pub accepts_fds: bool,
    /// The largest encoded value the peer receives.
    pub limit: u64,
}

impl Hello {
    /// What an end with `config` announces, over a transport that can
    /// (`carries_fds`) or cannot carry fds.
    pub(crate) fn of(config: &Config, carries_fds: bool) -> Hello {
        let accepts_fds = config.accepts_fds() && carries_fds;
        let limit = if carries_fds && !accepts_fds {
            // No memfd: values come inline, in frames of at most
            // MAX_INLINE_FRAME on a socket.
            config.get_limit().min(Config::MAX_INLINE_THRESHOLD)
        } else {
            config.get_limit()
        };
        Hello {
            wire_version: WIRE_VERSION,
            protocol: config.get_protocol().to_owned(),
            version: config.get_protocol_version(),
            accepts_fds,
            limit: limit as u64,
        }
    }
}

/// Why a connection (spawned, inherited, connected or accepted) could not
/// be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// A system call failed (connect, accept, spawn, ...).
    #[error("connection failed")]
    Io(#[source] io::Error),
    /// The peer's credentials were refused by the authorization check
    /// ([`Authorize`](crate::Authorize)); it was closed before anything
    /// was read from it.
    #[error("peer refused: pid {}, uid {}, gid {} is not authorized", .credentials.pid(), .credentials.uid(), .credentials.gid())]
    Unauthorized {
        /// The peer's credentials.
        credentials: Credentials,
    },
    /// The peer did not complete the handshake in time.
    #[error("peer did not complete the handshake within {after:?}")]
    Timeout {
        /// The handshake timeout ([`Config::handshake_timeout`]).
        after: Duration,
    },
    /// The peer went away during the handshake.
    #[error("peer closed the connection during the handshake")]
    Closed,
    /// The peer's first frame is not a courier hello.
    #[error("peer does not speak courier's handshake")]
    NotCourier,
    /// The peer's hello is malformed.
    #[error("peer sent a malformed handshake: {reason}")]
    Malformed {
        /// What was wrong.
        reason: &'static str,
    },
    /// The two ends speak different courier wire formats.
    #[error("wire-format mismatch: this side speaks version {ours}, the peer version {theirs}")]
    WireVersion {
        /// This build's.
        ours: u8,
        /// The peer's.
        theirs: u8,
    },
    /// The two ends speak different application protocols or versions.
    #[error(
        "protocol mismatch: this side speaks {ours:?} version {ours_version}, \
         the peer {theirs:?} version {theirs_version}"
    )]
    ProtocolMismatch {
        /// This side's protocol name.
        ours: String,
        /// This side's protocol version.
        ours_version: u32,
        /// The peer's protocol name.
        theirs: String,
        /// The peer's protocol version.
        theirs_version: u32,
    },
    /// This side's protocol name is longer than 255 bytes.
    #[error("protocol name is {len} bytes long; at most 255 fit in the handshake")]
    ProtocolNameTooLong {
        /// Its length.
        len: usize,
    },
    /// No channel was handed to this process, or what was handed is not
    /// usable (see [`courier`'s `from_env`]).
    ///
    /// [`courier`'s `from_env`]: https://docs.rs/courier
    #[error("no usable inherited channel: {reason}")]
    NotInherited {
        /// What was missing or wrong.
        reason: String,
    },
}

impl From<io::Error> for ConnectError {
    fn from(e: io::Error) -> Self {
        ConnectError::Io(e)
    }
}

fn encode(ours: &Hello, out: &mut [u8; MAX_HELLO]) -> Result<usize, ConnectError> {
    let name = ours.protocol.as_bytes();
    if name.len() > MAX_NAME {
        return Err(ConnectError::ProtocolNameTooLong { len: name.len() });
    }
    out[..4].copy_from_slice(&MAGIC);
    out[4] = ours.wire_version;
    out[5] = if ours.accepts_fds { ACCEPTS_FDS } else { 0 };
    out[6..8].fill(0);
    out[8..12].copy_from_slice(&ours.version.to_le_bytes());
    out[12..20].copy_from_slice(&ours.limit.to_le_bytes());
    out[20] = name.len() as u8;
    out[FIXED_LEN..FIXED_LEN + name.len()].copy_from_slice(name);
    Ok(FIXED_LEN + name.len())
}

fn parse(frame: &[u8]) -> Result<Hello, ConnectError> {
    if frame.len() < 4 || frame[..4] != MAGIC {
        return Err(ConnectError::NotCourier);
    }
    let malformed = |reason| ConnectError::Malformed { reason };
    if frame.len() < FIXED_LEN {
        return Err(malformed("shorter than its fixed part"));
    }
    let wire_version = frame[4];
    if wire_version != WIRE_VERSION {
        // Later fields may mean something else in another version.
        return Err(ConnectError::WireVersion {
            ours: WIRE_VERSION,
            theirs: wire_version,
        });
    }
    if frame[5] & !ACCEPTS_FDS != 0 || frame[6..8] != [0, 0] {
        return Err(malformed("reserved bits set"));
    }
    let name_len = usize::from(frame[20]);
    if frame.len() != FIXED_LEN + name_len {
        return Err(malformed("length does not match its protocol name"));
    }
    let name = std::str::from_utf8(&frame[FIXED_LEN..])
        .map_err(|_| malformed("protocol name is not UTF-8"))?;
    let mut version = [0; 4];
    version.copy_from_slice(&frame[8..12]);
    let mut limit = [0; 8];
    limit.copy_from_slice(&frame[12..20]);
    Ok(Hello {
        wire_version,
        protocol: name.to_owned(),
        version: u32::from_le_bytes(version),
        accepts_fds: frame[5] & ACCEPTS_FDS != 0,
        limit: u64::from_le_bytes(limit),
    })
}

/// Sends this side's hello, reads the peer's and checks that the two
/// agree. The whole exchange ends by `deadline`.
pub(crate) fn exchange(
    transport: &dyn FrameTransport,
    config: &Config,
    deadline: Instant,
) -> Result<Hello, ConnectError> {
    let timeout = ConnectError::Timeout {
        after: config.get_handshake_timeout(),
    };
    let mut ours = [0; MAX_HELLO];
    let len = encode(&Hello::of(config, transport.supports_fds()), &mut ours)?;
    match transport.send_frame(&[IoSlice::new(&ours[..len])], &[], Wait::Until(deadline)) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::TimedOut => return Err(timeout),
        Err(e) if gone(&e) => return Err(ConnectError::Closed),
        Err(e) => return Err(ConnectError::Io(e)),
    }
    // One byte more than the largest hello, so a longer frame shows up as
    // truncated instead of fitting exactly.
    let mut buf = Vec::new();
    let mut fds = Vec::new();
    let got = transport.recv_frame(&mut buf, MAX_HELLO + 1, &mut fds, 0, Wait::Until(deadline));
    let len = match got {
        Ok(Some(len)) => len,
        Ok(None) => return Err(ConnectError::Closed),
        Err(e) if e.kind() == io::ErrorKind::TimedOut => return Err(timeout),
        Err(e) if gone(&e) => return Err(ConnectError::Closed),
        Err(e) => {
            return Err(match TransportError::of(&e) {
                Some(TransportError::Truncated { .. }) => ConnectError::Malformed {
                    reason: "longer than any hello",
                },
                Some(TransportError::FdsTruncated { .. }) => ConnectError::Malformed {
                    reason: "it carried file descriptors (closed)",
                },
                _ => ConnectError::Io(e),
            })
        }
    };
    let theirs = parse(&buf[..len])?;
    if theirs.protocol != config.get_protocol() || theirs.version != config.get_protocol_version() {
        return Err(ConnectError::ProtocolMismatch {
            ours: config.get_protocol().to_owned(),
            ours_version: config.get_protocol_version(),
            theirs: theirs.protocol,
            theirs_version: theirs.version,
        });
    }
    Ok(theirs)
}

fn gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::NotConnected
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hello_round_trips() {
        let config = Config::new()
            .protocol("calc", 7)
            .accept_fds(false)
            .limit(1000);
        let mut buf = [0; MAX_HELLO];
        let len = encode(&Hello::of(&config, true), &mut buf).unwrap();
        let hello = parse(&buf[..len]).unwrap();
        assert_eq!(hello.protocol, "calc");
        assert_eq!(hello.version, 7);
        assert!(!hello.accepts_fds);
        assert_eq!(hello.limit, 1000);
    }

    #[test]
    fn every_truncation_and_bit_flip_is_an_error_not_a_panic() {
        let config = Config::new().protocol("some protocol", 1);
        let mut buf = [0; MAX_HELLO];
        let len = encode(&Hello::of(&config, true), &mut buf).unwrap();
        for cut in 0..len {
            assert!(parse(&buf[..cut]).is_err(), "cut at {cut}");
        }
        for byte in 0..len {
            for bit in 0..8 {
                let mut bad = buf;
                bad[byte] ^= 1 << bit;
                let _ = parse(&bad[..len]); // must not panic
            }
        }
    }
}
