//! Process credentials: the peer's (SO_PEERCRED, SO_PEERPIDFD) and per
//! message (SCM_CREDENTIALS).

/// A process's pid, uid and gid, as the kernel reports them.
///
/// From [`Socket::peer_cred`](crate::Socket::peer_cred) it is a snapshot taken
/// when the connection or pair was made (for a pair made before `fork`, it
/// names the process that made it). In [`Received::credentials`](crate::Received)
/// it was stamped on that one message by the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Credentials {
    pid: i32,
    uid: u32,
    gid: u32,
}

impl Credentials {
    /// Credentials with these ids.
    pub fn new(pid: i32, uid: u32, gid: u32) -> Self {
        Credentials { pid, uid, gid }
    }

    /// This process's pid and real uid and gid: what an unprivileged process
    /// may send as SCM_CREDENTIALS.
    pub fn current() -> Self {
        Credentials {
            pid: nix::unistd::getpid().as_raw(),
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
        }
    }

    /// The process id (0 when the kernel could not map it into this pid
    /// namespace).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The user id.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// The group id.
    pub fn gid(&self) -> u32 {
        self.gid
    }
}
