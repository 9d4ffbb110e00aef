//! Where log lines go: the `output` file (`log = append` keeps what was there,
//! `log = overwrite` truncates it), SIGUSR1 reopening it after a rotation, and syslog with
//! the configured ident and facility.
//!
//! The syslog test runs the binary in a private mount namespace whose `/dev/log` leads to a
//! datagram socket the test owns, so nothing reaches (or needs) the machine's syslog daemon.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::{parse_log_line, rstunnel_bin};
use common::process::*;
use common::*;

const WAIT: Duration = Duration::from_secs(10);

/// A server tunnel whose global part also has `global` (output/log options).
fn start_with(dir: &TestDir, label: &str, global: &str, pki: &Pki, backend: &Backend) -> Tunnel {
    let body = format!(
        "{global}\n{}",
        server_body(backend.addr(), &pki.server.combined, "")
    );
    Tunnel::start(dir, label, &body)
}

/// One TLS session through `t` (echo backend); waits for its `Connection closed` line in
/// the captured stderr log (the nth such line).
fn one_session(t: &Tunnel, pki: &Pki, nth: usize) {
    let mut s = tls_connect(t.addr("srv"), &pki.ca_file)
        .unwrap_or_else(|e| t.fail(&format!("TLS session failed: {e:?}")));
    echo_check(&mut s, b"hello through the tunnel\n").unwrap_or_else(|e| t.fail(&e));
    tls_close(s);
    t.wait_for_logs("Connection closed", nth, WAIT);
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every line of an output file must be in stunnel's format.
fn assert_all_lines_formatted(path: &Path) {
    for line in read(path).lines() {
        assert!(
            parse_log_line(line).is_some(),
            "{}: line not in `YYYY.MM.DD HH:MM:SS LOGn[id]: text` format: {line:?}",
            path.display()
        );
    }
}

#[test]
fn log_append_keeps_old_lines() {
    let dir = TestDir::new("log-append");
    let pki = Pki::new(&dir);
    let echo = Backend::echo();
    let out = dir.write(
        "out.log",
        "2000.01.01 00:00:00 LOG5[ui]: a line from an older run\n",
    );
    let global = format!("output = {}\nlog = append", out.display());
    for run in 1..=2 {
        let mut t = start_with(&dir, "append", &global, &pki, &echo);
        one_session(&t, &pki, 1);
        assert_eq!(t.stop().code(), Some(0));
        let text = read(&out);
        assert_eq!(
            text.matches("Configuration successful").count(),
            run,
            "run {run} with log = append must add to the file, not replace it:\n{text}"
        );
        assert_eq!(text.matches("Connection closed").count(), run, "{text}");
        assert!(
            text.starts_with("2000.01.01 00:00:00 LOG5[ui]: a line from an older run\n"),
            "log = append must keep what the file held:\n{text}"
        );
    }
    assert_all_lines_formatted(&out);
}

#[test]
fn log_overwrite_truncates() {
    let dir = TestDir::new("log-overwrite");
    let pki = Pki::new(&dir);
    let echo = Backend::echo();
    let out = dir.write(
        "out.log",
        "2000.01.01 00:00:00 LOG5[ui]: a line from an older run\n",
    );
    let global = format!("output = {}\nlog = overwrite", out.display());
    for _ in 0..2 {
        let mut t = start_with(&dir, "overwrite", &global, &pki, &echo);
        one_session(&t, &pki, 1);
        assert_eq!(t.stop().code(), Some(0));
        let text = read(&out);
        assert!(
            !text.contains("older run"),
            "log = overwrite must truncate the file at start:\n{text}"
        );
        assert_eq!(
            text.matches("Configuration successful").count(),
            1,
            "log = overwrite: only this run's lines may be in the file:\n{text}"
        );
        assert!(text.contains("Connection closed"), "{text}");
    }
    assert_all_lines_formatted(&out);
}

#[test]
fn sigusr1_reopens_the_output_file_after_rotation() {
    let dir = TestDir::new("log-reopen");
    let pki = Pki::new(&dir);
    let echo = Backend::echo();
    let out = dir.join("out.log");
    let rotated = dir.join("out.log.1");
    let t = start_with(
        &dir,
        "reopen",
        &format!("output = {}", out.display()),
        &pki,
        &echo,
    );
    wait_file_contains(&out, "Configuration successful", 1, WAIT).unwrap();
    one_session(&t, &pki, 1);
    wait_file_contains(&out, "Connection closed", 1, WAIT).unwrap();

    // Rotate: the process still writes to the renamed file until SIGUSR1.
    std::fs::rename(&out, &rotated).unwrap();
    one_session(&t, &pki, 2);
    wait_file_contains(&rotated, "Connection closed", 2, WAIT)
        .expect("before SIGUSR1 the old (renamed) file keeps getting lines");
    assert!(
        !out.exists(),
        "nothing may recreate the file before SIGUSR1"
    );

    t.signal(libc::SIGUSR1);
    t.wait_for_log("Log file reopened", WAIT);
    let fresh = wait_file_contains(&out, "Log file reopened", 1, WAIT)
        .expect("SIGUSR1 must create a new file at the original path");
    assert!(
        !fresh.contains("Configuration successful"),
        "the new file must start empty:\n{fresh}"
    );
    let old_len = read(&rotated).len();
    assert!(
        !read(&rotated).contains("Log file reopened"),
        "the rotated file must not get lines after the reopen"
    );

    one_session(&t, &pki, 3);
    wait_file_contains(&out, "Connection closed", 1, WAIT)
        .expect("lines after the reopen go to the new file");
    assert_eq!(
        read(&rotated).len(),
        old_len,
        "the rotated file must not grow after the reopen"
    );
    let old = read(&rotated);
    assert_eq!(old.matches("Connection closed").count(), 2, "{old}");
    assert_all_lines_formatted(&out);
    assert_all_lines_formatted(&rotated);
}

/// Whether this machine lets us make a private mount namespace with a tmpfs.
fn can_unshare_mounts() -> bool {
    Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount -t tmpfs rstunnel-probe /mnt",
        ])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// One syslog datagram as glibc's syslog() sends it: `<PRI>Mmm dd hh:mm:ss IDENT: MSG`.
