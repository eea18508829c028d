//! The read side: frames out of a byte stream, kept whole across partial
//! reads and interrupted waits.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::Instant;

use courier_transport::{TransportError, Wait};

use crate::PREFIX_LEN;

/// Bytes read from the stream at most per `read(2)`, and the buffer that
/// holds read-ahead between frames: small frames cost one read each.
const READ_AHEAD: usize = 64 << 10;

/// The least room a frame buffer gets: small values never reallocate.
const MIN_BODY: usize = 4096;

/// Where a partly read frame stands. Kept across calls, so a wait that
/// times out in the middle of a frame loses nothing.
#[derive(Default)]
pub(crate) struct Reader {
    /// Read-ahead: bytes read but not yet consumed are `ahead[start..end]`.
    ahead: Vec<u8>,
    start: usize,
    end: usize,
    /// The current frame's length, once its prefix is complete.
    frame_len: Option<usize>,
    /// The current frame's bytes so far (unless it is being discarded).
    body: Vec<u8>,
    /// How much of the current frame has been read (kept or discarded).
    got: usize,
    /// The current frame is longer than the caller's maximum: its bytes
    /// are read and dropped, so the stream stays in step.
    discarding: bool,
}

impl Reader {
    /// Reads until one whole frame is in `buf[..len]` (copied in when it
    /// arrived whole in the read-ahead; a frame assembled over several reads
    /// has its buffer swapped in), the stream ends, or `wait` runs out.
    #[inline]
    pub(crate) fn recv(
        &mut self,
        fd: BorrowedFd<'_>,
        buf: &mut Vec<u8>,
        max_len: usize,
        wait: Wait,
    ) -> io::Result<Option<usize>> {
        if wait == Wait::Block && self.start == self.end && self.frame_len.is_none() {
            // The common receive: nothing read ahead, and the next read
            // brings a whole small frame. This is `fill` for an empty
            // read-ahead, written out: through `fill` (inlined or not) a
            // pipe round trip took 36 more instructions (callgrind).
            if self.ahead.len() < READ_AHEAD {
                self.ahead.resize(READ_AHEAD, 0);
            }
            let n = crate::io::read(fd, &mut self.ahead, wait)?;
            (self.start, self.end) = (0, n);
            if n == 0 {
                return self.at_end();
            }
            if let Some(done) = self.step(buf, max_len)? {
                return Ok(Some(done));
            }
        }
        self.recv_any(fd, buf, max_len, wait)
    }

    /// [`recv`](Self::recv) from wherever the read-ahead stands.
    #[inline(never)]
    fn recv_any(
        &mut self,
        fd: BorrowedFd<'_>,
        buf: &mut Vec<u8>,
        max_len: usize,
        wait: Wait,
    ) -> io::Result<Option<usize>> {
        let mut first = true;
        loop {
            if let Some(done) = self.step(buf, max_len)? {
                return Ok(Some(done));
            }
            // Past the deadline, one read still may complete a frame that
            // is already there; more would let a trickling peer keep this
            // call going for ever. What was read is kept for the next call.
            if let Wait::Until(deadline) = wait {
                if !first && Instant::now() >= deadline {
                    return Err(io::ErrorKind::TimedOut.into());
                }
            }
            first = false;
            if !self.fill(fd, wait)? {
                return self.at_end();
            }
        }
    }

    /// Consumes what the read-ahead holds; `Some(len)` once a frame is whole.
    #[inline(always)]
    fn step(&mut self, buf: &mut Vec<u8>, max_len: usize) -> io::Result<Option<usize>> {
        if self.frame_len.is_none() {
            // The common case first: a whole frame waiting in the read-ahead
            // is copied out at once.
            let ahead = &self.ahead[self.start..self.end];
            let Some((prefix, rest)) = ahead.split_first_chunk::<PREFIX_LEN>() else {
                return Ok(None); // not even a prefix yet
            };
            let len = u32::from_le_bytes(*prefix) as usize;
            if len <= max_len && len <= rest.len() {
                buf.clear();
                // A few KiB at least, as below: values that grow by a byte
                // do not reallocate.
                buf.reserve(len.max(MIN_BODY));
                buf.extend_from_slice(&rest[..len]);
                self.start += PREFIX_LEN + len;
                return Ok(Some(len));
            }
        }
        self.step_any(buf, max_len)
    }

