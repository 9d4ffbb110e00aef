//! Applying a `Plan`: the Landlock ruleset (the file rights handled, signals scoped), the
//! kernel's Landlock ABI, no-new-privileges, and what was done (`Outcome`, its startup
//! line). Must not decide what is granted (that is `plan`) or run once other threads
//! exist.

use std::fmt;

use landlock::{
    Access, AccessFs, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
    Scope, ABI,
};

use super::grants::{Plan, Right};

/// The file rights the ruleset handles: every file right up to Landlock ABI 5 (ABI 6 and 7
/// added no file right). Rights a newer kernel adds (connecting to Unix sockets in ABI 9)
/// are deliberately not handled, so they stay allowed.
const HANDLED_ABI: ABI = ABI::V5;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
