//! What a configuration needs of the file system under `sandbox = yes`: the paths it names,
//! how far each reaches on disk (`Reach`), the C library's files and directories, turned
//! into the `Plan` at startup (`plan`), and the reload check of a new configuration against
//! the plan in force (`check`, `refused_load`, `OutsideSandbox`). Must not apply anything
//! (that is `ruleset`) or open the files it judges.

use std::fmt;
use std::path::{Path, PathBuf};

use super::grants::{Grant, Plan, Right};
use super::programs::program_chain;
use crate::config::error::LineError;
use crate::config::{Config, ConfigError};

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
    // The status socket's file is removed at exit, and a reload may bind a new one.
    if let Some(crate::config::types::StatusAddress::Unix(socket)) = &config.global.status {
        add(&directory_of(socket), Right::Socket, "status", Reach::Exact);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::testing::{config, executable, scratch};

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

    /// A Unix status socket's directory may have sockets made and removed in it, as an
    /// accept socket's may: the file goes at exit, and a reload may bind a new one.
    #[test]
    fn the_status_sockets_directory_is_granted() {
        let dir = scratch("status");
        let text = format!(
            "status = {}\nclient = yes\n[s]\naccept = 1\nconnect = 2\n",
            dir.join("status.sock").display()
        );
        let plan = plan(&config(&text), None);
        let canon = dir.canonicalize().unwrap();
        assert!(plan
            .grants
            .iter()
            .any(|g| g.path == canon && g.right == Right::Socket));
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
