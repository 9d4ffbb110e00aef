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

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use landlock::{
    Access, AccessFs, BitFlags, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, Scope, ABI,
};

use crate::config::error::LineError;
use crate::config::{Config, ConfigError};

/// The file rights the ruleset handles: every file right up to Landlock ABI 5 (ABI 6 and 7
/// added no file right). Rights a newer kernel adds (connecting to Unix sockets in ABI 9)
/// are deliberately not handled, so they stay allowed.
const HANDLED_ABI: ABI = ABI::V5;

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
    fn access(self) -> BitFlags<AccessFs> {
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
    fn grant(&mut self, path: &Path, right: Right, why: &'static str) {
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
    fn allows(&self, path: &Path, need: Right) -> bool {
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

/// How far on disk a path the configuration names reaches, the same for the plan (what is
/// granted) and the reload check (what must be granted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// A file read again later (by a reload or a program): its directory, as written and
    /// after resolving symlinks. Landlock ties a rule to an inode, so a rule on the file
    /// would not follow a file replaced by rename (an editor, a renewal, `sed -i`).
    Directory,
    /// A directory whose entries are read (`CApath`, `CRLpath`, `include`): it, and where
    /// its symlinks lead (`/etc/ssl/certs` links into `/usr/share/ca-certificates`).
    Tree,
    /// The path itself: a program, a device, a directory written in.
    Exact,
}

impl Reach {
    /// The paths granted for `path`.
    fn granted(self, path: &Path) -> Vec<PathBuf> {
        match self {
            Reach::Directory => {
                let mut out = vec![directory_of(path)];
                out.extend(
                    path.canonicalize()
                        .ok()
                        .as_deref()
                        .and_then(Path::parent)
                        .map(Path::to_path_buf),
                );
                out
            }
            Reach::Tree => {
                let mut out = vec![path.to_path_buf()];
                out.extend(link_targets(path));
                out
            }
            Reach::Exact => vec![path.to_path_buf()],
        }
    }

    /// The paths the reload check judges for `path`: what the new configuration needs
    /// now (a file itself; a directory and where its links lead).
    fn judged(self, path: &Path) -> Vec<PathBuf> {
        match self {
            Reach::Directory | Reach::Exact => vec![path.to_path_buf()],
            Reach::Tree => self.granted(path),
        }
    }
}

/// Where the symlinks in `dir` lead: a directory itself, a file its directory.
fn link_targets(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        if !entry.file_type().is_ok_and(|t| t.is_symlink()) {
            continue;
        }
        let target = match entry.path().canonicalize() {
            Ok(target) if target.is_dir() => target,
            Ok(target) => match target.parent() {
                Some(parent) => parent.to_path_buf(),
                None => continue,
            },
            Err(_) => continue,
        };
        if !out.contains(&target) {
            out.push(target);
        }
    }
    out
}

/// What a configuration needs reachable, as both the plan and the reload check see it:
/// one entry per path the configuration names or implies (the fixed system paths are not
/// listed: they are the same for every configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Need {
    path: PathBuf,
    right: Right,
    what: &'static str,
    reach: Reach,
}

/// The pseudo-terminal devices `pty = yes` opens (`openpty`, the controlling terminal).
const PTY_DEVICES: &[&str] = &["/dev/ptmx", "/dev/pts", "/dev/tty"];

fn needs(config: &Config, source: Option<&Path>) -> Vec<Need> {
    let mut out = Vec::new();
    let mut add = |path: &Path, right, what, reach| {
        out.push(Need {
            path: path.to_path_buf(),
            right,
            what,
            reach,
        })
    };
    if let Some(file) = source {
        add(file, Right::Read, "configuration file", Reach::Directory);
    }
    for dir in &config.includes {
        add(dir, Right::Read, "include directory", Reach::Tree);
    }
    if let Some(output) = &config.global.output {
        add(&directory_of(output), Right::Log, "output", Reach::Exact);
    }
    if let Some(pid) = &config.global.pid {
        add(&directory_of(pid), Right::Remove, "pid", Reach::Exact);
    }
    for s in std::iter::once(&config.defaults).chain(&config.services) {
        let files = [
            (&s.tls.cert, "cert", Reach::Directory),
            (&s.tls.key, "key", Reach::Directory),
            (&s.tls.ca_file, "CAfile", Reach::Directory),
            (&s.tls.crl_file, "CRLfile", Reach::Directory),
            (&s.tls.psk_secrets, "PSKsecrets", Reach::Directory),
            (&s.tls.ca_path, "CApath", Reach::Tree),
            (&s.tls.crl_path, "CRLpath", Reach::Tree),
        ];
        for (path, what, reach) in files {
            if let Some(path) = path {
                add(path, Right::Read, what, reach);
            }
        }
        if let Some(program) = &s.exec {
            let chain = program_chain(program);
            for (i, file) in chain.files.iter().enumerate() {
                let what = if i == 0 { "exec" } else { "interpreter" };
                add(file, Right::Exec, what, Reach::Exact);
            }
            // A script given to a shell, or a file the program reads.
            for word in s.exec_args.iter().skip(1).filter(|w| w.starts_with('/')) {
                if Path::new(word).is_file() {
                    add(
                        Path::new(word),
                        Right::Read,
                        "execArgs file",
                        Reach::Directory,
                    );
                }
            }
        }
        for socket in s.accept.iter().filter(|a| a.starts_with('/')) {
            add(
                &directory_of(Path::new(socket)),
                Right::Socket,
                "accept",
                Reach::Exact,
            );
        }
    }
    if config.services.iter().any(|s| s.exec.is_some() && s.pty) {
        for dev in PTY_DEVICES {
            add(Path::new(dev), Right::Device, "pty device", Reach::Exact);
        }
    }
    out
}

