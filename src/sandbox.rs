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
//!   symlinks point into (OpenSSL reads those during handshakes); the files the C library
//!   reads for name, service, user and group lookups (`/etc/hosts`, `/etc/resolv.conf`,
//!   `/etc/nsswitch.conf`, `/etc/passwd`, …) and the library directories (NSS modules,
//!   and the libraries of `exec` programs); `/proc/self`;
//! * execute (and read): each `exec` program, the interpreter its `#!` line or its ELF
//!   header names (the dynamic loader), and nothing else; an absolute `execArgs` word that
//!   names an existing file is readable (a script given to a shell);
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

use crate::config::Config;

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

    /// A file the configuration names for reading: its directory, as written and after
    /// resolving symlinks (a renewed certificate appears there under a new inode).
    fn file_and_directory(&mut self, file: &Path, why: &'static str) {
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            self.grant(dir, Right::Read, why);
        } else {
            self.grant(Path::new("."), Right::Read, why);
        }
        if let Some(dir) = file.canonicalize().ok().as_deref().and_then(Path::parent) {
            self.grant(dir, Right::Read, why);
        }
    }

    /// A directory OpenSSL or the parser reads entries of: the directory, and where its
    /// symlinks lead (`/etc/ssl/certs` links into `/usr/share/ca-certificates`).
    fn directory_and_links(&mut self, dir: &Path, why: &'static str) {
        self.grant(dir, Right::Read, why);
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            if !entry.file_type().is_ok_and(|t| t.is_symlink()) {
                continue;
            }
            match entry.path().canonicalize() {
                Ok(target) if target.is_dir() => self.grant(&target, Right::Read, why),
                Ok(target) => {
                    if let Some(parent) = target.parent() {
                        self.grant(parent, Right::Read, why);
                    }
                }
                Err(_) => {}
            }
        }
    }

    /// An `exec` program: it, and the interpreter it needs, which the kernel opens for
    /// execution too (a `#!` line's program, an ELF file's dynamic loader), in turn.
    fn program(&mut self, program: &Path) {
        let mut next = Some(program.to_path_buf());
        for _ in 0..4 {
            let Some(path) = next.take() else { break };
            self.grant(&path, Right::Exec, "exec program");
            next = interpreter(&path);
        }
    }
}

/// What a configuration needs reachable, as the reload check sees it: one entry per path
/// the configuration names (the fixed system paths are not listed).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Need {
    path: PathBuf,
    right: Right,
    what: &'static str,
}

