//! Decoding straight out of ring memory, one copy per byte.
//!
//! postcard reads through a "flavor". [`RingFlavor`] copies every byte it
//! hands out into memory of this process first (see
//! [`RingBody`](crate::ring::RingBody)), so nothing is validated in
//! place where the peer could change it afterwards. A streamed body is
//! read as it is written: a read waits for its bytes.
//!
//! Byte buffers and strings (`Bytes`, `String`, ...) would cost a second
//! copy: postcard hands their visitor a borrowed slice, which it copies into
//! a new `Vec`. The [`Handoff`] avoids that. When the depth adapter sees
//! `deserialize_byte_buf` or `deserialize_string`, it raises `want`; the
//! flavor's next (and, in postcard, only) temporary read then copies the
//! ring bytes into a fresh `Vec` of exactly that length, parks it in the
//! handoff and returns an empty slice; [`Owned`] ignores that slice and
//! gives the visitor the parked `Vec` instead (`visit_byte_buf`, or
//! `visit_string` after UTF-8 validation of the private copy).

use std::cell::{Cell, OnceCell};
use std::fmt;

use postcard::de_flavors::Flavor;
use serde::de::{self, Visitor};

use crate::ring::RingBody;

/// Passes an owned buffer from the flavor to the visitor (see the module
/// docs).
#[derive(Default)]
pub(crate) struct Handoff {
    want: Cell<bool>,
    owned: Cell<Option<Vec<u8>>>,
}

impl Handoff {
    /// Runs `read` (one `deserialize_byte_buf` or `deserialize_string`)
    /// with the owned path armed, and disarms it afterwards.
    pub(crate) fn armed<R>(&self, read: impl FnOnce() -> R) -> R {
        self.want.set(true);
        let result = read();
        self.want.set(false);
        self.owned.take();
        result
    }
}

/// A postcard input flavor over a ring body, read front to back.
pub(crate) struct RingFlavor<'de> {
    body: &'de RingBody<'de>,
    pos: usize,
    /// Where temporary reads are copied.
    scratch: Vec<u8>,
    /// A private copy of the rest of the body from where it was made (its
    /// first byte is body byte `.0`), made the first time a type asks to
    /// borrow from the input (rare for owned values: `&str`-visiting
    /// impls). Every later read comes from it: a streamed body's bytes
    /// before the read position are given back to the sender.
    snapshot: &'de OnceCell<(usize, Box<[u8]>)>,
    handoff: &'de Handoff,
}

/// A read the body could not satisfy: the stream ended first (the body
/// says why).
const ENDED: postcard::Error = postcard::Error::DeserializeUnexpectedEnd;

impl<'de> RingFlavor<'de> {
    pub(crate) fn new(
        body: &'de RingBody<'de>,
        snapshot: &'de OnceCell<(usize, Box<[u8]>)>,
        handoff: &'de Handoff,
    ) -> Self {
        RingFlavor {
            body,
            pos: 0,
            scratch: Vec::new(),
            snapshot,
            handoff,
        }
    }

    fn check(&self, count: usize) -> postcard::Result<()> {
        if count > self.body.len() - self.pos {
            return Err(postcard::Error::DeserializeUnexpectedEnd);
        }
        Ok(())
    }

    /// The snapshot's bytes from the read position on, if there is one.
    fn snapshotted(&self) -> Option<&'de [u8]> {
        let (base, bytes) = self.snapshot.get()?;
        Some(&bytes[self.pos - base..])
    }

    /// Copies `count` bytes from the read position to `out`.
    fn copy(&self, count: usize, out: &mut Vec<u8>) -> postcard::Result<()> {
        match self.snapshotted() {
            Some(bytes) => out.extend_from_slice(&bytes[..count]),
            None if self.body.copy_to(self.pos, count, out) => {}
            None => return Err(ENDED),
        }
        Ok(())
    }
}

impl<'de> Flavor<'de> for RingFlavor<'de> {
    /// Bytes left unread.
    type Remainder = usize;
    type Source = ();

    fn pop(&mut self) -> postcard::Result<u8> {
        self.check(1)?;
        let byte = match self.snapshotted() {
            Some(bytes) => bytes[0],
            None => self.body.byte(self.pos).ok_or(ENDED)?,
        };
        self.pos += 1;
        Ok(byte)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.body.len() - self.pos)
    }

    fn try_take_n(&mut self, count: usize) -> postcard::Result<&'de [u8]> {
        self.check(count)?;
        if self.snapshot.get().is_none() {
            let mut copy = Vec::new();
            if !self
                .body
                .copy_to(self.pos, self.body.len() - self.pos, &mut copy)
            {
                return Err(ENDED);
            }
            let _ = self.snapshot.set((self.pos, copy.into_boxed_slice()));
        }
        let rest = self.snapshotted().ok_or(ENDED)?;
        self.pos += count;
        Ok(&rest[..count])
    }

    fn try_take_n_temp<'a>(&'a mut self, count: usize) -> postcard::Result<&'a [u8]>
    where
        'de: 'a,
    {
        self.check(count)?;
        if self.handoff.want.replace(false) {
            let mut owned = Vec::new();
            self.copy(count, &mut owned)?;
            self.handoff.owned.set(Some(owned));
            self.pos += count;
            return Ok(&[]);
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let copied = self.copy(count, &mut scratch);
        self.scratch = scratch;
        copied?;
        self.pos += count;
        Ok(&self.scratch)
    }

    fn finalize(self) -> postcard::Result<usize> {
        Ok(self.body.len() - self.pos)
    }
}

/// The visitor for an armed read: hands the parked buffer on.
pub(crate) struct Owned<'h, V> {
    pub(crate) inner: V,
    pub(crate) handoff: &'h Handoff,
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Owned<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<V::Value, E> {
        match self.handoff.owned.take() {
            Some(owned) => self.inner.visit_byte_buf(owned),
            None => self.inner.visit_bytes(v),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<V::Value, E> {
        match self.handoff.owned.take() {
            Some(owned) => match String::from_utf8(owned) {
                Ok(s) => self.inner.visit_string(s),
                Err(_) => Err(E::custom("invalid UTF-8 in a string")),
            },
            None => self.inner.visit_str(v),
        }
    }
}