fn directory_of(file: &Path) -> PathBuf {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Files the C library reads after startup: name and service lookups (`delay = yes`,
/// reloads), user and group names (`setuid`/`setgid` at a reload), the dynamic loader's
/// cache (NSS modules, `exec` programs), the time zone of log lines, OpenSSL's
/// configuration. Each is allowed through its directory (so `/etc` itself, read only):
/// these files are replaced by rename (`useradd`, `dhclient`, `sed -i`, package
/// upgrades), which a rule on the file's inode would not follow. Unix permissions still
/// keep `/etc/shadow` and private keys from a process that dropped root.
const SYSTEM_FILES: &[&str] = &[
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/gai.conf",
    "/etc/services",
    "/etc/protocols",
    "/etc/passwd",
    "/etc/group",
    "/etc/ld.so.cache",
    "/etc/ld.so.preload",
    "/etc/localtime",
    "/etc/ssl/openssl.cnf",
];

/// Library directories: NSS modules loaded by lookups, OpenSSL's providers, and the
/// shared libraries of `exec` programs (read only; only the dynamic loader is executed).
const LIBRARY_DIRS: &[&str] = &[
    "/lib",
    "/lib64",
    "/lib32",
    "/usr/lib",
    "/usr/lib64",
    "/usr/lib32",
    "/usr/libx32",
    "/usr/local/lib",
];

/// Builds what the ruleset allows for `config`, read from `source` (`None`: from a
/// descriptor). Resolves paths on the file system as the process sees it now; paths that
/// do not exist are left out.
pub fn plan(config: &Config, source: Option<&Path>) -> Plan {
    let mut plan = Plan::default();
    for need in needs(config, source) {
        for path in need.reach.granted(&need.path) {
            plan.grant(&path, need.right, need.what);
        }
    }
    for file in SYSTEM_FILES {
        // As written and where a symlink leads (resolv.conf → /run/systemd/resolve/…).
        for dir in Reach::Directory.granted(Path::new(file)) {
            plan.grant(&dir, Right::Read, "C library lookups");
        }
    }
    for dir in LIBRARY_DIRS {
        plan.grant(Path::new(dir), Right::Read, "libraries");
    }
    plan.grant(Path::new("/proc/self"), Right::Read, "own /proc entries");
    plan.grant(Path::new("/dev/null"), Right::Device, "/dev/null");
    plan.grant(Path::new("/dev/urandom"), Right::Read, "random numbers");
    for s in std::iter::once(&config.defaults).chain(&config.services) {
        if let Some(program) = &s.exec {
            for problem in program_chain(program).problems {
                plan.warnings
                    .push(format!("Service [{}]: {problem}", s.name));
            }
        }
    }
    let broad = broad_grants(&plan.grants);
    plan.warnings.extend(broad);
    plan
}

/// System trees a grant should not land on: writing there (and removing) reaches every
/// file beneath, and reading `/` reaches every file.
const SHARED_TREES: &[&str] = &["/", "/var/log", "/run", "/var/run", "/tmp", "/dev"];

/// A warning for each grant that lands on a shared system tree.
fn broad_grants(grants: &[Grant]) -> Vec<String> {
    let trees: Vec<PathBuf> = SHARED_TREES
        .iter()
        .filter_map(|t| Path::new(t).canonicalize().ok())
        .collect();
    grants
        .iter()
        .filter(|g| match g.right {
            Right::Log | Right::Remove | Right::Socket => trees.contains(&g.path),
            Right::Read | Right::Exec => g.path == Path::new("/"),
            Right::Device => false,
        })
        .map(|g| {
            let (reach, example) = match g.right {
                Right::Read | Right::Exec => ("readable", "/etc/rstunnel/"),
                Right::Log => ("writable", "/var/log/rstunnel/"),
                _ => ("writable (files may be removed)", "/run/rstunnel/"),
            };
            format!(
                "Sandbox: {} makes {} {reach} with everything beneath it; give it a directory of its own (such as {example})",
                g.why,
                g.path.display()
            )
        })
        .collect()
}

/// What `apply` did, for the startup log line and the reload check.
#[derive(Debug)]
pub enum Outcome {
    /// `sandbox = no`.
    Off,
    /// The ruleset is in force; `partial` when the kernel enforces only part of it.
    Applied {
        abi: i32,
        partial: bool,
        no_new_privs: bool,
        plan: Plan,
    },
    /// The kernel has no Landlock (or it is disabled); only no-new-privileges applied.
    Unsupported { reason: String, no_new_privs: bool },
    /// Building or applying the ruleset failed; files are not restricted.
    Failed { error: String, no_new_privs: bool },
}

impl Outcome {
    /// The grants in force, if any (`None`: nothing restricts the files).
    pub fn enforced(&self) -> Option<&Plan> {
        match self {
            Outcome::Applied { plan, .. } => Some(plan),
            _ => None,
        }
    }

    /// Whether no-new-privileges is set: no program started from now on gains
    /// privileges through a set-user-ID or file-capability program.
    pub fn no_new_privs(&self) -> bool {
        match self {
            Outcome::Off => false,
            Outcome::Applied { no_new_privs, .. }
            | Outcome::Unsupported { no_new_privs, .. }
            | Outcome::Failed { no_new_privs, .. } => *no_new_privs,
        }
    }
}

/// What a kernel with Landlock `abi` leaves unrestricted of the ruleset (handled up to
/// ABI 5, signals scoped from ABI 6). ABI 1 refuses every rename or link into another
/// directory, but so does the ruleset on every ABI (no grant has that right), so it
/// changes nothing here.
fn unenforced(abi: i32) -> Vec<&'static str> {
    let mut out = Vec::new();
    if abi < 3 {
        out.push("truncating files is not restricted");
    }
    if abi < 5 {
        out.push("device ioctls are not restricted");
    }
    if abi < 6 {
        out.push("signals are not scoped");
    }
    out
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nnp = |set: bool| if set { "; no new privileges" } else { "" };
        match self {
            Outcome::Off => write!(f, "Sandbox: off (sandbox = no)"),
            Outcome::Applied {
                abi,
                partial,
                no_new_privs,
                plan,
            } => {
                let count = |r: Right| plan.grants.iter().filter(|g| g.right == r).count();
                write!(f, "Sandbox: Landlock ABI {abi}")?;
                if *partial {
                    let missing = unenforced(*abi);
                    if missing.is_empty() {
                        write!(f, " (partly enforced)")?;
                    } else {
                        write!(f, " (partly enforced: {})", missing.join(", "))?;
                    }
                }
                write!(
                    f,
                    ", {} path(s) readable, {} executable, {} writable{}",
                    count(Right::Read),
                    count(Right::Exec),
                    count(Right::Log)
                        + count(Right::Remove)
                        + count(Right::Socket)
                        + count(Right::Device),
                    if *no_new_privs {
                        ", no new privileges"
                    } else {
                        ", no-new-privileges NOT set"
                    }
                )
            }
            Outcome::Unsupported {
                reason,
                no_new_privs,
            } => write!(
                f,
                "Sandbox: files are not restricted ({reason}){}",
                nnp(*no_new_privs)
            ),
            Outcome::Failed {
                error,
                no_new_privs,
            } => write!(
                f,
                "Sandbox: not applied, files are not restricted: {error}{}",
                nnp(*no_new_privs)
            ),
        }
    }
}

