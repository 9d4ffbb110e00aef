//! stunnel.conf files judged against stunnel 5.68: each file of a case directory's
//! `configs/` is run verbatim through `rstunnel --check --no-files` and the result is
//! compared with the verdict the real stunnel 5.68 gave (`stunnel4_result` in the
//! directory's `SOURCES.tsv`). Two case directories:
//!
//! * `tests/compat_cases/`: files written for this repository, each for one rule of the
//!   judge (accepted, a line error, each error scope); always run, so the judging code and
//!   `--check --no-files` are tested without the corpus.
//! * the stunnel compatibility corpus (82 real-world files; data that lives beside the
//!   project, not in it, and is never copied into it): the directory named by
//!   `RSTUNNEL_COMPAT_DIR`, else `<manifest>/../shared/compat`. When neither exists the
//!   test prints one `SKIPPED compat_corpus: …` line and passes, except under `CI=true`,
//!   where the corpus is required and its absence fails the test.
//!
//! Verdicts:
//!
//! * `parse-ok`: rstunnel exits 0 with `configuration OK`.
//! * `parse-error: FILE:LINE: "text": message`: rstunnel exits 1 and its error line has the
//!   same file name (directory aside), line number, quoted text and message.
//! * `config-error: SCOPE: message [...]`: rstunnel exits 1 naming the same scope
//!   (`Service [X]`, `Global options`, `Inetd mode`) with stunnel's message (rstunnel may
//!   append `: detail`).
//!
//! Files that use an option rstunnel does not implement yet are listed in [`NOT_YET`]; for
//! them the test asserts the exact `option 'X' is not supported yet` error, so the row
//! fails (asking to be removed from the table) once the feature lands. [`NOT_YET_OTHER`]
//! does the same, by exact error text, for a limitation that is not one option (such as a
//! mode of operation); it is empty at present. [`LINKED_OPENSSL`] lists the files whose
//! right verdict depends on the linked OpenSSL (SSLv3 is gone from 4.0).
//!
//! stunnel resolves `setuid`/`setgid` names while parsing, so its harness supplied the
//! users and groups a file names (`provided_for_stunnel4_result`); `--check --no-files`
//! does not look names up (it notes them as not checked), so nothing needs supplying for
//! them here. `include` directories are read by both: as root, each file runs in a private
//! mount namespace in which missing `include` directories are created in an overlay whose
//! upper layer is a private tmpfs, and `/etc/nsswitch.conf` says `hosts: files` (as in the
//! stunnel harness, so no DNS waits). Nothing outside the test's temporary directory is
//! changed. Without root, rows that need a directory are skipped with a message and the
//! others run directly.
//!
//! The corpus is read in place and never copied into the repository.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod common;

use common::tools::linked_openssl;

/// Files that use an option rstunnel does not implement yet, and that option as it
/// appears in rstunnel's `option 'X' is not supported yet` message. When the feature
/// lands the row fails with "remove FILE from NOT_YET"; then it must match stunnel.
const NOT_YET: &[(&str, &str)] = &[];

/// Files stopped by an rstunnel limitation that is not one option: the exact error line
/// rstunnel gives (without `[!] `). Same rule as [`NOT_YET`]: the row fails with "remove
/// FILE from NOT_YET_OTHER" once the limitation goes.
const NOT_YET_OTHER: &[(&str, &str)] = &[];

/// Files whose verdict depends on the linked OpenSSL: from that (major, minor) on, rstunnel
/// must refuse the file with this `SCOPE: message` (a prefix: the running version follows)
/// instead of giving stunnel 5.68's verdict, which was recorded with OpenSSL 3.0. Before
/// that version the file is judged against stunnel as usual.
const LINKED_OPENSSL: &[(&str, (u32, u32), &str)] = &[(
    // `sslVersion = SSLv3`: OpenSSL 4.0 has no SSLv3, not even as a version bound (3.0
    // takes the bound and then has no protocol to offer in any handshake).
    "059-ssyslog-client-sample2009-sslv3.conf",
    (4, 0),
    "Service [ssyslog]: Failed to initialize TLS context: sslVersionMin = SSLv3 needs SSLv3, \
     which OpenSSL 4.0 removed; rstunnel is linked with OpenSSL 4.",
)];

