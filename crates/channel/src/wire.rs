//! The frame format (docs/wire-format.md is the specification).
//!
//! ```text
//! offset size field
//!  0     2    magic       0x43 0x52 ("CR")
//!  2     1    version     3
//!  3     1    kind        0 = inline body follows, 1 = body in a sealed memfd,
//!                          2 = body in the sender's shared ring
//!  4     2    fd_count    user fds in the fd table (u16 LE), not counting a memfd
//!  6     1    flags       kind 2: bit 0 = the ring's memfd is the frame's last fd,
//!                          bit 1 = the body is streamed; otherwise 0
//!  7     1    reserved    0
//!  8     8    body_len    body length in bytes (u64 LE)
//! 16     ...  body        kind 0: exactly body_len bytes of postcard
//! 16     24   ring        kind 2: ring id, start position, retired ring id (u64 LE each)
//! ```

use crate::FrameError;

/// The first two bytes of every frame.
pub(crate) const MAGIC: [u8; 2] = *b"CR";
/// The frame format version this build speaks.
pub const WIRE_VERSION: u8 = 3;
/// Bytes before the body.
pub const HEADER_LEN: usize = 16;
/// The largest inline frame (header and body) any courier peer sends, so
/// the largest a receiver must be ready for. Larger bodies travel in a
/// sealed memfd.
pub const MAX_INLINE_FRAME: usize = 128 * 1024;

impl BodyKind {
    /// The kind byte of a ring frame.
    pub(crate) const RING_BYTE: u8 = 2;
}

/// Where the body is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BodyKind {
    /// After the header, in the same frame.
    Inline,
    /// In a sealed memfd, the last fd of the frame.
    SharedMemory,
    /// In the sender's shared ring, at the position the frame names.
    Ring,
}

/// The size of a ring frame's fields after the header.
pub(crate) const RING_FIELDS: usize = 24;

/// Where a ring frame's body is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RingRef {
    /// The ring: its memfd's inode number.
    pub(crate) id: u64,
    /// The body's position in the ring's byte sequence.
    pub(crate) start: u64,
    /// A ring of the same sender that no later frame uses (0: none).
    pub(crate) retire: u64,
    /// Whether the ring's memfd is the frame's last fd.
    pub(crate) attached: bool,
    /// Whether the body is streamed: written while it is read, wrapping
    /// around the ring as often as its length needs.
    pub(crate) streamed: bool,
}

/// A parsed, sanity-checked header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) kind: BodyKind,
    pub(crate) fd_count: usize,
    pub(crate) body_len: u64,
    /// Kind [`BodyKind::Ring`] only.
    pub(crate) ring: Option<RingRef>,
}

impl Header {
    /// Writes the header into the first [`HEADER_LEN`] bytes of `out`,
    /// and a ring frame's fields into the [`RING_FIELDS`] after them.
    pub(crate) fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&MAGIC);
        out[2] = WIRE_VERSION;
        out[3] = match self.kind {
            BodyKind::Inline => 0,
            BodyKind::SharedMemory => 1,
            BodyKind::Ring => BodyKind::RING_BYTE,
        };
        // fd_count <= MAX_FDS (checked by the sender), so it fits in u16.
        out[4..6].copy_from_slice(&(self.fd_count as u16).to_le_bytes());
        out[6] = self
            .ring
            .map_or(0, |r| u8::from(r.attached) | u8::from(r.streamed) << 1);
        out[7] = 0;
        out[8..16].copy_from_slice(&self.body_len.to_le_bytes());
        if let Some(ring) = self.ring {
            out[16..24].copy_from_slice(&ring.id.to_le_bytes());
            out[24..32].copy_from_slice(&ring.start.to_le_bytes());
            out[32..40].copy_from_slice(&ring.retire.to_le_bytes());
        }
    }

    /// Writes the header of an inline frame with `fd_count` fds and a
    /// `body_len`-byte body into the first [`HEADER_LEN`] bytes of `out`:
    /// [`write`](Self::write) for the common frame, in two stores.
    #[inline]
    pub(crate) fn write_inline(out: &mut [u8], fd_count: usize, body_len: u64) {
        // fd_count <= MAX_FDS (checked by the sender), so it fits in u16.
        let [lo, hi] = (fd_count as u16).to_le_bytes();
        let head = [MAGIC[0], MAGIC[1], WIRE_VERSION, 0, lo, hi, 0, 0];
        out[..8].copy_from_slice(&head);
        out[8..HEADER_LEN].copy_from_slice(&body_len.to_le_bytes());
    }

    /// The body of the common frame (inline, no fds, no flags, within
    /// `limit`), checked in one comparison; `None` for any other frame,
    /// which [`parse`](Self::parse) checks field by field. The caller
    /// checks that no fds arrived. It takes exactly the frames `parse`
    /// takes as inline without fds.
    #[inline]
    pub(crate) fn plain_body(frame: &[u8], limit: usize) -> Option<&[u8]> {
        const PLAIN: [u8; 8] = [MAGIC[0], MAGIC[1], WIRE_VERSION, 0, 0, 0, 0, 0];
        let (head, body) = frame.split_first_chunk::<HEADER_LEN>()?;
        let body_len = u64_at(head, 8);
        (head[..8] == PLAIN && body_len <= limit as u64 && body.len() as u64 == body_len)
            .then_some(body)
    }

    /// Parses and checks the header of a received frame of `frame.len()`
    /// bytes that arrived with `fds` fds, against the receiver's `limit`,
    /// field by field, naming the fault. Out of line: the common frame is
    /// taken by [`plain_body`](Self::plain_body) first.
    #[inline(never)]
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
            BodyKind::RING_BYTE => BodyKind::Ring,
            other => return Err(FrameError::UnknownKind { found: other }),
        };
        let flags_allowed = if kind == BodyKind::Ring { 0b11 } else { 0 };
        if frame[6] & !flags_allowed != 0 || frame[7] != 0 {
            return Err(FrameError::ReservedBitsSet);
        }
        let fd_count = usize::from(u16::from_le_bytes([frame[4], frame[5]]));
        let body_len = u64_at(frame, 8);
        let carried = (frame.len() - HEADER_LEN) as u64;
        let ring = match kind {
            BodyKind::Ring if carried != RING_FIELDS as u64 => {
                return Err(FrameError::BodyLengthMismatch {
                    declared: RING_FIELDS as u64,
                    actual: carried,
                })
            }
            BodyKind::Ring => Some(ring_ref(frame)),
            _ => None,
        };
        let header = Header {
            kind,
            fd_count,
            body_len,
            ring,
        };
        let memfds = match kind {
            BodyKind::Inline => 0,
            BodyKind::SharedMemory => 1,
            BodyKind::Ring => usize::from(ring.is_some_and(|r| r.attached)),
        };
        let expected_fds = fd_count + memfds;
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