/// The Landlock ABI of the running kernel, or why there is none.
pub fn kernel_abi() -> Result<i32, &'static str> {
    // SAFETY: landlock_create_ruleset with a null attribute, size 0 and the VERSION flag
    // only returns the ABI version (or -1 with errno); it creates nothing.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32, // LANDLOCK_CREATE_RULESET_VERSION
        )
    };
    if v > 0 {
        return Ok(v as i32);
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EOPNOTSUPP) => Err("Landlock is disabled in this kernel"),
        // A seccomp filter answering EPERM (systemd's SystemCallFilter= without @sandbox).
        Some(libc::EPERM) => Err("the Landlock system calls are refused by a seccomp filter"),
        _ => Err("this kernel has no Landlock (Linux 5.13 or later needed)"),
    }
}

/// One line on the kernel's support, for `-version`.
pub fn support_line() -> String {
    match kernel_abi() {
        Ok(abi) => format!("Sandbox:Landlock ABI {abi}"),
        Err(reason) => format!("Sandbox:none ({reason})"),
    }
}

/// Restricts the calling thread (and what it starts afterwards) to `plan`, with no new
/// privileges. Never fails the startup: what could not be applied is in the `Outcome`.
pub fn apply(plan: Plan) -> Outcome {
    let abi = match kernel_abi() {
        Ok(abi) => abi,
        Err(reason) => {
            return Outcome::Unsupported {
                reason: reason.into(),
                no_new_privs: set_no_new_privs(),
            }
        }
    };
    match restrict(&plan) {
        Ok(status) => {
            let no_new_privs = status.no_new_privs;
            match status.ruleset {
                RulesetStatus::NotEnforced => Outcome::Unsupported {
                    reason: format!("Landlock ABI {abi} enforced nothing"),
                    no_new_privs,
                },
                RulesetStatus::PartiallyEnforced => Outcome::Applied {
                    abi,
                    partial: true,
                    no_new_privs,
                    plan,
                },
                RulesetStatus::FullyEnforced => Outcome::Applied {
                    abi,
                    partial: false,
                    no_new_privs,
                    plan,
                },
            }
        }
        Err(e) => Outcome::Failed {
            error: e.to_string(),
            no_new_privs: set_no_new_privs(),
        },
    }
}

