//! Options that shape the TCP side of a service, checked by what users see:
//!
//! * `failover = prio`: targets are tried in file order, so a dead first target (refused) is
//!   skipped for every session and logged as `s_connect: connect IP:PORT: Connection refused
//!   (111)`; with both alive the first always wins. `failover = rr`: sessions alternate.
//! * `local = 127.0.0.2`: the backend sees that source address.
//! * `delay = yes` resolves `connect = localhost:PORT` per connection; a `connect` host that
//!   does not resolve does not stop the process from starting, fails only its own sessions
//!   (logged), and the process keeps serving.
//! * `reset = yes` (default): a TLS client whose session fails after the handshake (backend
//!   refuses) reads ECONNRESET; `reset = no`: it reads a plain EOF.
//! * `logId = process | unique | thread`: the `[id]` of connection log lines (`<pid>`,
//!   a random 22-character base62 id, a thread id); `sequential` (default) counts from 0.
//! * `socket = l:SO_KEEPALIVE=yes`, `socket = r:SO_KEEPALIVE=yes` + `r:TCP_KEEPIDLE=77`: the
//!   tunnel's sockets carry a keepalive timer in `ss -tno` (77 s on the outgoing one).
//!
//! ```text
//! test ──plain──▶ client [cli] ──TLS──▶ server [srv] ──plain──▶ backend(s)
//! ```

mod common;

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::tls::tls_to;
use common::*;

const T: Duration = Duration::from_secs(10);
const RESULT_TIMEOUT: Duration = Duration::from_secs(20);

/// One session to `entry`: the line the backend answered with, without the newline.
fn reply(entry: SocketAddr) -> String {
    let mut s = connect(entry);
    let line = read_line(&mut s, 200).expect("reading the backend's reply through the tunnels");
    let text = String::from_utf8_lossy(&line).into_owned();
    assert!(
        text.ends_with('\n'),
        "no complete reply line came back: {text:?}"
    );
    text.trim_end().to_string()
}

/// `[srv]` section (with `pki.server`) on 127.0.0.1:0 whose `connect` line is `connect`
/// verbatim.
fn server_section(name: &str, connect: &str, cert: &Path, extra: &str) -> String {
    format!(
        "[{name}]\naccept = 127.0.0.1:0\nconnect = {connect}\ncert = {}\n{extra}\n",
        cert.display()
    )
}

// ---------------------------------------------------------------------------------------
// failover

#[test]
fn failover_prio_skips_a_dead_first_target() {
    let dir = TestDir::new("failover-prio-dead");
    let pki = Pki::new(&dir);
    let dead = DeadPort::loopback();
    let b = Backend::tagged_with_peer("B");
    let pair = TunnelPair::start(
        &dir,
        &pki,
        dead.addr,
        &format!("connect = {}\nfailover = prio\n", b.addr()),
        "",
    );
    for i in 0..5 {
        assert_eq!(
            reply(pair.entry()),
            "B 127.0.0.1",
            "session {i} did not reach the second (live) target"
        );
    }
    assert_eq!(b.connections(), 5);
    // Every session tries the dead target first (prio), and says so.
    let refused = format!(
        "s_connect: connect 127.0.0.1:{}: Connection refused (111)",
        dead.addr.port()
    );
    let lines = pair.server.wait_for_logs(&refused, 5, T);
    for l in &lines {
        assert!(
            daemon::is_connection_problem(l, 3),
            "the refused attempt is not a LOG3 connection line: {l}"
        );
    }
}

/// A tunnel pair whose server connects to tagged backends A and B (`connect` twice, A
/// first) with `extra` lines; bound in one `let`, the parts drop in reverse order.
fn two_targets(label: &str, extra: &str) -> ((TestDir, Pki), [Backend; 2], TunnelPair) {
    let dir = TestDir::new(label);
    let pki = Pki::new(&dir);
    let a = Backend::tagged_with_peer("A");
    let b = Backend::tagged_with_peer("B");
    let server_extra = format!("connect = {}\n{extra}", b.addr());
    let pair = TunnelPair::start(&dir, &pki, a.addr(), &server_extra, "");
    ((dir, pki), [a, b], pair)
}

#[test]
fn failover_prio_always_uses_the_first_live_target() {
    let (_env, [_a, b], pair) = two_targets("failover-prio-live", "");
    for i in 0..6 {
        assert_eq!(
            reply(pair.entry()),
            "A 127.0.0.1",
            "session {i}: failover = prio (the default) must always use the first target"
        );
    }
    assert_eq!(b.connections(), 0, "the second target was used under prio");
}

