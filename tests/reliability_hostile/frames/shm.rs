//! Kind-1 frames, bodies in memfds: refused ones ([`Cat::ShmBad`]) and
//! ones shrunk after sending ([`Cat::ShmShrunk`]).

use courier::transport::MAX_FDS;
use nix::fcntl::SealFlag;

use super::{
    shrink_after_send, Built, Hostile, BAD_PARTIAL_BODY, BAD_SEALED_BODY, BAD_UNSEALED_BODY,
};
use crate::categories::{Cat, Expect};
use crate::messages::plain_body;
use crate::pool::FdRef;
use crate::support::memfd::{body_seals, memfd};
use crate::support::rng::Random;
use crate::support::wire::header;

impl Hostile {
    /// Kind-1 bodies in memfds without (all) seals, in fds that are no
    /// memfd, in memfds smaller than declared, of length 0.
    pub(super) fn shm_bad(&mut self) -> Built {
        let len = self.bad_body.len() as u64;
        let e = Expect::Error;
        match self.rng.below(6) {
            0 => Built::new(Cat::ShmBad, e, header(1, 0, 0, len))
                .fds(vec![FdRef::Bad(BAD_UNSEALED_BODY)]),
            1 => Built::new(Cat::ShmBad, e, header(1, 0, 0, len))
                .fds(vec![FdRef::Bad(BAD_PARTIAL_BODY)]),
            2 => {
                let body_fd = self.pool.non_memfd(&mut self.rng);
                let claim = self.rng.below(1000);
                Built::new(Cat::ShmBad, e, header(1, 0, 0, claim)).fds(vec![FdRef::Pool(body_fd)])
            }
            3 => {
                let claim = len + 1 + self.rng.below(1000);
                Built::new(Cat::ShmBad, e, header(1, 0, 0, claim))
                    .fds(vec![FdRef::Bad(BAD_SEALED_BODY)])
            }
            4 => Built::new(Cat::ShmBad, e, header(1, 0, 0, 0))
                .fds(vec![FdRef::Bad(BAD_SEALED_BODY)]),
            _ => {
                // User fds the value does not use, before a valid memfd.
                let n = 1 + self.rng.index(MAX_FDS - 1);
                let mut fds = self.pool.many(&mut self.rng, n);
                fds.push(FdRef::Bad(BAD_SEALED_BODY));
                Built::new(Cat::ShmBad, e, header(1, n as u16, 0, len)).fds(fds)
            }
        }
    }

    /// Kind-1 bodies in memfds that are shrunk (or, sealed, that the
    /// sender tries to shrink) after sending.
    pub(super) fn shm_shrunk(&mut self) -> Built {
        let body = plain_body(&mut self.rng, 3000);
        let len = body.len() as u64;
        let (seals, expect) = match self.rng.below(4) {
            0 => (SealFlag::empty(), Expect::Error),
            1 => (
                SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_WRITE,
                Expect::Error,
            ),
            2 => (SealFlag::F_SEAL_GROW, Expect::Error),
            _ => (body_seals(), Expect::Value),
        };
        let file = memfd(&body, len + self.rng.below(8192), seals);
        let shrink = file.try_clone().expect("dup memfd");
        Built::new(Cat::ShmShrunk, expect, header(1, 0, 0, len))
            .own(file)
            .after(move || {
                shrink_after_send(&shrink, expect == Expect::Value, "shm_shrink_blocked")
            })
    }
}