/// Threads of this process other than the caller: Landlock restricts only the calling
/// thread and what it starts later, so the caller must be alone (startup checks it).
pub fn other_threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count().saturating_sub(1))
}

fn restrict(plan: &Plan) -> Result<landlock::RestrictionStatus, landlock::RulesetError> {
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(HANDLED_ABI))?
        .scope(Scope::Signal)?
        .create()?;
    for grant in &plan.grants {
        let Ok(fd) = PathFd::new(&grant.path) else {
            continue; // gone since the plan was made
        };
        let mut access = grant.right.access() & AccessFs::from_all(HANDLED_ABI);
        if !grant.path.is_dir() {
            access &= AccessFs::from_file(HANDLED_ABI);
        }
        if access.is_empty() {
            continue;
        }
        ruleset = ruleset.add_rule(PathBeneath::new(fd, access))?;
    }
    ruleset.restrict_self()
}

fn set_no_new_privs() -> bool {
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) only sets a flag of this process.
    unsafe {
        libc::prctl(
            libc::PR_SET_NO_NEW_PRIVS,
            1 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        ) == 0
    }
}

/// Why a reload was refused: a path the new configuration names that the sandbox applied
/// at startup does not allow (the old configuration keeps running).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutsideSandbox {
    pub what: &'static str,
    pub path: PathBuf,
}

impl fmt::Display for OutsideSandbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} is outside what the sandbox allowed at startup (restart rstunnel to use it, or set sandbox = no)",
            self.what,
            self.path.display()
        )
    }
}

/// Why `config::load` of `source` failed, when the sandbox is the reason: the file, or
/// an `include` directory (or where its links lead), exists but is outside `plan`. `None`
/// for any other failure (a missing file keeps its own message).
pub fn refused_load(plan: &Plan, error: &ConfigError, source: &Path) -> Option<OutsideSandbox> {
    let need = match error {
        ConfigError::File { .. } => Need {
            path: source.to_path_buf(),
            right: Right::Read,
            what: "configuration file",
            reach: Reach::Directory,
        },
        ConfigError::Line {
            raw,
            error: LineError::Include,
            ..
        } => Need {
            path: PathBuf::from(raw.split_once('=')?.1.trim()),
            right: Right::Read,
            what: "include directory",
            reach: Reach::Tree,
        },
        _ => return None,
    };
    need.reach
        .judged(&need.path)
        .into_iter()
        .filter_map(|p| p.canonicalize().ok()) // absent: not the sandbox's doing
        .find(|p| !plan.allows(p, need.right))
        .map(|path| OutsideSandbox {
            what: need.what,
            path: if path == need.path.canonicalize().unwrap_or_default() {
                need.path.clone()
            } else {
                path
            },
        })
}

/// Checks that every path `config` names is reachable under `plan` with the right it
/// needs: the reload check, so that a new path fails the reload with this message rather
/// than a bare "Permission denied" from deep inside OpenSSL, or later in a session.
pub fn check(plan: &Plan, config: &Config, source: Option<&Path>) -> Result<(), OutsideSandbox> {
    // `pid` is not applied again by a reload (docs/ARCHITECTURE.md, Reload): not judged.
    for need in needs(config, source)
        .into_iter()
        .filter(|n| n.what != "pid")
    {
        for judged in need.reach.judged(&need.path) {
            // Landlock judges the inode a name resolves to: judge the canonical path.
            let path = judged.canonicalize().unwrap_or(judged.clone());
            if !plan.allows(&path, need.right) {
                return Err(OutsideSandbox {
                    what: need.what,
                    path: judged,
                });
            }
        }
    }
    Ok(())
}

/// The files the kernel opens for execution to run an `exec` program: the program, the
/// interpreter its `#!` line names (and, for `#!/usr/bin/env NAME`, NAME as found on
/// PATH), an ELF file's dynamic loader, in turn; and what could not be followed, for a
/// warning at startup.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Chain {
    files: Vec<PathBuf>,
    problems: Vec<String>,
}

/// More than any real program needs (script → env → interpreter → loader).
const MAX_CHAIN: usize = 8;

fn program_chain(program: &Path) -> Chain {
    let mut chain = Chain::default();
    let Some(first) = find_program(program).filter(|p| p.exists()) else {
        let bare = !program.as_os_str().as_encoded_bytes().contains(&b'/');
        chain.problems.push(format!(
            "exec {} is not found{}, so nothing is allowed for it and its sessions will fail",
            program.display(),
            if bare { " on PATH" } else { "" }
        ));
        return chain;
    };
    let mut queue = std::collections::VecDeque::from([first]);
    while let Some(path) = queue.pop_front() {
        if chain.files.len() >= MAX_CHAIN || chain.files.contains(&path) {
            continue;
        }
        let (next, problem) = interpreters(&path);
        chain.files.push(path);
        chain.problems.extend(problem);
        queue.extend(next);
    }
    chain
}