#[test]
fn failover_rr_alternates_between_live_targets() {
    let (_env, _backends, pair) = two_targets("failover-rr", "failover = rr\n");
    let seq: Vec<String> = (0..10)
        .map(|_| reply(pair.entry()).split(' ').next().unwrap().to_string())
        .collect();
    let na = seq.iter().filter(|t| *t == "A").count();
    let nb = seq.iter().filter(|t| *t == "B").count();
    assert_eq!(na + nb, 10, "unexpected replies: {seq:?}");
    assert!(
        (4..=6).contains(&na),
        "failover = rr must spread 10 sessions over both targets (A {na}, B {nb}): {seq:?}"
    );
    let longest_run = seq
        .chunk_by(|x, y| x == y)
        .map(|run| run.len())
        .max()
        .unwrap();
    assert!(
        longest_run <= 2,
        "failover = rr should roughly alternate; got {seq:?}"
    );
}

// ---------------------------------------------------------------------------------------
// local

/// The backend's view of the source address with `server_extra` on `[srv]`, and the
/// server's `connected remote server from …` line.
fn backend_sees(label: &str, server_extra: &str) -> (String, String) {
    let dir = TestDir::new(label);
    let pki = Pki::new(&dir);
    let b = Backend::tagged_with_peer("A");
    let pair = TunnelPair::start(&dir, &pki, b.addr(), server_extra, "");
    let r = reply(pair.entry());
    let line = pair
        .server
        .wait_for_log("Service [srv] connected remote server from ", T);
    (r, line)
}

#[test]
fn local_sets_the_source_address_towards_the_backend() {
    let (r, line) = backend_sees("local-127-0-0-2", "local = 127.0.0.2");
    assert_eq!(
        r, "A 127.0.0.2",
        "the backend did not see the `local` address"
    );
    assert!(
        line.contains("from 127.0.0.2:"),
        "the connect line does not show the `local` address: {line}"
    );

    // Control: without `local` the kernel picks 127.0.0.1.
    let (r, line) = backend_sees("local-none", "");
    assert_eq!(r, "A 127.0.0.1");
    assert!(line.contains("from 127.0.0.1:"), "{line}");
}

// ---------------------------------------------------------------------------------------
// delay and unresolvable targets

#[test]
fn delay_resolves_localhost_per_connection() {
    let dir = TestDir::new("delay-localhost");
    let pki = Pki::new(&dir);
    let echo = Backend::echo();
    let server = Tunnel::start(
        &dir,
        "server",
        &server_section(
            "srv",
            &format!("localhost:{}", echo.addr().port()),
            &pki.server.combined,
            "delay = yes",
        ),
    );
    let client = Tunnel::start(&dir, "client", &client_body(server.addr("srv"), ""));
    let pair = TunnelPair { client, server };
    for seed in 0..3 {
        let data = payload(seed, 64 * 1024);
        let got = echo_session(pair.entry(), &data).expect("echo session with delay = yes");
        assert!(got == data, "session {seed}: echoed data differs");
        assert_eq!(echo.next_result(RESULT_TIMEOUT), Digest::of(&data));
    }
    let closes = pair.server.wait_close_counts(3, T);
    assert!(
        closes.iter().all(|c| c.how == "closed"),
        "sessions did not close cleanly: {closes:?}"
    );
}

/// `[bad]` (client mode) connects to a host that does not resolve; `[good]` (server mode)
/// in the same process echoes. The process starts, `[bad]` sessions fail one by one with a
/// logged error, and `[good]` keeps working.
fn unresolvable_connect(label: &str, bad_extra: &str) {
    const HOST: &str = "no-such-host.invalid";
    let dir = TestDir::new(label);
    let pki = Pki::new(&dir);
    let echo = Backend::echo();
    let body = format!(
        "[bad]\nclient = yes\naccept = 127.0.0.1:0\nconnect = {HOST}:80\n{bad_extra}\n{}",
        server_section("good", &echo.addr().to_string(), &pki.server.combined, "")
    );
    let mut t = Tunnel::start(&dir, "tunnel", &body);

    for i in 0..2 {
        let p = probe(t.addr("bad"), b"hello\n", T);
        assert!(
            p.received.is_empty(),
            "session {i} to an unresolvable target received data"
        );
        assert_ne!(
            p.end,
            End::TimedOut,
            "session {i} to an unresolvable target was left hanging"
        );
        let closes = t.wait_close_counts(i + 1, T);
        assert!(
            closes[i].how.contains("reset"),
            "session {i}: a failed connect should close as reset: {:?}",
            closes[i]
        );
    }
    let errors: Vec<String> = t
        .connection_problems(3)
        .into_iter()
        .filter(|l| l.contains(HOST))
        .collect();
    assert!(
        errors.len() >= 2,
        "each failed session should log a LOG3 error naming {HOST}; found {errors:?}\n{}",
        t.log_text()
    );
    assert!(t.try_wait().is_none(), "the process exited");

    // The other service of the same process is unaffected.
    let mut s = tls_to(t.addr("good"), None, None);
    s.write_all(b"still up\n").unwrap();
    let mut buf = [0u8; 9];
    s.read_exact(&mut buf).expect("echo through [good]");
    assert_eq!(&buf, b"still up\n");
    drop(s);
    assert!(t.try_wait().is_none(), "the process exited");
}

