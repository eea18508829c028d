//! [`Authorize`]: which peers a listener accepts and a client trusts.

use std::fmt;
use std::sync::Arc;

use courier_transport::Credentials;

/// Decides from a peer's credentials (`SO_PEERCRED`: pid, uid, gid, taken
/// by the kernel at connect time, unforgeable) whether to talk to it. The
/// check runs before anything is read from the peer.
///
/// The default, [`Authorize::same_user`], accepts only peers running as
/// this process's effective uid. Abstract socket names have no permission
/// check at all, so this is what keeps other users out of them.
///
/// ```
/// use courier_channel::Authorize;
/// use courier_transport::Credentials;
///
/// let me = Credentials::current();
/// assert!(Authorize::same_user().allows(&me));
/// assert!(!Authorize::same_user().allows(&Credentials::new(1, me.uid() + 1, 0)));
/// let group = Authorize::custom(|c| c.gid() == 100);
/// assert!(group.allows(&Credentials::new(1, 5000, 100)));
/// ```
#[derive(Clone)]
pub struct Authorize {
    rule: Rule,
}

#[derive(Clone)]
enum Rule {
    SameUser,
    Anyone,
    Custom(Arc<dyn Fn(&Credentials) -> bool + Send + Sync>),
}

impl Authorize {
    /// Peers running as this process's effective uid (the default).
    pub fn same_user() -> Self {
        Authorize {
            rule: Rule::SameUser,
        }
    }

    /// Every peer that can reach the socket. For path sockets the file
    /// mode still applies; abstract names have no other protection.
    pub fn anyone() -> Self {
        Authorize { rule: Rule::Anyone }
    }

    /// Peers for which `check` returns `true`.
    pub fn custom(check: impl Fn(&Credentials) -> bool + Send + Sync + 'static) -> Self {
        Authorize {
            rule: Rule::Custom(Arc::new(check)),
        }
    }

    /// Whether a peer with these credentials is allowed.
    pub fn allows(&self, peer: &Credentials) -> bool {
        match &self.rule {
            Rule::SameUser => peer.uid() == nix::unistd::geteuid().as_raw(),
            Rule::Anyone => true,
            Rule::Custom(check) => check(peer),
        }
    }
}

impl Default for Authorize {
    fn default() -> Self {
        Self::same_user()
    }
}

impl fmt::Debug for Authorize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.rule {
            Rule::SameUser => "Authorize::same_user()",
            Rule::Anyone => "Authorize::anyone()",
            Rule::Custom(_) => "Authorize::custom(..)",
        })
    }
}