fn needs(config: &Config, source: Option<&Path>) -> Vec<Need> {
    let mut out = Vec::new();
    let mut add = |path: &Path, right, what| {
        out.push(Need {
            path: path.to_path_buf(),
            right,
            what,
        })
    };
    if let Some(file) = source {
        add(file, Right::Read, "configuration file");
    }
    for dir in &config.includes {
        add(dir, Right::Read, "include directory");
    }
    if let Some(output) = &config.global.output {
        add(&directory_of(output), Right::Log, "output");
    }
    if let Some(pid) = &config.global.pid {
        add(&directory_of(pid), Right::Remove, "pid");
    }
    for s in std::iter::once(&config.defaults).chain(&config.services) {
        let files = [
            (&s.tls.cert, "cert"),
            (&s.tls.key, "key"),
            (&s.tls.ca_file, "CAfile"),
            (&s.tls.crl_file, "CRLfile"),
            (&s.tls.psk_secrets, "PSKsecrets"),
            (&s.tls.ca_path, "CApath"),
            (&s.tls.crl_path, "CRLpath"),
        ];
        for (path, what) in files {
            if let Some(path) = path {
                add(path, Right::Read, what);
            }
        }
        if let Some(program) = &s.exec {
            add(program, Right::Exec, "exec");
        }
        for socket in s.accept.iter().filter(|a| a.starts_with('/')) {
            add(&directory_of(Path::new(socket)), Right::Socket, "accept");
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
/// configuration.
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
        match (need.right, need.what) {
            (Right::Read, "CApath" | "CRLpath" | "include directory") => {
                plan.directory_and_links(&need.path, need.what)
            }
            (Right::Read, what) => plan.file_and_directory(&need.path, what),
            (Right::Exec, _) => plan.program(&need.path),
            (right, what) => plan.grant(&need.path, right, what),
        }
    }
    for s in std::iter::once(&config.defaults).chain(&config.services) {
        if s.exec.is_some() {
            for word in s.exec_args.iter().skip(1).filter(|w| w.starts_with('/')) {
                if Path::new(word).is_file() {
                    plan.grant(Path::new(word), Right::Read, "execArgs file");
                }
            }
        }
    }
    for file in SYSTEM_FILES {
        plan.grant(Path::new(file), Right::Read, "C library lookups");
        // A file a daemon keeps under /run (resolv.conf → /run/systemd/resolve/…) is
        // replaced by rename, which a rule on the old inode would not follow: allow the
        // directory it lives in. Files in /etc get a rule of their own only.
        if let Ok(target) = Path::new(file).canonicalize() {
            if target.starts_with("/run") || target.starts_with("/var/run") {
                if let Some(dir) = target.parent() {
                    plan.grant(dir, Right::Read, "C library lookups");
                }
            }
        }
    }
    for dir in LIBRARY_DIRS {
        plan.grant(Path::new(dir), Right::Read, "libraries");
    }
    plan.grant(Path::new("/proc/self"), Right::Read, "own /proc entries");
    plan.grant(Path::new("/dev/null"), Right::Device, "/dev/null");
    plan.grant(Path::new("/dev/urandom"), Right::Read, "random numbers");
    if config.services.iter().any(|s| s.exec.is_some() && s.pty) {
        for dev in ["/dev/ptmx", "/dev/pts", "/dev/tty"] {
            plan.grant(Path::new(dev), Right::Device, "pty = yes");
        }
    }
    plan
}

/// What `apply` did, for the startup log line and the reload check.
#[derive(Debug)]
pub enum Outcome {
    /// `sandbox = no`.
    Off,
    /// The ruleset is in force; `partial` when the kernel enforces only part of it.
    Applied { abi: i32, partial: bool, plan: Plan },
    /// The kernel has no Landlock (or it is disabled); only no-new-privileges applied.
    Unsupported { reason: String, no_new_privs: bool },
    /// Building or applying the ruleset failed; the process runs unrestricted.
    Failed(String),
}

impl Outcome {
    /// The grants in force, if any (`None`: nothing restricts the files).
    pub fn enforced(&self) -> Option<&Plan> {
        match self {
            Outcome::Applied { plan, .. } => Some(plan),
            _ => None,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Off => write!(f, "Sandbox: off (sandbox = no)"),
            Outcome::Applied { abi, partial, plan } => {
                let count = |r: Right| plan.grants.iter().filter(|g| g.right == r).count();
                write!(
                    f,
                    "Sandbox: Landlock ABI {abi}{}, {} path(s) readable, {} executable, {} writable, no new privileges",
                    if *partial { " (partly enforced)" } else { "" },
                    count(Right::Read),
                    count(Right::Exec),
                    count(Right::Log) + count(Right::Remove) + count(Right::Socket) + count(Right::Device),
                )
            }
            Outcome::Unsupported {
                reason,
                no_new_privs,
            } => write!(
                f,
                "Sandbox: files are not restricted ({reason}){}",
                if *no_new_privs {
                    "; no new privileges"
                } else {
                    ""
                }
            ),
            Outcome::Failed(e) => write!(f, "Sandbox: not applied: {e}"),
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
        Ok(status) => match status.ruleset {
            RulesetStatus::NotEnforced => Outcome::Unsupported {
                reason: format!("Landlock ABI {abi} enforced nothing"),
                no_new_privs: status.no_new_privs,
            },
            RulesetStatus::PartiallyEnforced => Outcome::Applied {
                abi,
                partial: true,
                plan,
            },
            RulesetStatus::FullyEnforced => Outcome::Applied {
                abi,
                partial: false,
                plan,
            },
        },
        Err(e) => {
            set_no_new_privs();
            Outcome::Failed(e.to_string())
        }
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
    unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 }
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

/// Checks that every path `config` names is reachable under `plan` with the right it
/// needs: the reload check, so that a new path fails the reload with this message rather
/// than a bare "Permission denied" from deep inside OpenSSL, or later in a session.
pub fn check(plan: &Plan, config: &Config, source: Option<&Path>) -> Result<(), OutsideSandbox> {
    // `pid` is not applied again by a reload (docs/ARCHITECTURE.md, Reload): not judged.
    for need in needs(config, source)
        .into_iter()
        .filter(|n| n.what != "pid")
    {
        // Landlock judges the inode a name resolves to: judge the canonical path.
        let path = need.path.canonicalize().unwrap_or(need.path.clone());
        let allowed = plan.grants.iter().any(|g| {
            g.right.covers(need.right)
                && if need.right == Right::Exec {
                    g.path == path
                } else {
                    path.starts_with(&g.path)
                }
        });
        if !allowed {
            return Err(OutsideSandbox {
                what: need.what,
                path: need.path,
            });
        }
    }
    Ok(())
}

/// The interpreter the kernel opens to run `path`: a `#!` line's program, or the ELF
/// `PT_INTERP` (the dynamic loader). `None` for a static binary or an unreadable file.
fn interpreter(path: &Path) -> Option<PathBuf> {
    let mut head = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(64 * 1024)
        .read_to_end(&mut head)
        .ok()?;
    if let Some(line) = head.strip_prefix(b"#!") {
        let line = line.split(|&b| b == b'\n').next()?;
        let text = std::str::from_utf8(line).ok()?;
        return text.split_whitespace().next().map(PathBuf::from);
    }
    elf_interp(&head)
}

/// `PT_INTERP` of a 64-bit little-endian ELF file's first bytes (the only kind this
/// program runs on in practice; anything else yields `None` and the loader stays denied).
fn elf_interp(head: &[u8]) -> Option<PathBuf> {
    const PT_INTERP: u32 = 3;
    if head.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let u16_at = |o: usize| Some(u16::from_le_bytes(head.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(head.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(head.get(o..o + 8)?.try_into().ok()?));
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    for i in 0..phnum {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        if u32_at(ph)? != PT_INTERP {
            continue;
        }
        let offset = usize::try_from(u64_at(ph + 8)?).ok()?;
        let size = usize::try_from(u64_at(ph + 32)?).ok()?;
        let raw = head.get(offset..offset.checked_add(size)?)?;
        let raw = raw.split(|&b| b == 0).next()?;
        return Some(PathBuf::from(std::str::from_utf8(raw).ok()?));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        crate::config::parse_bytes("t.conf", text.as_bytes()).expect("valid")
    }

    /// `/bin/sh` is a dynamically linked ELF file on every system the tests run on: its
    /// loader is found and is an existing file.
    #[test]
    fn the_dynamic_loader_of_a_program_is_found() {
        let sh = Path::new("/bin/sh").canonicalize().unwrap();
        let loader = interpreter(&sh).expect("a PT_INTERP");
        assert!(loader.is_absolute() && loader.exists(), "{loader:?}");
        assert!(elf_interp(b"\x7fELF\x01\x01").is_none());
        assert!(elf_interp(b"#!/bin/sh\n").is_none());
    }

    #[test]
    fn a_script_names_its_interpreter() {
        let dir = std::env::temp_dir().join(format!("rstunnel-sandbox-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("s.sh");
        std::fs::write(&script, "#!/bin/sh -e\necho hi\n").unwrap();
        assert_eq!(interpreter(&script), Some(PathBuf::from("/bin/sh")));
        let plan = {
            let mut p = Plan::default();
            p.program(&script);
            p
        };
        // The script, the shell, and the shell's loader.
        assert!(plan.grants.len() >= 3, "{plan:?}");
        assert!(plan.grants.iter().all(|g| g.right == Right::Exec));
        std::fs::remove_dir_all(&dir).unwrap();
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