#[test]
fn unresolvable_connect_does_not_stop_startup() {
    unresolvable_connect("unresolvable", "");
}

#[test]
fn unresolvable_connect_with_delay() {
    unresolvable_connect("unresolvable-delay", "delay = yes");
}

// ---------------------------------------------------------------------------------------
// reset

/// Five TLS clients each complete the handshake with `[srv]`, whose backend refuses, and
/// read once. Returns what each first read gave, and the `how` of each close line.
fn read_after_backend_refused(label: &str, extra: &str) -> (Vec<io::Result<usize>>, Vec<String>) {
    let dir = TestDir::new(label);
    let pki = Pki::new(&dir);
    let dead = DeadPort::loopback();
    let t = Tunnel::start(
        &dir,
        "server",
        &server_section("srv", &dead.addr.to_string(), &pki.server.combined, extra),
    );
    let mut results = Vec::new();
    for i in 0..5 {
        // Nothing is written: unread data would make the kernel send RST on close anyway.
        let mut s = tls_to(t.addr("srv"), None, None);
        let mut buf = [0u8; 64];
        results.push(s.read(&mut buf));
        t.wait_close_counts(i + 1, T);
    }
    t.wait_for_logs(
        &format!(
            "s_connect: connect 127.0.0.1:{}: Connection refused (111)",
            dead.addr.port()
        ),
        5,
        T,
    );
    let hows = t
        .wait_close_counts(5, T)
        .into_iter()
        .map(|c| c.how)
        .collect();
    (results, hows)
}

#[test]
fn reset_yes_sends_rst_when_the_session_fails() {
    for (label, extra) in [("reset-default", ""), ("reset-yes", "reset = yes")] {
        let (results, hows) = read_after_backend_refused(label, extra);
        for (i, r) in results.iter().enumerate() {
            match r {
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
                other => panic!(
                    "with `{extra}` (reset = yes is the default), session {i}: expected \
                     ECONNRESET after the backend refused, got {other:?}"
                ),
            }
        }
        assert!(
            hows.iter().all(|h| h == "reset"),
            "with `{extra}`: failed sessions should close as `Connection reset`: {hows:?}"
        );
    }
}

#[test]
fn reset_no_closes_with_eof_when_the_session_fails() {
    let (results, _hows) = read_after_backend_refused("reset-no", "reset = no");
    for (i, r) in results.iter().enumerate() {
        match r {
            Ok(0) => {}
            other => panic!(
                "with reset = no, session {i}: expected a plain EOF after the backend refused, \
                 got {other:?}"
            ),
        }
    }
}

/// stunnel4 5.68 words the close line after the option: with `reset = no` a session whose
/// backend refused ends `Connection closed: 0 byte(s) …` (with the default, `Connection
/// reset: …`).
#[test]
fn reset_no_close_line_says_closed_as_stunnel4_does() {
    let (_results, hows) = read_after_backend_refused("reset-no-line", "reset = no");
    assert!(
        hows.iter().all(|h| h == "closed"),
        "with reset = no stunnel4 logs `Connection closed` for a refused backend: {hows:?}"
    );
}

// ---------------------------------------------------------------------------------------
// logId

/// The ids of the `Service [NAME] accepted connection from …` lines of `t` (LOG5).
fn accepted_ids(t: &Tunnel, service: &str, n: usize) -> Vec<String> {
    let pat = format!("Service [{service}] accepted connection from ");
    t.wait_for_logs(&pat, n, T)
        .iter()
        .map(|l| {
            let p = daemon::parse_log_line(l).expect("stunnel-format line");
            assert_eq!(p.level, 5, "accepted-connection line is not LOG5: {l}");
            p.id
        })
        .collect()
}