struct Datagram {
    pri: u32,
    ident: String,
    msg: String,
    raw: String,
}

fn parse_datagram(raw: &str) -> Option<Datagram> {
    let rest = raw.strip_prefix('<')?;
    let (pri, rest) = rest.split_once('>')?;
    let pri: u32 = pri.parse().ok()?;
    // The timestamp is `Mmm dd hh:mm:ss ` (15 characters and a space).
    let rest = rest.get(16..)?;
    let (ident, msg) = rest.split_once(": ")?;
    Some(Datagram {
        pri,
        ident: ident.to_string(),
        msg: msg.trim_end_matches(['\n', '\0']).to_string(),
        raw: raw.to_string(),
    })
}

#[test]
fn syslog_uses_service_ident_and_facility() {
    if !require_root("syslog_uses_service_ident_and_facility") {
        return;
    }
    if !can_unshare_mounts() {
        skipped(
            "syslog_uses_service_ident_and_facility: cannot make a private mount \
             namespace here (unshare --mount / mount -t tmpfs failed)",
        );
        return;
    }
    let dir = TestDir::new("syslog");
    let pki = Pki::new(&dir);
    let echo = Backend::echo();
    let sock_path = dir.join("log.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let port = free_port();
    let conf = dir.write(
        "syslog.conf",
        format!(
            "foreground = quiet\nsyslog = yes\ndebug = local3.info\nservice = rstunnel-test\n\
             [srv]\naccept = 127.0.0.1:{port}\nconnect = {}\ncert = {}\n",
            echo.addr(),
            pki.server.combined.display()
        ),
    );
    // In the namespace: keep the real /dev reachable, put a tmpfs over /dev with the few
    // nodes a process needs (bind-mounted from the real ones), and make /dev/log lead to
    // our socket. Nothing outside the namespace changes; it ends with the process. `exec`
    // keeps one pid from unshare to rstunnel, so the Tunnel guard signals the right one.
    let olddev = dir.join("olddev");
    std::fs::create_dir(&olddev).unwrap();
    let script = dir.write(
        "ns.sh",
        format!(
            "set -e\n\
             mount --bind /dev '{old}'\n\
             mount -t tmpfs -o mode=0755,size=1m rstunnel-test-dev /dev\n\
             for n in null zero full random urandom; do\n\
             \x20 touch /dev/$n\n\
             \x20 mount --bind '{old}'/$n /dev/$n\n\
             done\n\
             ln -s '{sock}' /dev/log\n\
             exec '{bin}' '{conf}'\n",
            old = olddev.display(),
            sock = sock_path.display(),
            bin = rstunnel_bin().display(),
            conf = conf.display()
        ),
    );
    let script_arg = script.to_string_lossy().into_owned();
    let unshare = common::tools::find_program("unshare");
    let t = Tunnel::spawn(
        &unshare,
        &[
            "--mount".as_ref(),
            "--propagation".as_ref(),
            "private".as_ref(),
            "sh".as_ref(),
            script_arg.as_ref(),
        ],
        "syslog",
        conf.clone(),
    );

    let mut got: Vec<Datagram> = Vec::new();
    let mut buf = vec![0u8; 8192];
    let mut receive_until = |got: &mut Vec<Datagram>, pred: &dyn Fn(&[Datagram]) -> bool| {
        let deadline = Instant::now() + WAIT;
        while !pred(got) && Instant::now() < deadline {
            if let Ok(n) = sock.recv(&mut buf) {
                let raw = String::from_utf8_lossy(&buf[..n]).into_owned();
                match parse_datagram(&raw) {
                    Some(d) => got.push(d),
                    None => t.fail(&format!("not a syslog datagram: {raw:?}")),
                }
            }
        }
        pred(got)
    };
    let has = |text: &'static str| move |ds: &[Datagram]| ds.iter().any(|d| d.msg.contains(text));
    if !receive_until(&mut got, &has("Accepting new connections")) {
        t.fail(&format!(
            "no `Accepting new connections` datagram on /dev/log within {WAIT:?}; got:\n{}",
            got.iter()
                .map(|d| d.raw.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    let mut s = tls_connect(lo(port), &pki.ca_file)
        .unwrap_or_else(|e| t.fail(&format!("TLS session failed: {e:?}")));
    echo_check(&mut s, b"syslog test\n").unwrap();
    tls_close(s);
    if !receive_until(&mut got, &has("Connection closed")) {
        t.fail("no `Connection closed` datagram after a session");
    }
    t.signal(libc::SIGTERM);
    if !receive_until(&mut got, &has("Terminated")) {
        t.fail("no `Terminated` datagram after SIGTERM");
    }

    const LOCAL3: u32 = 19;
    for d in &got {
        assert_eq!(
            d.ident, "rstunnel-test",
            "the syslog ident must be `service` ({:?})",
            d.raw
        );
        let level = d
            .msg
            .strip_prefix("LOG")
            .and_then(|r| r.chars().next())
            .and_then(|c| c.to_digit(10))
            .unwrap_or_else(|| panic!("syslog text must start with LOGn[id]: {:?}", d.raw));
        assert!(
            d.msg[4..].starts_with('[') && d.msg.contains("]: "),
            "syslog text must be `LOGn[id]: text`, got {:?}",
            d.raw
        );
        assert_eq!(
            d.pri,
            LOCAL3 * 8 + level,
            "PRI must be facility local3 (19) * 8 + the line's level: {:?}",
            d.raw
        );
        assert!(
            level <= 6,
            "debug = local3.info must filter out LOG7 lines: {:?}",
            d.raw
        );
    }
    for text in [
        "Configuration successful",
        "Service [srv] accepted connection from 127.0.0.1:",
    ] {
        assert!(
            got.iter().any(|d| d.msg.contains(text)),
            "missing syslog line {text:?}"
        );
    }
    assert!(
        got.iter().any(|d| d.msg.starts_with("LOG6"))
            && got.iter().any(|d| d.msg.starts_with("LOG5")),
        "both LOG5 and LOG6 lines must reach syslog at level info"
    );
    // foreground = quiet: no log lines on stderr.
    let stderr_log: Vec<String> = t
        .log_lines()
        .into_iter()
        .filter(|l| parse_log_line(l).is_some())
        .collect();
    assert!(
        stderr_log.is_empty(),
        "foreground = quiet must not log to stderr, got: {stderr_log:?}"
    );
}
