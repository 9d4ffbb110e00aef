//! `sandbox = yes` (the default; an rstunnel extension, see the man page): once startup is
//! done, a Landlock ruleset limits which files the process, and every `exec` program it
//! starts later, can still open, and `PR_SET_NO_NEW_PRIVS` stops any of them gaining
//! privileges through a set-user-ID program. docs/ARCHITECTURE.md (Sandbox) lists what is
//! allowed and why; in short, only what the running process needs:
//!
//! * read: the directory of the configuration file, its `include` directories, the
//!   directory of every `cert`, `key`, `CAfile`, `CRLfile` and `PSKsecrets` file (so that
//!   a file replaced by rename, or a renewed certificate behind a symlink, can be loaded
//!   again by a reload), every `CApath` and `CRLpath` directory and the directories its
//!   symlinks point into (OpenSSL reads those during handshakes); the directories of the
//!   files the C library reads for name, service, user and group lookups (`/etc/hosts`,
//!   `/etc/resolv.conf`, `/etc/passwd`, …: so `/etc`, as these files are replaced by
//!   rename) and the library directories (NSS modules, and the libraries of `exec`
//!   programs); `/proc/self`;
//! * execute (and read): each `exec` program (a bare name as found on PATH), the
//!   interpreter its `#!` line names (for `#!/usr/bin/env NAME`, NAME found on PATH too) or
//!   its ELF header names (the dynamic loader), in turn, and nothing else; the directory of
//!   an absolute `execArgs` word that names an existing file is readable (a script given
//!   to a shell);
//! * write: `/dev/null`; new files and writes in the directory of `output` (log reopen
//!   after rotation creates the file again); removing entries in the directory of `pid`
//!   and of each Unix `accept` socket (which may also be created again there);
//! * devices: `/dev/ptmx`, `/dev/pts` and `/dev/tty`, read, write and ioctl, only when a
//!   service has `pty = yes`.
//!
//! Networking is not restricted (a reload may bind new ports) and neither is connecting to
//! a Unix socket (`/dev/log`, Unix `connect` targets): the rights handled are Landlock
//! ABI 5's file rights, and sending signals is scoped to the sandbox where the kernel has
//! ABI 6. On a kernel without Landlock, or with an older ABI, what the kernel cannot
//! enforce is left open and said once in the log (best effort).
//!
//! Called by `runtime` on the main thread after the privilege drop, the fork and the pid
//! file, before any thread is started (Landlock applies to the calling thread and the
//! threads and processes it creates afterwards). Paths are as the process sees them then,
//! so inside any chroot. Owns building, applying and checking the ruleset; must not open
//! sessions, parse the configuration, or touch anything but the paths it is given.
//!
//! This file only declares and re-exports: `grants` (the rights and the plan's grants, a
//! leaf), `programs` (the files an `exec` program runs through, a leaf), `plan` (what the
//! configuration needs, and the reload check against it), `ruleset` (applying the plan
//! with Landlock and no-new-privileges, the `Outcome`).

mod grants;
mod plan;
mod programs;
mod ruleset;
#[cfg(test)]
mod testing;

pub use grants::{Grant, Plan, Right};
pub use plan::{check, plan, refused_load, OutsideSandbox};
pub use programs::find_program;
pub use ruleset::{apply, kernel_abi, other_threads, support_line, Outcome};