/// Runs two echo sessions through a pair with `logId = kind` on both tunnels; returns
/// (pair, client pid, server pid).
fn log_id_pair(dir: &TestDir, pki: &Pki, echo: &Backend, kind: &str) -> (TunnelPair, i32, i32) {
    let extra = format!("logId = {kind}");
    let pair = TunnelPair::start(dir, pki, echo.addr(), &extra, &extra);
    for seed in 0..2 {
        let data = payload(seed, 1000);
        assert!(echo_session(pair.entry(), &data).unwrap() == data);
    }
    pair.client.wait_close_counts(2, T);
    pair.server.wait_close_counts(2, T);
    let (cp, sp) = (
        common::process::tunnel_pid(&pair.client),
        common::process::tunnel_pid(&pair.server),
    );
    (pair, cp, sp)
}

/// Every LOG5 line of a connection (accepted, connected, closed) carries `id`-shaped ids.
fn assert_close_ids(t: &Tunnel, ids: &[String]) {
    let closes = t.wait_close_counts(ids.len(), T);
    let mut got: Vec<String> = closes.into_iter().map(|c| c.id).collect();
    let mut want = ids.to_vec();
    got.sort();
    want.sort();
    assert_eq!(
        got, want,
        "the close lines do not carry the same ids as the accepted lines"
    );
}

#[test]
fn log_id_process_is_the_pid() {
    let dir = TestDir::new("logid-process");
    let pki = Pki::new(&dir);
    let echo = Backend::echo();
    let (pair, cp, sp) = log_id_pair(&dir, &pki, &echo, "process");
    for (t, svc, pid) in [(&pair.client, "cli", cp), (&pair.server, "srv", sp)] {
        let ids = accepted_ids(t, svc, 2);
        assert_eq!(
            ids,
            vec![pid.to_string(), pid.to_string()],
            "logId = process: connection lines must read LOG5[{pid}]"
        );
        assert_close_ids(t, &ids);
        assert!(t.has_log(&format!("LOG5[{pid}]: Service [{svc}] accepted connection")));
    }
}

/// `unique` ids are random 22-character base62 strings, one per connection, as stunnel4
/// 5.68 prints them: never repeated, across processes too.
#[test]
fn log_id_unique_is_random_base62() {
    let dir = TestDir::new("logid-unique");
    let pki = Pki::new(&dir);
    let echo = Backend::echo();
    let (pair, cp, sp) = log_id_pair(&dir, &pki, &echo, "unique");
    for (t, svc, pid) in [(&pair.client, "cli", cp), (&pair.server, "srv", sp)] {
        let ids = accepted_ids(t, svc, 2);
        for id in &ids {
            assert!(
                id.len() == 22 && id.bytes().all(|b| b.is_ascii_alphanumeric()),
                "logId = unique: {id:?} is not a 22-character base62 id ({svc}, pid {pid})"
            );
        }
        assert_ne!(ids[0], ids[1], "logId = unique: ids repeat");
        assert_close_ids(t, &ids);
    }
}

#[test]
fn log_id_thread_is_a_thread_id() {
    let dir = TestDir::new("logid-thread");
    let pki = Pki::new(&dir);
    let echo = Backend::echo();
    let (pair, cp, sp) = log_id_pair(&dir, &pki, &echo, "thread");
    for (t, svc, pid) in [(&pair.client, "cli", cp), (&pair.server, "srv", sp)] {
        let ids = accepted_ids(t, svc, 2);
        for id in &ids {
            let n: u64 = id.parse().unwrap_or_else(|_| {
                panic!(
                    "logId = thread: id {id:?} is not a number\n{}",
                    t.log_text()
                )
            });
            assert!(
                n != 0 && n != 1,
                "logId = thread: id {n} looks like the sequential counter"
            );
            assert_ne!(
                n, pid as u64,
                "logId = thread: id is the process id, not a connection thread's"
            );
        }
        assert_close_ids(t, &ids);
    }
}

#[test]
fn log_id_sequential_is_the_default() {
    let dir = TestDir::new("logid-sequential");
    let pki = Pki::new(&dir);
    let echo = Backend::echo();
    let pair = TunnelPair::start(&dir, &pki, echo.addr(), "", "");
    for seed in 0..2 {
        let data = payload(seed, 1000);
        assert!(echo_session(pair.entry(), &data).unwrap() == data);
    }
    assert_eq!(accepted_ids(&pair.client, "cli", 2), vec!["0", "1"]);
    assert_eq!(accepted_ids(&pair.server, "srv", 2), vec!["0", "1"]);
}