/// Per-run limit; a `--check` normally takes milliseconds.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// The environment variable naming the corpus directory (with `SOURCES.tsv` and
/// `configs/`).
const CORPUS_ENV: &str = "RSTUNNEL_COMPAT_DIR";

fn is_case_dir(dir: &Path) -> bool {
    dir.join("SOURCES.tsv").is_file() && dir.join("configs").is_dir()
}

/// The corpus directory: `RSTUNNEL_COMPAT_DIR` (which must then hold the corpus: a wrong
/// value is an error, not a skip), else `<manifest>/../shared/compat` if it is there.
/// `Err` lists where it looked.
fn corpus_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os(CORPUS_ENV) {
        let dir = PathBuf::from(dir);
        assert!(
            is_case_dir(&dir),
            "{CORPUS_ENV}={} holds no stunnel.conf corpus (expected SOURCES.tsv and configs/ in it)",
            dir.display()
        );
        return Ok(dir);
    }
    let beside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/compat");
    match is_case_dir(&beside) {
        true => Ok(beside),
        false => Err(format!("${CORPUS_ENV} unset, {}", beside.display())),
    }
}

/// The hand-written cases of this repository.
fn own_cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat_cases")
}

/// One line straight to stderr: libtest captures `println!` of passing tests, and a skip
/// must be visible in `make test`'s output.
fn say(line: &str) {
    let _ = writeln!(io::stderr(), "{line}");
}

// ---------------------------------------------------------------------------------------
// SOURCES.tsv and the verdicts

struct Row {
    file: String,
    stunnel: String,
}

fn read_sources(dir: &Path) -> Vec<Row> {
    let text = fs::read_to_string(dir.join("SOURCES.tsv")).expect("read SOURCES.tsv");
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .expect("SOURCES.tsv header")
        .split('\t')
        .collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("SOURCES.tsv has no column {name:?}"))
    };
    let (file, result) = (col("file"), col("stunnel4_result"));
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert!(f.len() == header.len(), "SOURCES.tsv: bad row {l:?}");
            Row {
                file: f[file].to_string(),
                stunnel: f[result].to_string(),
            }
        })
        .collect()
}

/// A verdict, from stunnel's column or from rstunnel's output.
#[derive(Debug, Clone, PartialEq)]
enum Verdict {
    Ok,
    /// `FILE:LINE: "raw": message`, FILE reduced to its base name.
    Line {
        file: String,
        line: u32,
        raw: String,
        message: String,
    },
    /// `SCOPE: message` with SCOPE `Service [X]`, `Global options` or `Inetd mode`.
    Scoped {
        scope: String,
        message: String,
    },
    /// rstunnel failed with a last `[!]` line of no known form.
    Other(String),
}