    /// [`step`](Self::step) in general: a frame in pieces, one too long,
    /// or not there yet.
    #[inline(never)]
    fn step_any(&mut self, buf: &mut Vec<u8>, max_len: usize) -> io::Result<Option<usize>> {
        let frame_len = match self.frame_len {
            Some(len) => len,
            None => {
                if self.end - self.start < PREFIX_LEN {
                    return Ok(None);
                }
                let mut prefix = [0; PREFIX_LEN];
                prefix.copy_from_slice(&self.ahead[self.start..self.start + PREFIX_LEN]);
                self.start += PREFIX_LEN;
                let len = u32::from_le_bytes(prefix) as usize;
                self.frame_len = Some(len);
                self.got = 0;
                self.discarding = len > max_len;
                self.body.clear();
                if !self.discarding {
                    // Room for the whole frame when it is already here (a
                    // few KiB at least, so values that grow by a byte do
                    // not reallocate); larger bodies grow as bytes arrive.
                    let here = self.end - self.start;
                    self.body.reserve(len.min(here.max(MIN_BODY)).max(MIN_BODY));
                }
                if self.discarding {
                    // Reported now, not after the peer has sent it all (a
                    // lying prefix may never be followed by its bytes);
                    // the next calls drain it before the next frame.
                    return Err(TransportError::Truncated {
                        len,
                        capacity: max_len,
                        fds: 0,
                    }
                    .into());
                }
                len
            }
        };
        let take = (frame_len - self.got).min(self.end - self.start);
        if !self.discarding {
            let free = self.body.capacity() - self.body.len();
            if free < take {
                // Doubling, but never past the frame's length: a frame at
                // the limit takes no more than the limit.
                let want = (self.body.capacity() * 2)
                    .max(self.body.len() + take)
                    .min(frame_len);
                self.body.reserve_exact(want - self.body.len());
            }
            self.body
                .extend_from_slice(&self.ahead[self.start..self.start + take]);
        }
        self.start += take;
        self.got += take;
        if self.got < frame_len {
            return Ok(None);
        }
        self.frame_len = None;
        if self.discarding {
            // Drained: on to the next frame.
            self.discarding = false;
            return self.step(buf, max_len);
        }
        std::mem::swap(buf, &mut self.body);
        Ok(Some(frame_len))
    }

    /// Reads more into the read-ahead under `wait`. `false` at end of stream.
    fn fill(&mut self, fd: BorrowedFd<'_>, wait: Wait) -> io::Result<bool> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 && self.ahead.len() - self.end < PREFIX_LEN {
            self.ahead.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.ahead.len() < READ_AHEAD {
            self.ahead.resize(READ_AHEAD, 0);
        }
        // Memory follows what the peer really sent: a frame's body grows as
        // its bytes arrive, never to a claimed length up front.
        let n = crate::io::read(fd, &mut self.ahead[self.end..], wait)?;
        self.end += n;
        Ok(n > 0)
    }

    /// End of stream: fine between frames, an error inside one.
    fn at_end(&mut self) -> io::Result<Option<usize>> {
        let pending_prefix = self.end - self.start;
        let inside = self.frame_len.is_some() || pending_prefix > 0;
        if !inside {
            return Ok(None);
        }
        let (got, len) = match self.frame_len {
            Some(len) => (self.got, len),
            None => (pending_prefix, PREFIX_LEN),
        };
        *self = Reader {
            ahead: std::mem::take(&mut self.ahead),
            ..Reader::default()
        };
        Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("stream ended inside a frame: {got} of {len} bytes arrived"),
        ))
    }
}