/// Where `execvp` (and so `Command`, and `env`) finds `name`: a name with a slash as it
/// is; a bare name in the first PATH directory holding an executable file of that name
/// (PATH of this process, which `exec` programs inherit; glibc's `/bin:/usr/bin` without
/// one).
pub fn find_program(name: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if name.as_os_str().is_empty() {
        return None;
    }
    if name.as_os_str().as_encoded_bytes().contains(&b'/') {
        return Some(name.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/bin:/usr/bin".into());
    std::env::split_paths(&path)
        .map(|dir| {
            // An empty PATH entry is the current directory.
            let dir = if dir.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                dir
            };
            dir.join(name)
        })
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// What the kernel (or `env`) opens next to run `path`, and what could not be followed.
fn interpreters(path: &Path) -> (Vec<PathBuf>, Option<String>) {
    let mut head = Vec::new();
    let read = std::fs::File::open(path).and_then(|f| f.take(64 * 1024).read_to_end(&mut head));
    if read.is_err() {
        return (Vec::new(), None); // not readable now: execve will say why
    }
    if let Some(line) = head.strip_prefix(b"#!") {
        let line = line.split(|&b| b == b'\n').next().unwrap_or_default();
        let text = String::from_utf8_lossy(line);
        let mut words = text.split_whitespace();
        let Some(interp) = words.next().map(PathBuf::from) else {
            return (Vec::new(), None);
        };
        if interp.file_name().is_none_or(|n| n != "env") {
            return (vec![interp], None);
        }
        // `env [-S] [-i] [NAME=VALUE…] PROGRAM`: the program is looked up on PATH.
        let Some(name) = words.find(|w| !w.starts_with('-') && !w.contains('=')) else {
            return (vec![interp], None);
        };
        return match find_program(Path::new(name)) {
            Some(found) => (vec![interp, found], None),
            None => (
                vec![interp],
                Some(format!(
                    "the `#!{}` line of {} names {name}, which is not found on PATH, so the script cannot run",
                    text.trim(),
                    path.display()
                )),
            ),
        };
    }
    match elf_interp(&head) {
        Elf::Other | Elf::Static => (Vec::new(), None),
        Elf::Interp(loader) => (vec![loader], None),
        Elf::Unparsed => (
            Vec::new(),
            Some(format!(
                "{} is an ELF file whose dynamic loader could not be read from its header, so the loader is not allowed and the program may not start",
                path.display()
            )),
        ),
    }
}

/// What an ELF header says about the dynamic loader.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Elf {
    /// Not an ELF file (data, or a `#!` script handled before).
    Other,
    /// No `PT_INTERP`: a static program.
    Static,
    Interp(PathBuf),
    /// An ELF file whose program headers are not within the bytes read, or malformed.
    Unparsed,
}

/// `PT_INTERP` of an ELF file's first bytes, 32- or 64-bit, either byte order.
fn elf_interp(head: &[u8]) -> Elf {
    if !head.starts_with(b"\x7fELF") {
        return Elf::Other;
    }
    elf_program_headers(head).unwrap_or(Elf::Unparsed)
}

fn elf_program_headers(head: &[u8]) -> Option<Elf> {
    const PT_INTERP: u64 = 3;
    let wide = match head.get(4)? {
        1 => false,
        2 => true,
        _ => return None,
    };
    let big = match head.get(5)? {
        1 => false,
        2 => true,
        _ => return None,
    };
    let uint = |at: usize, size: usize| -> Option<u64> {
        let bytes = head.get(at..at.checked_add(size)?)?;
        let mut v = 0u64;
        for i in 0..size {
            let b = if big { bytes[i] } else { bytes[size - 1 - i] };
            v = v << 8 | u64::from(b);
        }
        Some(v)
    };
    let word = if wide { 8 } else { 4 };
    let at = |v: u64| usize::try_from(v).ok();
    // ELF64: e_phoff 0x20, e_phentsize 0x36, e_phnum 0x38; ELF32: 0x1c, 0x2a, 0x2c.
    let (phoff, phentsize, phnum) = if wide {
        (uint(0x20, 8)?, uint(0x36, 2)?, uint(0x38, 2)?)
    } else {
        (uint(0x1c, 4)?, uint(0x2a, 2)?, uint(0x2c, 2)?)
    };
    for i in 0..phnum {
        let ph = at(phoff.checked_add(i.checked_mul(phentsize)?)?)?;
        if uint(ph, 4)? != PT_INTERP {
            continue;
        }
        // p_offset and p_filesz: ELF64 at 8 and 32, ELF32 at 4 and 16.
        let (offset, size) = if wide {
            (uint(ph + 8, word)?, uint(ph + 32, word)?)
        } else {
            (uint(ph + 4, word)?, uint(ph + 16, word)?)
        };
        let (offset, size) = (at(offset)?, at(size)?);
        let raw = head.get(offset..offset.checked_add(size)?)?;
        let raw = raw.split(|&b| b == 0).next()?;
        return Some(Elf::Interp(PathBuf::from(std::str::from_utf8(raw).ok()?)));
    }
    Some(Elf::Static)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        crate::config::parse_bytes("t.conf", text.as_bytes()).expect("valid")
    }

    /// A directory of its own under the temp dir for one test.
    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("rstunnel-sandbox-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn executable(path: &Path, text: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// `/bin/sh` is a dynamically linked ELF file on every system the tests run on: its
    /// loader is found and is an existing file.
    #[test]
    fn the_dynamic_loader_of_a_program_is_found() {
        let sh = Path::new("/bin/sh").canonicalize().unwrap();
        let (next, problem) = interpreters(&sh);
        assert_eq!(problem, None);
        assert_eq!(next.len(), 1, "{next:?}");
        assert!(next[0].is_absolute() && next[0].exists(), "{next:?}");
        assert_eq!(elf_interp(b"\x7fELF\x01\x01"), Elf::Unparsed);
        assert_eq!(elf_interp(b"#!/bin/sh\n"), Elf::Other);
    }

    /// An ELF header with one `PT_INTERP` program header naming `/lib/ld.so.1`, in the
    /// layout of `wide` (64-bit) or not, and `big`-endian or not.
    fn elf_with_interp(wide: bool, big: bool) -> Vec<u8> {
        let put = |buf: &mut Vec<u8>, at: usize, size: usize, v: u64| {
            for i in 0..size {
                let shift = 8 * if big { size - 1 - i } else { i };
                buf[at + i] = (v >> shift) as u8;
            }
        };
        let mut head = vec![0u8; 256];
        head[..6].copy_from_slice(&[0x7f, b'E', b'L', b'F', 1 + wide as u8, 1 + big as u8]);
        let (phoff, phentsize) = if wide { (64, 56) } else { (52, 32) };
        let interp = b"/lib/ld.so.1\0";
        let at = 160;
        head[at..at + interp.len()].copy_from_slice(interp);
        if wide {
            put(&mut head, 0x20, 8, phoff);
            put(&mut head, 0x36, 2, phentsize);
            put(&mut head, 0x38, 2, 1);
            put(&mut head, 64, 4, 3);
            put(&mut head, 64 + 8, 8, at as u64);
            put(&mut head, 64 + 32, 8, interp.len() as u64);
        } else {
            put(&mut head, 0x1c, 4, phoff);
            put(&mut head, 0x2a, 2, phentsize);
            put(&mut head, 0x2c, 2, 1);
            put(&mut head, 52, 4, 3);
            put(&mut head, 52 + 4, 4, at as u64);
            put(&mut head, 52 + 16, 4, interp.len() as u64);
        }
        head
    }

    /// 32-bit and big-endian programs get their loader too (armhf, i386 multiarch, s390x).
    #[test]
    fn every_elf_layout_names_its_loader() {
        for wide in [false, true] {
            for big in [false, true] {
                assert_eq!(
                    elf_interp(&elf_with_interp(wide, big)),
                    Elf::Interp(PathBuf::from("/lib/ld.so.1")),
                    "wide {wide}, big {big}"
                );
            }
        }
        // Program headers beyond what was read: said at startup, not silently denied.
        let mut cut = elf_with_interp(true, false);
        cut.truncate(100);
        assert_eq!(elf_interp(&cut), Elf::Unparsed);
        let dir = scratch("elf");
        let file = dir.join("cut");
        std::fs::write(&file, &cut).unwrap();
        let (next, problem) = interpreters(&file);
        assert!(next.is_empty());
        assert!(problem
            .unwrap()
            .contains("dynamic loader could not be read"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_script_names_its_interpreter() {
        let dir = scratch("script");
        let script = dir.join("s.sh");
        executable(&script, "#!/bin/sh -e\necho hi\n");
        assert_eq!(
            interpreters(&script),
            (vec![PathBuf::from("/bin/sh")], None)
        );
        let chain = program_chain(&script);
        // The script, the shell, and the shell's loader.
        assert_eq!(chain.files.len(), 3, "{chain:?}");
        assert_eq!(chain.files[1], PathBuf::from("/bin/sh"));
        assert!(chain.problems.is_empty(), "{chain:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `#!/usr/bin/env NAME`: NAME is found on PATH, as env finds it, and allowed with
    /// its own loader; a NAME env cannot find is a startup warning naming the service.
    #[test]
    fn an_env_script_gets_the_program_env_runs() {
        let dir = scratch("env");
        let script = dir.join("s");
        executable(&script, "#!/usr/bin/env -S sh -e\necho hi\n");
        let sh = find_program(Path::new("sh")).expect("sh on PATH");
        let chain = program_chain(&script);
        assert!(
            chain.files.contains(&PathBuf::from("/usr/bin/env")),
            "{chain:?}"
        );
        assert!(chain.files.contains(&sh), "{chain:?}");
        // script, env, sh, and the loader (shared by env and sh).
        assert!(chain.files.len() >= 4, "{chain:?}");
        assert!(chain.problems.is_empty(), "{chain:?}");

        let missing = dir.join("m");
        executable(&missing, "#!/usr/bin/env rstunnel-no-such-interpreter\n");
        let text = format!(
            "client = yes\n[s]\naccept = 1\nexec = {}\n",
            missing.display()
        );
        let plan = plan(&config(&text), None);
        assert!(
            plan.warnings.iter().any(|w| w.starts_with("Service [s]: ")
                && w.contains("rstunnel-no-such-interpreter, which is not found on PATH")),
            "{:?}",
            plan.warnings
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `exec = sh` is found on PATH as `Command` finds it: granted, and the reload check
    /// accepts the configuration that started; a name not on PATH is a warning.
    #[test]
    fn a_bare_program_name_is_looked_up_on_path() {
        let start = config("client = yes\n[s]\naccept = 1\nexec = sh\n");
        let plan = plan(&start, None);
        let sh = find_program(Path::new("sh"))
            .unwrap()
            .canonicalize()
            .unwrap();
        assert!(
            plan.grants
                .iter()
                .any(|g| g.path == sh && g.right == Right::Exec),
            "{plan:?}"
        );
        assert_eq!(check(&plan, &start, None), Ok(()));
        assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
        let lost = config("client = yes\n[s]\naccept = 1\nexec = rstunnel-no-such-program\n");
        let warnings = super::plan(&lost, None).warnings;
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("exec rstunnel-no-such-program is not found on PATH")),
            "{warnings:?}"
        );
    }

    /// The C library's lookup files are allowed through their directories, so a file
    /// replaced by rename (`/etc/passwd` by useradd) stays readable.
    #[test]
    fn lookup_files_are_allowed_through_their_directories() {
        let plan = plan(
            &config("client = yes\n[s]\naccept = 1\nconnect = 2\n"),
            None,
        );
        assert!(plan
            .grants
            .iter()
            .any(|g| g.path == Path::new("/etc") && g.right == Right::Read));
        for file in SYSTEM_FILES {
            let Ok(target) = Path::new(file).canonicalize() else {
                continue;
            };
            let dir = target.parent().unwrap();
            assert!(
                plan.grants
                    .iter()
                    .any(|g| g.right == Right::Read && dir.starts_with(&g.path)),
                "{file}: {dir:?} not granted"
            );
        }
        // An execArgs file likewise: its directory is granted, not its inode.
        let dir = scratch("args");
        let data = dir.join("data.txt");
        std::fs::write(&data, "x").unwrap();
        let text = format!(
            "client = yes\n[s]\naccept = 1\nexec = /bin/sh\nexecArgs = sh {}\n",
            data.display()
        );
        let plan = super::plan(&config(&text), None);
        let canon = dir.canonicalize().unwrap();
        assert!(plan
            .grants
            .iter()
            .any(|g| g.path == canon && g.right == Right::Read));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// What a reload adds beyond the startup's ruleset is refused by name: `pty = yes`, a
    /// new execArgs file elsewhere, a changed `#!` line, a new CApath link target.
    #[test]
    fn a_reload_adding_devices_files_or_interpreters_is_refused() {
        let dir = scratch("reload");
        let other = scratch("reload-other");
        let script = dir.join("prog");
        executable(&script, "#!/bin/sh\necho hi\n");
        let capath = dir.join("ca");
        std::fs::create_dir(&capath).unwrap();
        let text = |extra: &str| {
            format!(
                "[s]\naccept = 1\ncert = {d}/c.pem\nCApath = {d}/ca\nexec = {}\n{extra}",
                script.display(),
                d = dir.display()
            )
        };
        let start = config(&text(""));
        let plan = plan(&start, None);
        assert_eq!(check(&plan, &start, None), Ok(()));

        let err = check(&plan, &config(&text("pty = yes\n")), None).unwrap_err();
        assert_eq!(
            (err.what, err.path.as_path()),
            ("pty device", Path::new("/dev/ptmx"))
        );

        let far = other.join("data");
        std::fs::write(&far, "x").unwrap();
        let args = format!("execArgs = prog {}\n", far.display());
        let err = check(&plan, &config(&text(&args)), None).unwrap_err();
        assert_eq!((err.what, &err.path), ("execArgs file", &far));

        std::fs::write(other.join("root.pem"), "x").unwrap();
        std::os::unix::fs::symlink(other.join("root.pem"), capath.join("abcd.0")).unwrap();
        let err = check(&plan, &start, None).unwrap_err();
        assert_eq!(
            (err.what, err.path),
            ("CApath", other.canonicalize().unwrap())
        );
        std::fs::remove_file(capath.join("abcd.0")).unwrap();

        let cat = Path::new("/bin/cat").canonicalize().unwrap();
        executable(&script, &format!("#!{}\n", cat.display()));
        let err = check(&plan, &start, None).unwrap_err();
        assert_eq!((err.what, err.path), ("interpreter", cat));
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&other).unwrap();
    }

    /// The startup line says what an older kernel leaves open, by ABI, and whether
    /// no-new-privileges is set as the kernel reported it.
    #[test]
    fn a_partial_ruleset_says_what_is_missing() {
        assert_eq!(
            unenforced(1),
            [
                "truncating files is not restricted",
                "device ioctls are not restricted",
                "signals are not scoped"
            ]
        );
        assert_eq!(unenforced(2), unenforced(1));
        assert_eq!(
            unenforced(3),
            ["device ioctls are not restricted", "signals are not scoped"]
        );
        assert_eq!(unenforced(4), unenforced(3));
        assert_eq!(unenforced(5), ["signals are not scoped"]);
        assert!(unenforced(6).is_empty() && unenforced(7).is_empty());
        let line = |abi, partial, no_new_privs| {
            Outcome::Applied {
                abi,
                partial,
                no_new_privs,
                plan: Plan::default(),
            }
            .to_string()
        };
        assert_eq!(
            line(5, true, true),
            "Sandbox: Landlock ABI 5 (partly enforced: signals are not scoped), 0 path(s) readable, 0 executable, 0 writable, no new privileges"
        );
        assert!(line(7, false, true).starts_with("Sandbox: Landlock ABI 7, 0 path(s)"));
        assert!(line(7, false, false).ends_with("no-new-privileges NOT set"));
    }

    /// A log in /tmp makes /tmp writable: said at startup, with the way out.
    #[test]
    fn a_grant_on_a_shared_tree_is_warned_about() {
        let plan = plan(
            &config("output = /tmp/rstunnel-t.log\nclient = yes\n[s]\naccept = 1\nconnect = 2\n"),
            None,
        );
        let tmp = Path::new("/tmp").canonicalize().unwrap();
        assert!(
            plan.warnings.iter().any(|w| w.contains(&format!(
                "output makes {} writable with everything beneath it",
                tmp.display()
            )) && w.contains("/var/log/rstunnel/")),
            "{:?}",
            plan.warnings
        );
        let quiet = super::plan(
            &config("client = yes\n[s]\naccept = 1\nconnect = 2\n"),
            None,
        );
        assert!(quiet.warnings.is_empty(), "{:?}", quiet.warnings);
    }

    /// An include directory beyond the ruleset fails the reload's load: named as outside
    /// the sandbox; a failure the sandbox did not cause keeps its own message.
    #[test]
    fn a_load_failure_beyond_the_ruleset_is_named() {
        let dir = scratch("load");
        let other = scratch("load-other");
        let source = dir.join("t.conf");
        std::fs::write(&source, "[s]\naccept = 1\nconnect = 2\n").unwrap();
        let plan = plan(
            &config("client = yes\n[s]\naccept = 1\nconnect = 2\n"),
            Some(&source),
        );
        let include = |dir: &Path| ConfigError::Line {
            file: "t.conf".into(),
            line: 1,
            raw: format!("include = {}", dir.display()),
            error: LineError::Include,
        };
        let outside = refused_load(&plan, &include(&other), &source).unwrap();
        assert_eq!((outside.what, &outside.path), ("include directory", &other));
        assert_eq!(refused_load(&plan, &include(&dir), &source), None);
        assert_eq!(
            refused_load(&plan, &include(&other.join("absent")), &source),
            None
        );
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&other).unwrap();
    }

    /// The paths a configuration names become grants, and the reload check accepts the
    /// same configuration and refuses a certificate in another directory.
    #[test]
    fn a_reload_may_use_only_what_the_startup_allowed() {
        let dir = std::env::temp_dir().join(format!("rstunnel-sandbox-c{}", std::process::id()));
        let other = dir.join("elsewhere");
        std::fs::create_dir_all(&other).unwrap();
        let (cert, moved) = (dir.join("a.pem"), other.join("b.pem"));
        std::fs::write(&cert, "x").unwrap();
        std::fs::write(&moved, "x").unwrap();
        let text = |c: &Path| {
            format!(
                "output = {}/log\n[s]\naccept = 1\nconnect = 2\ncert = {}\n",
                dir.display(),
                c.display()
            )
        };
        let start = config(&text(&cert));
        let plan = plan(&start, None);
        let canon = dir.canonicalize().unwrap();
        assert!(plan
            .grants
            .iter()
            .any(|g| g.path == canon && g.right == Right::Read));
        assert!(plan
            .grants
            .iter()
            .any(|g| g.path == canon && g.right == Right::Log));
        assert_eq!(check(&plan, &start, None), Ok(()));
        // Beneath an allowed directory is allowed (Landlock rules cover the hierarchy)…
        assert_eq!(check(&plan, &config(&text(&moved)), None), Ok(()));
        // …a sibling directory is not.
        let outside =
            std::env::temp_dir().join(format!("rstunnel-sandbox-o{}", std::process::id()));
        std::fs::create_dir_all(&outside).unwrap();
        let far = outside.join("c.pem");
        std::fs::write(&far, "x").unwrap();
        let err = check(&plan, &config(&text(&far)), None).unwrap_err();
        assert_eq!(err.what, "cert");
        assert!(err.to_string().contains("outside what the sandbox allowed"));
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&outside).unwrap();
    }

    /// An exec program is allowed by its exact file, not its directory.
    #[test]
    fn only_the_configured_program_is_executable() {
        let start = config("client = yes\n[s]\naccept = 1\nexec = /bin/cat\n");
        let plan = plan(&start, None);
        assert!(check(&plan, &start, None).is_ok());
        let other = config("client = yes\n[s]\naccept = 1\nexec = /bin/ls\n");
        let err = check(&plan, &other, None).unwrap_err();
        assert_eq!(err.what, "exec");
    }
}