/// Parses `PATH:LINE: "raw": message`.
fn parse_line_error(s: &str) -> Option<Verdict> {
    for (i, _) in s.match_indices(':') {
        let rest = &s[i + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || !rest[digits..].starts_with(": \"") {
            continue;
        }
        let path = &s[..i];
        let line = rest[..digits].parse().ok()?;
        let body = &rest[digits + 3..];
        let (raw, message) = match body.rfind("\": ") {
            Some(j) => (&body[..j], &body[j + 3..]),
            None => (body.strip_suffix('"').unwrap_or(body), ""),
        };
        let file = path.rsplit(['/', '\\']).next().unwrap_or(path);
        return Some(Verdict::Line {
            file: file.to_string(),
            line,
            raw: raw.to_string(),
            message: message.to_string(),
        });
    }
    None
}

/// Parses `Service [X]: msg`, `Global options: msg` or `Inetd mode: msg`.
fn parse_scoped(s: &str) -> Option<Verdict> {
    let (scope, message) = if let Some(m) = s.strip_prefix("Global options: ") {
        ("Global options".to_string(), m)
    } else if let Some(m) = s.strip_prefix("Inetd mode: ") {
        ("Inetd mode".to_string(), m)
    } else if s.starts_with("Service [") {
        let j = s.find("]: ")?;
        (s[..=j].to_string(), &s[j + 3..])
    } else {
        return None;
    };
    Some(Verdict::Scoped {
        scope,
        message: message.to_string(),
    })
}

/// stunnel's column: `parse-ok`, `parse-error: …` or `config-error: … [detected at …]`,
/// the root cause after `<=` dropped.
fn stunnel_verdict(s: &str) -> Verdict {
    if s == "parse-ok" {
        return Verdict::Ok;
    }
    if let Some(e) = s.strip_prefix("parse-error: ") {
        return parse_line_error(e).unwrap_or_else(|| panic!("unparsable verdict {s:?}"));
    }
    if let Some(e) = s.strip_prefix("config-error: ") {
        let e = e.find(" [detected at").map_or(e, |i| &e[..i]);
        let e = e.find(" <= ").map_or(e, |i| &e[..i]).trim_end();
        return parse_scoped(e).unwrap_or_else(|| panic!("unparsable verdict {s:?}"));
    }
    panic!("unknown stunnel4_result {s:?}");
}

struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn verdict(&self) -> Verdict {
        if self.code == Some(0) && self.stdout.starts_with("configuration OK") {
            return Verdict::Ok;
        }
        let errors: Vec<&str> = self
            .stderr
            .lines()
            .filter_map(|l| l.strip_prefix("[!] "))
            .collect();
        let main = match errors.split_last() {
            Some((&"Configuration failed", before)) if self.code == Some(1) => before.last(),
            _ => None,
        };
        match main {
            Some(m) => parse_line_error(m)
                .or_else(|| parse_scoped(m))
                .unwrap_or_else(|| Verdict::Other(m.to_string())),
            None => Verdict::Other(format!(
                "exit {:?} without `[!] Configuration failed` last",
                self.code
            )),
        }
    }

    fn describe(&self) -> String {
        let mut s = format!("exit {:?}", self.code);
        for l in self.stdout.lines() {
            let _ = write!(s, "\n      stdout: {l}");
        }
        for l in self.stderr.lines().filter(|l| l.starts_with("[!]")) {
            let _ = write!(s, "\n      stderr: {l}");
        }
        if !self.stderr.lines().any(|l| l.starts_with("[!]")) {
            for l in self.stderr.lines() {
                let _ = write!(s, "\n      stderr: {l}");
            }
        }
        s
    }
}

/// `None` when rstunnel's verdict matches stunnel's, else why not.
fn compare(stunnel: &Verdict, rst: &Verdict) -> Option<String> {
    match (stunnel, rst) {
        (Verdict::Ok, Verdict::Ok) => None,
        (
            Verdict::Line {
                file,
                line,
                raw,
                message,
            },
            Verdict::Line {
                file: f2,
                line: l2,
                raw: r2,
                message: m2,
            },
        ) => {
            if (file, line, raw) != (f2, l2, r2) {
                Some(format!(
                    "different line error: stunnel {file}:{line}: \"{raw}\", rstunnel {f2}:{l2}: \"{r2}\""
                ))
            } else if message != m2 {
                Some(format!(
                    "same line, different message: stunnel {message:?}, rstunnel {m2:?}"
                ))
            } else {
                None
            }
        }
        (
            Verdict::Scoped { scope, message },
            Verdict::Scoped {
                scope: s2,
                message: m2,
            },
        ) => {
            if scope != s2 {
                Some(format!(
                    "different scope: stunnel {scope:?}, rstunnel {s2:?}"
                ))
            } else if m2 != message && !m2.starts_with(&format!("{message}: ")) {
                Some(format!(
                    "same scope, different message: stunnel {message:?}, rstunnel {m2:?}"
                ))
            } else {
                None
            }
        }
        (Verdict::Ok, _) => Some("stunnel accepts the file, rstunnel rejects it".into()),
        (_, Verdict::Ok) => Some("stunnel rejects the file, rstunnel accepts it".into()),
        _ => Some("different kind of error".into()),
    }
}

fn not_yet_message(option: &str) -> String {
    format!("option '{option}' is not supported yet")
}

