//! The command line: `--check` (with and without `--no-files`), config errors reported as
//! stunnel does (`[!] FILE:LINE: "raw line": message`, exit 1), `-version`, a missing file.
//! Asserts exit codes and the messages users and scripts read.

mod common;

use std::path::Path;
use std::time::Duration;

use common::daemon::rstunnel_bin;
use common::tools::{run, RunResult};
use common::*;

const T: Duration = Duration::from_secs(10);

fn rstunnel(args: &[&str]) -> RunResult {
    run(&rstunnel_bin(), args, T)
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// A valid server config using `cert`.
fn valid_config(cert: &Path) -> String {
    format!(
        "foreground = yes\ndebug = 7\n[srv]\naccept = 127.0.0.1:0\nconnect = 127.0.0.1:9\ncert = {}\n",
        cert.display()
    )
}

#[test]
fn check_accepts_a_valid_config() {
    let dir = TestDir::new("check-ok");
    let pki = Pki::new(&dir);
    let conf = dir.write("ok.conf", valid_config(&pki.server.combined));
    let r = rstunnel(&["--check", path_str(&conf)]);
    assert_eq!(
        r.status.code(),
        Some(0),
        "--check of a valid config must exit 0\n{}",
        r.describe()
    );
    assert!(
        r.stdout.contains("configuration OK") || r.stderr.contains("configuration OK"),
        "--check must print `configuration OK`\n{}",
        r.describe()
    );
}

#[test]
fn check_loads_the_files_unless_no_files() {
    let dir = TestDir::new("check-files");
    let missing = dir.join("no-such-cert.pem");
    let conf = dir.write("missing-cert.conf", valid_config(&missing));

    let r = rstunnel(&["--check", path_str(&conf)]);
    assert_eq!(
        r.status.code(),
        Some(1),
        "--check must load `cert` and fail when it is missing\n{}",
        r.describe()
    );
    assert!(
        !r.stdout.contains("configuration OK") && !r.stderr.contains("configuration OK"),
        "{}",
        r.describe()
    );
    assert!(
        r.stderr.contains(path_str(&missing)),
        "the error must name the missing file {}\n{}",
        missing.display(),
        r.describe()
    );

    let r = rstunnel(&["--check", "--no-files", path_str(&conf)]);
    assert_eq!(
        r.status.code(),
        Some(0),
        "--check --no-files must not open `cert`\n{}",
        r.describe()
    );
    assert!(
        r.stdout.contains("configuration OK") || r.stderr.contains("configuration OK"),
        "{}",
        r.describe()
    );
}

/// Writes a config whose line 3 is `client = maybe`, and returns (dir, path, expected text).
fn bad_boolean_config() -> (TestDir, std::path::PathBuf, String) {
    let dir = TestDir::new("bad-bool");
    let conf = dir.write(
        "bad.conf",
        "foreground = yes\ndebug = 7\nclient = maybe\n[x]\naccept = 127.0.0.1:0\nconnect = 127.0.0.1:9\n",
    );
    let expected = format!(
        "{}:3: \"client = maybe\": The argument needs to be either 'yes' or 'no'",
        path_str(&conf)
    );
    (dir, conf, expected)
}

#[test]
fn check_reports_bad_value_with_file_and_line() {
    let (_dir, conf, expected) = bad_boolean_config();
    let r = rstunnel(&["--check", path_str(&conf)]);
    common::tools::assert_config_refused(&r, &expected);
}

#[test]
fn run_reports_bad_value_like_stunnel() {
    let (_dir, conf, expected) = bad_boolean_config();
    let r = rstunnel(&[path_str(&conf)]);
    assert_eq!(
        r.status.code(),
        Some(1),
        "a config error must exit 1 at startup\n{}",
        r.describe()
    );
    let line = format!("[!] {expected}");
    assert!(
        r.stderr.lines().any(|l| l == line),
        "stderr must have the line {line:?}\n{}",
        r.describe()
    );
}

#[test]
fn line_without_equals_is_reported() {
    let dir = TestDir::new("no-equals");
    let conf = dir.write(
        "noeq.conf",
        "foreground = yes\n  oops\n[x]\naccept = 127.0.0.1:0\nconnect = 127.0.0.1:9\n",
    );
    let r = rstunnel(&[path_str(&conf)]);
    assert_eq!(r.status.code(), Some(1), "{}", r.describe());
    // The quoted raw line keeps its leading blanks.
    let line = format!("[!] {}:2: \"  oops\": No '=' found", path_str(&conf));
    assert!(
        r.stderr.lines().any(|l| l == line),
        "stderr must have the line {line:?}\n{}",
        r.describe()
    );
}

#[test]
fn unknown_option_is_reported() {
    let dir = TestDir::new("unknown-opt");
    let conf = dir.write(
        "unknown.conf",
        "foreground = yes\n[x]\naccept = 127.0.0.1:0\nfrobnicate = 1\n",
    );
    let r = rstunnel(&[path_str(&conf)]);
    assert_eq!(r.status.code(), Some(1), "{}", r.describe());
    let line = format!(
        "[!] {}:4: \"frobnicate = 1\": Specified option name is not valid here",
        path_str(&conf)
    );
    assert!(
        r.stderr.lines().any(|l| l == line),
        "stderr must have the line {line:?}\n{}",
        r.describe()
    );
}

#[test]
fn missing_config_file_exits_1() {
    let dir = TestDir::new("missing-conf");
    let r = rstunnel(&[path_str(&dir.join("nope.conf"))]);
    assert_eq!(
        r.status.code(),
        Some(1),
        "a missing config file must exit 1\n{}",
        r.describe()
    );
    assert!(
        r.stderr.contains("nope.conf"),
        "the error must name the file\n{}",
        r.describe()
    );
}

#[test]
fn version_exits_0() {
    let r = rstunnel(&["-version"]);
    assert_eq!(
        r.status.code(),
        Some(0),
        "-version must exit 0\n{}",
        r.describe()
    );
    assert!(
        !(r.stdout.trim().is_empty() && r.stderr.trim().is_empty()),
        "-version printed nothing"
    );
}

/// A user and a group that exist on no host, in the global part (the process identity)
/// and in a section (the owner of a Unix accept socket).
fn foreign_names_config(dir: &TestDir, cert: &Path) -> std::path::PathBuf {
    dir.write(
        "foreign.conf",
        format!(
            "foreground = yes\n\
             setuid = rstunnel-no-such-user\n\
             setgid = rstunnel-no-such-group\n\
             [srv]\n\
             accept = {}\n\
             connect = 127.0.0.1:9\n\
             cert = {}\n\
             setuid = 0\n\
             setgid = rstunnel-no-such-group\n",
            dir.join("srv.sock").display(),
            cert.display()
        ),
    )
}

/// Without `--no-files` user and group names are looked up as stunnel does: an unknown
/// one is `Illegal UID` on its line.
#[test]
fn check_looks_up_setuid_names_on_this_host() {
    let dir = TestDir::new("check-names");
    let pki = Pki::new(&dir);
    let conf = foreign_names_config(&dir, &pki.server.combined);
    let r = rstunnel(&["--check", path_str(&conf)]);
    assert_eq!(r.status.code(), Some(1), "{}", r.describe());
    let expected = format!(
        "[!] {}:2: \"setuid = rstunnel-no-such-user\": Illegal UID",
        path_str(&conf)
    );
    assert!(
        r.stderr.lines().any(|l| l == expected),
        "stderr must have {expected:?}\n{}",
        r.describe()
    );
    assert!(!r.stdout.contains("configuration OK"), "{}", r.describe());
}

/// `--check --no-files` checks a config away from its host: names are host state like
/// files, so each is reported as not checked (one `note:` line with file and line) and the
/// check passes; a numeric id needs no lookup and gets no note.
#[test]
fn check_no_files_notes_setuid_names_instead_of_looking_them_up() {
    let dir = TestDir::new("check-names-no-files");
    let conf = foreign_names_config(&dir, &dir.join("no-such-cert.pem"));
    let r = rstunnel(&["--check", "--no-files", path_str(&conf)]);
    assert_eq!(r.status.code(), Some(0), "{}", r.describe());
    assert!(
        r.stdout.starts_with("configuration OK: 1 service(s) in "),
        "{}",
        r.describe()
    );
    let p = path_str(&conf);
    let expected = vec![
        format!(
            "note: {p}:2: \"setuid = rstunnel-no-such-user\": user 'rstunnel-no-such-user' \
             not checked: not looked up on this host"
        ),
        format!(
            "note: {p}:3: \"setgid = rstunnel-no-such-group\": group 'rstunnel-no-such-group' \
             not checked: not looked up on this host"
        ),
        format!(
            "note: {p}:9: \"setgid = rstunnel-no-such-group\": group 'rstunnel-no-such-group' \
             not checked: not looked up on this host"
        ),
    ];
    let notes: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("note: "))
        .collect();
    assert_eq!(notes, expected, "{}", r.describe());
    assert!(!r.stderr.contains("Illegal"), "{}", r.describe());

    // The other errors of the file are still found.
    let bad = dir.write(
        "foreign-bad.conf",
        "setuid = rstunnel-no-such-user\nclient = maybe\n[x]\naccept = 1\nconnect = 2\n",
    );
    let r = rstunnel(&["--check", "--no-files", path_str(&bad)]);
    assert_eq!(r.status.code(), Some(1), "{}", r.describe());
    assert!(
        r.stderr.contains(&format!(
            "{}:2: \"client = maybe\": The argument needs to be either 'yes' or 'no'",
            path_str(&bad)
        )),
        "{}",
        r.describe()
    );
}
