//! The rights a sandbox grant gives and the plan's list of grants (`Right`, `Grant`,
//! `Plan`): what each right means in Landlock's access bits, whether a grant covers a
//! need. A leaf of `sandbox`: it must not read the configuration, follow programs or apply
//! anything.

use std::path::{Path, PathBuf};

use landlock::{AccessFs, BitFlags};

/// What a grant allows beneath (or on) its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Right {
    /// Open files for reading, list directories.
    Read,
    /// Read, and execute: an `exec` program or its interpreter.
    Exec,
    /// Create regular files and write to files: the `output` directory.
    Log,
    /// Remove entries: the `pid` file's directory.
    Remove,
    /// Create and remove Unix sockets: a Unix `accept` socket's directory.
    Socket,
    /// Read, write and ioctl on device nodes (`/dev/null`, the pty devices).
    Device,
}

impl Right {
    pub(super) fn access(self) -> BitFlags<AccessFs> {
        match self {
            Right::Read => AccessFs::ReadFile | AccessFs::ReadDir,
            Right::Exec => AccessFs::ReadFile | AccessFs::ReadDir | AccessFs::Execute,
            Right::Log => AccessFs::WriteFile | AccessFs::MakeReg | AccessFs::Truncate,
            Right::Remove => AccessFs::RemoveFile.into(),
            Right::Socket => AccessFs::MakeSock | AccessFs::RemoveFile,
            Right::Device => {
                AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::ReadDir | AccessFs::IoctlDev
            }
        }
    }

    /// Whether a grant of `self` also gives what `need` asks for.
    fn covers(self, need: Right) -> bool {
        self.access().contains(need.access())
    }
}

/// One path the process may still reach, and why (for the debug log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Canonical (symlinks resolved): Landlock ties a rule to the inode, not the name.
    pub path: PathBuf,
    pub right: Right,
    pub why: &'static str,
}

/// Everything the ruleset will allow, built from the configuration at startup.
#[derive(Debug, Default, Clone)]
pub struct Plan {
    pub grants: Vec<Grant>,
    /// What the admin should hear at startup: a program whose chain could not be
    /// followed, a grant on a whole system tree.
    pub warnings: Vec<String>,
}

impl Plan {
    pub(super) fn grant(&mut self, path: &Path, right: Right, why: &'static str) {
        let Ok(path) = path.canonicalize() else {
            return; // absent here (e.g. no /etc/gai.conf): nothing to allow
        };
        let grant = Grant { path, right, why };
        if !self.grants.contains(&grant) {
            self.grants.push(grant);
        }
    }

    /// Whether `path` (canonical) is reachable with `need`: beneath a grant that covers
    /// it, or, for a program, granted as that exact file.
    pub(super) fn allows(&self, path: &Path, need: Right) -> bool {
        self.grants.iter().any(|g| {
            g.right.covers(need)
                && if need == Right::Exec {
                    g.path == path
                } else {
                    path.starts_with(&g.path)
                }
        })
    }
}