/// A [`NOT_YET`] or [`NOT_YET_OTHER`] entry: the error rstunnel must give for a file.
struct NotYetRule {
    table: &'static str,
    /// `option 'X' is not supported yet` (a prefix of the line error's message), or the
    /// whole scoped error line for [`NOT_YET_OTHER`]
    wanted: String,
}

impl NotYetRule {
    fn for_file(file: &str) -> Option<NotYetRule> {
        if let Some(&(_, option)) = NOT_YET.iter().find(|(f, _)| *f == file) {
            return Some(NotYetRule {
                table: "NOT_YET",
                wanted: not_yet_message(option),
            });
        }
        let &(_, error) = NOT_YET_OTHER.iter().find(|(f, _)| *f == file)?;
        Some(NotYetRule {
            table: "NOT_YET_OTHER",
            wanted: error.to_string(),
        })
    }

    fn holds_for(&self, got: &Verdict) -> bool {
        match (self.table, got) {
            ("NOT_YET", Verdict::Line { message, .. }) => message.starts_with(&self.wanted),
            ("NOT_YET_OTHER", Verdict::Scoped { scope, message }) => {
                format!("{scope}: {message}") == self.wanted
            }
            ("NOT_YET_OTHER", Verdict::Other(m)) => *m == self.wanted,
            _ => false,
        }
    }
}

fn says_not_yet(v: &Verdict) -> bool {
    match v {
        Verdict::Line { message, .. } | Verdict::Scoped { message, .. } => {
            message.contains("is not supported yet")
        }
        Verdict::Other(m) => m.contains("is not supported yet"),
        Verdict::Ok => false,
    }
}

// ---------------------------------------------------------------------------------------
// What a file needs from the system, and the private environment that supplies it

#[derive(Default)]
struct Needs {
    /// absolute `include` directories that do not exist
    dirs: Vec<PathBuf>,
}

impl Needs {
    fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    fn describe(&self) -> String {
        let parts: Vec<String> = self
            .dirs
            .iter()
            .map(|d| format!("dir:{}", d.display()))
            .collect();
        parts.join(" ")
    }
}