// ---------------------------------------------------------------------------------------
// socket options, seen from the kernel

/// `ss -tnoH` lines whose local and peer address columns are `local` and `peer`.
fn ss_lines(local: Option<SocketAddr>, peer: SocketAddr) -> Vec<String> {
    let ss = tools::find_program("ss");
    let r = tools::run(&ss, &["-tnoH"], T);
    assert!(r.status.success(), "ss failed\n{}", r.describe());
    r.stdout
        .lines()
        .filter(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.len() >= 5
                && cols[4] == peer.to_string()
                && local.is_none_or(|a| cols[3] == a.to_string())
        })
        .map(str::to_string)
        .collect()
}

/// The keepalive timer of an `ss -o` line in seconds (`timer:(keepalive,1min16sec,0)`).
fn keepalive_secs(line: &str) -> Option<f64> {
    let rest = line.split_once("timer:(keepalive,")?.1;
    let mut t = rest.split(',').next()?;
    let mut total = 0.0;
    if let Some((m, r)) = t.split_once("min") {
        total += m.parse::<f64>().ok()? * 60.0;
        t = r;
    }
    if let Some((s, r)) = t.split_once("sec") {
        total += s.parse::<f64>().ok()?;
        t = r;
    } else if let Some((s, r)) = t.split_once('.') {
        total += s.parse::<f64>().ok()?;
        t = r;
    }
    if let Some(ms) = t.strip_suffix("ms") {
        total += ms.parse::<f64>().ok()? / 1000.0;
    }
    Some(total)
}

/// Opens a session through a pair with `client_extra`, makes sure data flows, and returns
/// the `ss` lines of the client tunnel's accepted socket and of its outgoing socket.
fn tunnel_socket_lines(label: &str, client_extra: &str) -> (String, String) {
    let dir = TestDir::new(label);
    let pki = Pki::new(&dir);
    let echo = Backend::echo();
    let pair = TunnelPair::start(&dir, &pki, echo.addr(), "", client_extra);
    let mut s = connect(pair.entry());
    s.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).expect("echo through the pair");
    let accepted = ss_lines(Some(pair.entry()), s.local_addr().unwrap());
    let outgoing = ss_lines(None, pair.server.addr("srv"));
    assert_eq!(
        (accepted.len(), outgoing.len()),
        (1, 1),
        "expected exactly one accepted and one outgoing socket of the client tunnel\n\
         accepted: {accepted:?}\noutgoing: {outgoing:?}"
    );
    (accepted[0].clone(), outgoing[0].clone())
}

#[test]
fn socket_keepalive_options_reach_the_kernel() {
    let (accepted, outgoing) = tunnel_socket_lines(
        "socket-keepalive",
        "socket = l:SO_KEEPALIVE=yes\nsocket = r:SO_KEEPALIVE=yes\nsocket = r:TCP_KEEPIDLE=77",
    );
    assert!(
        accepted.contains("timer:(keepalive,"),
        "socket = l:SO_KEEPALIVE=yes: the accepted socket has no keepalive timer: {accepted}"
    );
    let secs = keepalive_secs(&outgoing).unwrap_or_else(|| {
        panic!(
            "socket = r:SO_KEEPALIVE=yes: the outgoing socket has no keepalive timer: {outgoing}"
        )
    });
    assert!(
        secs > 60.0 && secs <= 77.0,
        "socket = r:TCP_KEEPIDLE=77: the outgoing keepalive timer is {secs} s: {outgoing}"
    );
    // TCP_KEEPIDLE was set on `r` only: the accepted socket keeps the system's idle time.
    let l_secs = keepalive_secs(&accepted).unwrap();
    let system: f64 = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_keepalive_time")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(7200.0);
    if system > 120.0 {
        assert!(
            l_secs > 77.0,
            "the accepted socket got TCP_KEEPIDLE=77 although it was set for `r` only: {accepted}"
        );
    }
}

#[test]
fn no_keepalive_without_socket_options() {
    let (accepted, outgoing) = tunnel_socket_lines("socket-default", "");
    assert!(
        !accepted.contains("keepalive") && !outgoing.contains("keepalive"),
        "by default no tunnel socket has SO_KEEPALIVE:\n{accepted}\n{outgoing}"
    );
}
