//! The frame format (docs/wire-format.md is the specification).
//!
//! ```text
//! offset size field
//!  0     2    magic       0x43 0x52 ("CR")
//!  2     1    version     1
//!  3     1    kind        0 = inline body follows, 1 = body in a sealed memfd
//!  4     2    fd_count    user fds in the fd table (u16 LE), not counting the memfd
//!  6     2    reserved    0
//!  8     8    body_len    body length in bytes (u64 LE)
//! 16     ...  body        inline frames only: exactly body_len bytes of postcard
//! ```

use crate::FrameError;

/// The first two bytes of every frame.
pub(crate) const MAGIC: [u8; 2] = *b"CR";
/// The frame format version this build speaks.
pub const WIRE_VERSION: u8 = 1;
/// Bytes before the body.
pub const HEADER_LEN: usize = 16;
/// The largest inline frame (header and body) any courier peer sends, so
/// the largest a receiver must be ready for. Larger bodies travel in a
/// sealed memfd.
pub const MAX_INLINE_FRAME: usize = 128 * 1024;

/// Where the body is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BodyKind {
    /// After the header, in the same frame.
    Inline,
    /// In a sealed memfd, the last fd of the frame.
    SharedMemory,
}

/// A parsed, sanity-checked header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) kind: BodyKind,
    pub(crate) fd_count: usize,
    pub(crate) body_len: u64,
}

impl Header {
    /// Writes the header into the first [`HEADER_LEN`] bytes of `out`.
    pub(crate) fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&MAGIC);
        out[2] = WIRE_VERSION;
        out[3] = match self.kind {
            BodyKind::Inline => 0,
            BodyKind::SharedMemory => 1,
        };
        // fd_count <= MAX_FDS (checked by the sender), so it fits in u16.
        out[4..6].copy_from_slice(&(self.fd_count as u16).to_le_bytes());
        out[6..8].copy_from_slice(&[0, 0]);
        out[8..16].copy_from_slice(&self.body_len.to_le_bytes());
    }

    /// Parses and checks the header of a received frame of `frame.len()`
    /// bytes that arrived with `fds` fds, against the receiver's `limit`.
    pub(crate) fn parse(frame: &[u8], fds: usize, limit: usize) -> Result<Header, FrameError> {
        if frame.len() < HEADER_LEN {
            return Err(FrameError::TooShort { len: frame.len() });
        }
        if frame[0..2] != MAGIC {
            return Err(FrameError::BadMagic {
                found: [frame[0], frame[1]],
            });
        }
        if frame[2] != WIRE_VERSION {
            return Err(FrameError::UnsupportedVersion {
                found: frame[2],
                supported: WIRE_VERSION,
            });
        }
        let kind = match frame[3] {
            0 => BodyKind::Inline,
            1 => BodyKind::SharedMemory,
            other => return Err(FrameError::UnknownKind { found: other }),
        };
        if frame[6..8] != [0, 0] {
            return Err(FrameError::ReservedBitsSet);
        }
        let fd_count = usize::from(u16::from_le_bytes([frame[4], frame[5]]));
        let body_len = u64::from_le_bytes(frame[8..16].try_into().expect("8 bytes"));
        let header = Header {
            kind,
            fd_count,
            body_len,
        };
        let expected_fds = fd_count + usize::from(kind == BodyKind::SharedMemory);
        if fds != expected_fds {
            return Err(FrameError::FdCountMismatch {
                declared: expected_fds,
                received: fds,
            });
        }
        if body_len > limit as u64 {
            return Err(FrameError::TooLarge {
                size: body_len,
                limit,
            });
        }
        let carried = (frame.len() - HEADER_LEN) as u64;
        match kind {
            BodyKind::Inline if carried != body_len => Err(FrameError::BodyLengthMismatch {
                declared: body_len,
                actual: carried,
            }),
            BodyKind::SharedMemory if carried != 0 => Err(FrameError::BodyLengthMismatch {
                declared: 0,
                actual: carried,
            }),
            _ => Ok(header),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(h: Header, body: &[u8]) -> Vec<u8> {
        let mut f = vec![0; HEADER_LEN];
        h.write(&mut f);
        f.extend_from_slice(body);
        f
    }

    #[test]
    fn a_written_header_parses_back() {
        let h = Header {
            kind: BodyKind::Inline,
            fd_count: 3,
            body_len: 5,
        };
        assert_eq!(Header::parse(&frame(h, b"hello"), 3, 1 << 20), Ok(h));
        let s = Header {
            kind: BodyKind::SharedMemory,
            fd_count: 0,
            body_len: 1 << 20,
        };
        assert_eq!(Header::parse(&frame(s, b""), 1, 1 << 20), Ok(s));
    }

    #[test]
    fn every_lie_is_caught() {
        let h = Header {
            kind: BodyKind::Inline,
            fd_count: 1,
            body_len: 5,
        };
        let good = frame(h, b"hello");
        assert!(matches!(
            Header::parse(&good[..3], 1, 99),
            Err(FrameError::TooShort { len: 3 })
        ));
        assert!(matches!(
            Header::parse(&good, 0, 99),
            Err(FrameError::FdCountMismatch {
                declared: 1,
                received: 0
            })
        ));
        assert!(matches!(
            Header::parse(&good[..20], 1, 99),
            Err(FrameError::BodyLengthMismatch { .. })
        ));
        assert!(matches!(
            Header::parse(&good, 1, 4),
            Err(FrameError::TooLarge { size: 5, limit: 4 })
        ));
        for (at, value) in [(0, b'X'), (2, 9), (3, 7), (7, 1)] {
            let mut bad = good.clone();
            bad[at] = value;
            assert!(
                Header::parse(&bad, 1, 99).is_err(),
                "byte {at} = {value} accepted"
            );
        }
        let huge = Header {
            kind: BodyKind::SharedMemory,
            fd_count: 0,
            body_len: u64::MAX,
        };
        assert!(matches!(
            Header::parse(&frame(huge, b""), 1, 1 << 28),
            Err(FrameError::TooLarge { .. })
        ));
    }
}