/// Reads the config with stunnel's line rules for `include` and keeps the absolute
/// directories this system lacks. (Files, users and groups of the
/// `provided_for_stunnel4_result` column need nothing: `--no-files` reads no certificate
/// and looks up no name.)
fn needs_of(config: &Path) -> Needs {
    let bytes = fs::read(config).expect("read config");
    let text = String::from_utf8_lossy(&bytes);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut dirs = BTreeSet::new();
    for line in text.split('\n') {
        let line = line.trim();
        if line.is_empty()
            || line.starts_with(['#', ';'])
            || (line.starts_with('[') && line.ends_with(']'))
        {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
        if v.is_empty() {
            continue;
        }
        if k == "include" && v.starts_with('/') {
            dirs.insert(PathBuf::from(v));
        }
    }
    Needs {
        dirs: dirs.into_iter().filter(|d| !d.exists()).collect(),
    }
}

/// One step run in the child between fork and exec. Every string is prepared before.
enum Op {
    Unshare,
    MakePrivate,
    Tmpfs(CString),
    Overlay { target: CString, options: CString },
    Bind { source: CString, target: CString },
    Mkdir(CString),
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

/// Writes the files of a private environment into `scratch` and returns the steps that
/// mount them in a new mount namespace. `Err` says why it cannot be done.
fn private_env(needs: &Needs, scratch: &Path) -> Result<Vec<Op>, String> {
    fs::create_dir_all(scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    let mut ops = vec![Op::Unshare, Op::MakePrivate];
    // Missing directories: an overlay on their nearest existing parent, with the upper
    // layer on a tmpfs mounted only in the namespace.
    for (i, dir) in needs.dirs.iter().enumerate() {
        let mut base = dir.as_path();
        while !base.exists() {
            base = base.parent().ok_or("no existing parent")?;
        }
        if base == Path::new("/") {
            return Err(format!(
                "cannot supply {}: its nearest existing parent is /",
                dir.display()
            ));
        }
        let base_str = base.to_str().ok_or("non-UTF-8 path")?;
        if base_str.contains([',', ':']) {
            return Err(format!("cannot overlay {base_str}"));
        }
        let layer = scratch.join(format!("overlay{i}"));
        fs::create_dir_all(&layer).map_err(|e| e.to_string())?;
        ops.push(Op::Tmpfs(cstr(&layer)));
        ops.push(Op::Mkdir(cstr(&layer.join("upper"))));
        ops.push(Op::Mkdir(cstr(&layer.join("work"))));
        let options = format!(
            "lowerdir={base_str},upperdir={},workdir={}",
            layer.join("upper").display(),
            layer.join("work").display()
        );
        ops.push(Op::Overlay {
            target: cstr(base),
            options: CString::new(options).unwrap(),
        });
        let mut path = base.to_path_buf();
        for part in dir.strip_prefix(base).unwrap().components() {
            path.push(part);
            ops.push(Op::Mkdir(cstr(&path)));
        }
    }
    // Name resolution from /etc/hosts only, as in the stunnel harness: unknown hosts fail
    // at once instead of waiting for DNS.
    if let Ok(text) = fs::read_to_string("/etc/nsswitch.conf") {
        let mut out: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("hosts:"))
            .map(|l| format!("{l}\n"))
            .collect();
        out.push_str("hosts: files\n");
        let copy = scratch.join("nsswitch.conf");
        fs::write(&copy, out).map_err(|e| e.to_string())?;
        ops.push(Op::Bind {
            source: cstr(&copy),
            target: cstr(Path::new("/etc/nsswitch.conf")),
        });
    }
    Ok(ops)
}

/// Runs in the forked child: only system calls, no allocation.
fn apply(ops: &[Op]) -> io::Result<()> {
    let check = |rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    let null = std::ptr::null::<libc::c_char>();
    for op in ops {
        // SAFETY: plain system calls with NUL-terminated strings owned by `ops`.
        unsafe {
            match op {
                Op::Unshare => check(libc::unshare(libc::CLONE_NEWNS))?,
                Op::MakePrivate => check(libc::mount(
                    null,
                    c"/".as_ptr(),
                    null,
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ))?,
                Op::Tmpfs(target) => check(libc::mount(
                    c"tmpfs".as_ptr(),
                    target.as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    c"mode=0755".as_ptr().cast(),
                ))?,
                Op::Overlay { target, options } => check(libc::mount(
                    c"overlay".as_ptr(),
                    target.as_ptr(),
                    c"overlay".as_ptr(),
                    0,
                    options.as_ptr().cast(),
                ))?,
                Op::Bind { source, target } => check(libc::mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    null,
                    libc::MS_BIND,
                    std::ptr::null(),
                ))?,
                Op::Mkdir(path) => check(libc::mkdir(path.as_ptr(), 0o755))?,
            }
        }
    }
    Ok(())
}

fn run_check(config: &Path, ops: Vec<Op>, scratch: &Path) -> io::Result<Outcome> {
    fs::create_dir_all(scratch)?;
    let (out, err) = (scratch.join("stdout"), scratch.join("stderr"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rstunnel"));
    cmd.arg("--check")
        .arg("--no-files")
        .arg(config)
        .current_dir(scratch)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out)?)
        .stderr(fs::File::create(&err)?);
    if !ops.is_empty() {
        // SAFETY: `apply` makes only async-signal-safe system calls.
        unsafe {
            cmd.pre_exec(move || apply(&ops));
        }
    }
    let mut child = cmd.spawn()?;
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if start.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let mut outcome = Outcome {
        code: status.and_then(|s| s.code()),
        stdout: fs::read_to_string(&out).unwrap_or_default(),
        stderr: fs::read_to_string(&err).unwrap_or_default(),
    };
    if status.is_none() {
        outcome
            .stderr
            .push_str(&format!("[!] (test) killed after {RUN_TIMEOUT:?}\n"));
    }
    Ok(outcome)
}

// ---------------------------------------------------------------------------------------
// The test

enum RowResult {
    Match,
    NotYet,
    Skipped(String),
    Mismatch(String),
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn check_row(row: &Row, corpus: &Path, scratch: &Path, root: bool) -> RowResult {
    let config = corpus.join("configs").join(&row.file);
    let expected = stunnel_verdict(&row.stunnel);
    let needs = needs_of(&config);
    // As root every file runs in a private environment (the same for all files); if that
    // cannot be set up, files that need nothing still run directly.
    let mut ops = Vec::new();
    let mut why_not = String::from("not root");
    if root {
        match private_env(&needs, scratch) {
            Ok(o) => ops = o,
            Err(e) => why_not = e,
        }
    }
    if ops.is_empty() && !needs.is_empty() {
        return RowResult::Skipped(format!(
            "needs {} ({why_not}; run the test as root to supply them in a private mount namespace)",
            needs.describe()
        ));
    }
    let outcome = match run_check(&config, ops, scratch) {
        Ok(o) => o,
        Err(e) if !needs.is_empty() => {
            return RowResult::Skipped(format!(
                "needs {}, but the private environment failed: {e}",
                needs.describe()
            ))
        }
        Err(e) if root => match run_check(&config, Vec::new(), scratch) {
            Ok(o) => o,
            Err(e2) => return RowResult::Mismatch(format!("could not run rstunnel: {e}; {e2}")),
        },
        Err(e) => return RowResult::Mismatch(format!("could not run rstunnel: {e}")),
    };
    let got = outcome.verdict();
    let report = |why: String| {
        let mut s = format!(
            "{}\n    stunnel 5.68: {}\n    problem:      {why}\n    rstunnel:     {}",
            row.file,
            row.stunnel,
            outcome.describe()
        );
        if !needs.is_empty() {
            let _ = write!(s, "\n    supplied:     {}", needs.describe());
        }
        s
    };
    let linked = LINKED_OPENSSL
        .iter()
        .find(|(file, since, _)| *file == row.file && linked_openssl() >= *since);
    if let Some((_, (major, minor), wanted)) = linked {
        return match &got {
            Verdict::Scoped { scope, message }
                if format!("{scope}: {message}").starts_with(wanted) =>
            {
                RowResult::Match
            }
            _ => RowResult::Mismatch(report(format!(
                "with OpenSSL {major}.{minor} or later rstunnel must refuse this file with \
                 \"{wanted}…\" (LINKED_OPENSSL)"
            ))),
        };
    }
    let stunnel_diff = compare(&expected, &got);
    if let Some(rule) = NotYetRule::for_file(&row.file) {
        let (table, wanted) = (rule.table, &rule.wanted);
        return if rule.holds_for(&got) {
            RowResult::NotYet
        } else if says_not_yet(&got) && stunnel_diff.is_some() {
            RowResult::Mismatch(report(format!(
                "{table} expects \"{wanted}\" for this file but rstunnel now stops at another \
                 unsupported feature: update its {table} entry"
            )))
        } else {
            RowResult::Mismatch(report(match &stunnel_diff {
                None => format!(
                    "rstunnel no longer fails with \"{wanted}\" and now matches stunnel: \
                     remove {} from {table}",
                    row.file
                ),
                Some(d) => format!(
                    "rstunnel no longer fails with \"{wanted}\": remove {} from {table}; \
                     it does not match stunnel yet: {d}",
                    row.file
                ),
            }))
        };
    }
    match stunnel_diff {
        None => RowResult::Match,
        Some(d) => {
            let hint = match says_not_yet(&got) {
                true => " (a missing feature? list the file in NOT_YET or NOT_YET_OTHER)",
                false => "",
            };
            RowResult::Mismatch(report(format!("{d}{hint}")))
        }
    }
}

/// What a case directory must contain besides the files: `NOT_YET` rows only make sense
/// for the corpus.
#[derive(Clone, Copy, PartialEq)]
enum Cases {
    Own,
    Corpus,
}

/// Judges every file of `dir` and returns the `corpus: N/M agree` line; panics with every
/// mismatch.
fn judge(dir: &Path, cases: Cases) -> String {
    let rows = read_sources(dir);

    // SOURCES.tsv and configs/ must describe the same files.
    let on_disk: BTreeSet<String> = fs::read_dir(dir.join("configs"))
        .expect("read configs/")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let listed: BTreeSet<String> = rows.iter().map(|r| r.file.clone()).collect();
    assert!(!rows.is_empty(), "SOURCES.tsv lists no files");
    assert_eq!(on_disk, listed, "configs/ and SOURCES.tsv disagree");
    assert_eq!(listed.len(), rows.len(), "SOURCES.tsv lists a file twice");
    if cases == Cases::Corpus {
        for (file, _) in NOT_YET.iter().chain(NOT_YET_OTHER) {
            assert!(
                listed.contains(*file),
                "NOT_YET names {file}, which is not in the corpus"
            );
        }
    }

    let tag = match cases {
        Cases::Own => "own",
        Cases::Corpus => "corpus",
    };
    let tmp =
        TempDir(std::env::temp_dir().join(format!("rstunnel-compat-{tag}-{}", std::process::id())));
    let _ = fs::remove_dir_all(&tmp.0);
    fs::create_dir_all(&tmp.0).expect("create temp dir");
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;

    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<RowResult>>> =
        Mutex::new((0..rows.len()).map(|_| None).collect());
    let workers = std::thread::available_parallelism()
        .map_or(4, |n| n.get())
        .clamp(1, 16);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(row) = rows.get(i) else { break };
                let scratch = tmp.0.join(&row.file);
                let r = check_row(row, dir, &scratch, root);
                results.lock().unwrap()[i] = Some(r);
            });
        }
    });
    let results: Vec<RowResult> = results
        .into_inner()
        .unwrap()
        .into_iter()
        .map(Option::unwrap)
        .collect();

    let (mut matched, mut not_yet, mut skipped, mut mismatches) = (0, 0, Vec::new(), Vec::new());
    for (row, r) in rows.iter().zip(results) {
        match r {
            RowResult::Match => matched += 1,
            RowResult::NotYet => not_yet += 1,
            RowResult::Skipped(why) => skipped.push(format!("{}: {why}", row.file)),
            RowResult::Mismatch(m) => mismatches.push(m),
        }
    }
    if cases == Cases::Corpus {
        for (file, option) in NOT_YET {
            println!("not yet supported: {file}: {}", not_yet_message(option));
        }
        for (file, error) in NOT_YET_OTHER {
            println!("not yet supported: {file}: {error}");
        }
    }
    for s in &skipped {
        say(&format!("SKIPPED {s}"));
    }
    for m in &mismatches {
        println!("MISMATCH {m}");
    }
    let skipped_note = if skipped.is_empty() {
        String::new()
    } else {
        format!(", {} skipped (need root)", skipped.len())
    };
    let summary = format!(
        "compat {tag}: {} files in {}, {matched} match stunnel 5.68, {not_yet} not yet supported (listed){skipped_note}, {} mismatches ({:.1} s)",
        rows.len(),
        dir.display(),
        mismatches.len(),
        started.elapsed().as_secs_f64()
    );
    println!("{summary}");
    assert!(
        mismatches.is_empty(),
        "{summary}\n\n{}",
        mismatches
            .iter()
            .map(|m| format!("MISMATCH {m}"))
            .collect::<Vec<_>>()
            .join("\n\n")
    );
    format!("{tag}: {matched}/{} agree with stunnel 5.68", rows.len())
}

/// This repository's own cases: always run, so the judge above and `--check --no-files`
/// are exercised without the corpus.
#[test]
fn own_cases_match_stunnel_5_68() {
    let line = judge(&own_cases_dir(), Cases::Own);
    println!("{line}");
}

/// The real-world corpus, when it is there (see the module header).
#[test]
fn corpus_matches_stunnel_5_68() {
    let corpus = match corpus_dir() {
        Ok(dir) => dir,
        Err(looked) => {
            let message = format!(
                "compat_corpus: stunnel.conf corpus not found (looked in {looked}); \
                 set {CORPUS_ENV}=<dir> to run it"
            );
            // CI has the corpus: there its absence is a broken setup, not a skip.
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true: {message}"
            );
            say(&format!("SKIPPED {message}"));
            return;
        }
    };
    // The line the README quotes, visible in `make test` and CI logs.
    say(&judge(&corpus, Cases::Corpus));
}
