//! The TLS peers and outcomes shared by the TLS option tests (`tests/tls_crl.rs`,
//! `tls_peer.rs`, `tls_sni.rs`, `tls_resumption.rs`, `tls_versions.rs`,
//! `tls_certificates.rs`): `openssl` commands run in a directory, `s_client`/`s_server` with
//! the line [`LINE`], rstunnel or stunnel4 tunnels started from a config body, and the
//! checks of a session (reversed, echoed, refused and logged), also of an rstunnel client
//! against both an `s_server` and a stunnel4 server. Every wait is bounded by
//! [`RUN_TIMEOUT`] or [`T`].

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::daemon::is_connection_problem;
use super::openssl_cli;
use super::tools::{openssl, run_with_timeout, RunResult};
use super::*;

/// Bound on every foreign command (openssl) and on every wait for a result.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on waiting for a log line or a refused connection to end.
pub const T: Duration = Duration::from_secs(10);
pub const LINE: &str = "hello through the tls options\n";

pub fn p(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Runs `openssl ARGS` in `cwd`; panics with its output unless it succeeds.
pub fn ossl(cwd: &Path, args: &[&str]) -> RunResult {
    let mut cmd = Command::new(openssl());
    cmd.current_dir(cwd).args(args);
    let r = run_with_timeout(cmd, b"", RUN_TIMEOUT);
    assert!(
        r.status.success(),
        "openssl {} failed\n{}",
        args.join(" "),
        r.describe()
    );
    r
}

/// `openssl s_client` to `127.0.0.1:port` with `args`: sends [`LINE`] and reads (with
/// `-ign_eof`) until the server closes. No server verification unless `args` asks.
pub fn s_client(port: u16, args: &[&str]) -> RunResult {
    let all: Vec<&str> = ["-ign_eof"].iter().chain(args).copied().collect();
    openssl_cli::s_client(port, &all, LINE.as_bytes(), RUN_TIMEOUT)
}

/// [`s_client`] presenting `leaf` (its `-cert` and `-key`) as the client certificate.
pub fn s_client_as(port: u16, leaf: &LeafFiles, args: &[&str]) -> RunResult {
    let (cert, key) = (p(&leaf.cert), p(&leaf.key));
    let mut all = vec!["-cert", cert.as_str(), "-key", key.as_str()];
    all.extend_from_slice(args);
    s_client(port, &all)
}

/// [`s_client`] that trusts only `ca` and must verify the server as `localhost`
/// (`-verify_return_error -verify_hostname localhost`).
pub fn s_client_verifying(port: u16, ca: &Path) -> RunResult {
    let ca = p(ca);
    s_client(
        port,
        &[
            "-CAfile",
            &ca,
            "-verify_return_error",
            "-verify_hostname",
            "localhost",
        ],
    )
}

/// Whether s_client got [`LINE`] echoed back by the backend behind the tunnel.
pub fn echoed(r: &RunResult) -> bool {
    r.stdout.contains(LINE.trim_end())
}

/// An `openssl s_server -rev` (answers each line reversed) on a free loopback port, with
/// `args` (certificate options etc.), run as a [`Tunnel`] so that it is killed on drop and
/// its output lands in failure messages. Returns it and its port.
pub fn s_server(dir: &TestDir, label: &str, args: &[&str]) -> (Tunnel, u16) {
    let all: Vec<&str> = ["-rev"].iter().chain(args).copied().collect();
    openssl_cli::s_server(dir, label, &all)
}

/// Sends [`LINE`] through a client tunnel whose far end is `s_server -rev`; the reversed
/// line must come back.
pub fn assert_reversed(entry: SocketAddr, client: &Tunnel, server: &Tunnel) {
    let mut s = connect(entry);
    s.write_all(LINE.as_bytes()).unwrap();
    let got = read_line(&mut s, 1000).unwrap_or_default();
    let reversed: String = LINE.trim_end().chars().rev().collect();
    if String::from_utf8_lossy(&got) != format!("{reversed}\n") {
        client.fail(&format!(
            "expected s_server -rev to answer {reversed:?} through the tunnel, got {:?}\n\
             --- {} ---\n{}",
            String::from_utf8_lossy(&got),
            server.label,
            server.log_text()
        ));
    }
}

/// An echo session of 64 KiB through `entry` must come back intact.
pub fn assert_echo_works(entry: SocketAddr, t: &Tunnel, what: &str) {
    let data = payload(7, 64 * 1024);
    match echo_session(entry, &data) {
        Ok(got) if got == data => {}
        Ok(got) => t.fail(&format!(
            "{what}: echo differs ({} byte(s) back of {})",
            got.len(),
            data.len()
        )),
        Err(e) => t.fail(&format!("{what}: echo session failed: {e}")),
    }
}

/// Waits until a log line of `t` after the first `from` lines satisfies `pred`.
pub fn wait_new_log(t: &Tunnel, from: usize, pred: impl Fn(&str) -> bool) -> Option<String> {
    let deadline = Instant::now() + T;
    loop {
        if let Some(l) = t.log_lines().iter().skip(from).find(|l| pred(l)) {
            return Some(l.clone());
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A session through `entry` must be refused: nothing comes back, the connection is
/// closed (not left hanging), and `refuser` logs, after its first `from` lines, a line
/// containing `logged` (or, when `logged` is empty, any LOG4-or-worse connection line).
pub fn assert_refused(entry: SocketAddr, refuser: &Tunnel, from: usize, logged: &str, what: &str) {
    let pr = probe(entry, LINE.as_bytes(), T);
    if !pr.received.is_empty() {
        refuser.fail(&format!(
            "{what}: a refused session delivered {:?}",
            String::from_utf8_lossy(&pr.received)
        ));
    }
    if pr.end == End::TimedOut {
        refuser.fail(&format!("{what}: the refused session was left hanging"));
    }
    let found = wait_new_log(refuser, from, |l| {
        if logged.is_empty() {
            is_connection_problem(l, 4)
        } else {
            l.contains(logged)
        }
    });
    if found.is_none() {
        refuser.fail(&format!(
            "{what}: refused, but no log line containing {logged:?} (empty: any LOG4-or-worse \
             connection line) after line {from}"
        ));
    }
}

/// Body of a stunnel4/rstunnel config whose sections include some without `accept`
/// (virtual hosts): starts `program` and waits only for `bound` sections.
pub fn server(
    program: Program,
    dir: &TestDir,
    label: &str,
    backend: SocketAddr,
    cert: &Path,
    extra: &str,
) -> Tunnel {
    Tunnel::start_program(program, dir, label, &server_body(backend, cert, extra))
}

pub fn client(
    program: Program,
    dir: &TestDir,
    label: &str,
    target: SocketAddr,
    extra: &str,
) -> Tunnel {
    Tunnel::start_program(program, dir, label, &client_body(target, extra))
}

pub fn private_file(path: &Path) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// An rstunnel client with `verify` lines against `s_server` presenting `leaf`, then
/// against a stunnel4 server presenting it: through both (`ok`), or refused by both with
/// `refused` in the client's log (and the stunnel4 server's backend never contacted).
/// `what(peer)` names the case in failure messages (`peer`: "s_server", "stunnel4 server").
pub fn client_against_both_servers(
    dir: &TestDir,
    leaf: &LeafFiles,
    verify: &str,
    ok: bool,
    refused: &str,
    what: &dyn Fn(&str) -> String,
) {
    let (ss, port) = s_server(
        dir,
        "s_server",
        &["-cert", &p(&leaf.cert), "-key", &p(&leaf.key)],
    );
    let cli = client(
        Program::Rstunnel,
        dir,
        "client",
        ([127, 0, 0, 1], port).into(),
        verify,
    );
    if ok {
        assert_reversed(cli.addr("cli"), &cli, &ss);
    } else {
        assert_refused(cli.addr("cli"), &cli, 0, refused, &what("s_server"));
    }
    drop((cli, ss));
    let echo = Backend::echo();
    let s4 = server(
        Program::Stunnel4,
        dir,
        "s4-server",
        echo.addr(),
        &leaf.combined,
        "",
    );
    let cli = client(Program::Rstunnel, dir, "client2", s4.addr("srv"), verify);
    if ok {
        assert_echo_works(cli.addr("cli"), &cli, &what("stunnel4 server"));
    } else {
        assert_refused(cli.addr("cli"), &cli, 0, refused, &what("stunnel4 server"));
        assert_eq!(echo.connections(), 0);
    }
}