/// The ring fields of a ring frame (`HEADER_LEN + RING_FIELDS` bytes).
fn ring_ref(frame: &[u8]) -> RingRef {
    RingRef {
        id: u64_at(frame, 16),
        start: u64_at(frame, 24),
        retire: u64_at(frame, 32),
        attached: frame[6] & 1 != 0,
        streamed: frame[6] & 2 != 0,
    }
}

/// The ring fields and body length of a frame shaped like a ring frame
/// (its length and kind byte), whatever else is wrong with it: for
/// giving a refused frame's space back.
pub(crate) fn ring_fields(frame: &[u8]) -> Option<(RingRef, u64)> {
    (frame.len() == HEADER_LEN + RING_FIELDS && frame[3] == BodyKind::RING_BYTE)
        .then(|| (ring_ref(frame), u64_at(frame, 8)))
}

#[inline]
fn u64_at(frame: &[u8], at: usize) -> u64 {
    let mut bytes = [0; 8];
    bytes.copy_from_slice(&frame[at..at + 8]);
    u64::from_le_bytes(bytes)
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
    fn the_plain_check_takes_exactly_what_parse_takes_as_inline_without_fds() {
        let plain = Header {
            kind: BodyKind::Inline,
            fd_count: 0,
            body_len: 5,
            ring: None,
        };
        let good = frame(plain, b"hello");
        assert_eq!(Header::plain_body(&good, 99), Some(&b"hello"[..]));
        assert_eq!(Header::parse(&good, 0, 99), Ok(plain));
        // Every one-byte change of the header, a short frame, a body over
        // the limit, a length that lies: the plain check refuses, and so
        // does parse unless the frame is still inline without fds.
        let mut cases = vec![
            good[..HEADER_LEN - 1].to_vec(),
            good[..HEADER_LEN + 4].to_vec(),
        ];
        for at in 0..HEADER_LEN {
            let mut bad = good.clone();
            bad[at] ^= 0x01;
            cases.push(bad);
        }
        for bad in &cases {
            let inline_without_fds = matches!(
                Header::parse(bad, 0, 99),
                Ok(Header {
                    kind: BodyKind::Inline,
                    fd_count: 0,
                    ..
                })
            );
            assert_eq!(
                Header::plain_body(bad, 99).is_some(),
                inline_without_fds,
                "{bad:?}"
            );
        }
        assert_eq!(Header::plain_body(&good, 4), None);
        assert!(Header::parse(&good, 0, 4).is_err());
    }

    #[test]
    fn the_inline_writer_writes_what_the_general_one_does() {
        for (fd_count, body_len) in [(0, 0), (0, 8), (3, 5), (253, 1 << 17), (0x1234, u64::MAX)] {
            let general = Header {
                kind: BodyKind::Inline,
                fd_count,
                body_len,
                ring: None,
            };
            let mut expected = [0xaa; HEADER_LEN + 2];
            general.write(&mut expected);
            let mut got = [0xaa; HEADER_LEN + 2];
            Header::write_inline(&mut got, fd_count, body_len);
            assert_eq!(got, expected, "{fd_count} fds, {body_len} bytes");
        }
    }

    #[test]
    fn a_written_header_parses_back() {
        let h = Header {
            kind: BodyKind::Inline,
            fd_count: 3,
            body_len: 5,
            ring: None,
        };
        assert_eq!(Header::parse(&frame(h, b"hello"), 3, 1 << 20), Ok(h));
        let s = Header {
            kind: BodyKind::SharedMemory,
            fd_count: 0,
            body_len: 1 << 20,
            ring: None,
        };
        assert_eq!(Header::parse(&frame(s, b""), 1, 1 << 20), Ok(s));
        for (attached, streamed) in [(false, false), (true, false), (false, true), (true, true)] {
            let r = Header {
                kind: BodyKind::Ring,
                fd_count: 2,
                body_len: 3 << 20,
                ring: Some(RingRef {
                    id: 7,
                    start: 1 << 40,
                    retire: 9,
                    attached,
                    streamed,
                }),
            };
            let mut f = vec![0; HEADER_LEN + RING_FIELDS];
            r.write(&mut f);
            let fds = 2 + usize::from(attached);
            assert_eq!(Header::parse(&f, fds, 4 << 20), Ok(r));
        }
    }

    #[test]
    fn every_lie_is_caught() {
        let h = Header {
            kind: BodyKind::Inline,
            fd_count: 1,
            body_len: 5,
            ring: None,
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
            ring: None,
        };
        assert!(matches!(
            Header::parse(&frame(huge, b""), 1, 1 << 28),
            Err(FrameError::TooLarge { .. })
        ));
    }
}
