//! A fleet that mixes rstunnel with rsyslog's own TLS (packages rsyslog-gnutls and
//! rsyslog-openssl: `StreamDriver` `gtls` and `ossl`), each case in two network namespaces
//! of its own (`c` 192.0.2.1 and `s` 192.0.2.2, one veth pair), 1,000 lines each, with
//! tcpdump on the veth proving that no line crosses it in clear:
//!
//! ```text
//! native sender:  rsyslogd omfwd TLS (gtls | ossl) ══veth══▶ rstunnel server ─▶ rsyslogd imtcp
//! native server:  rsyslogd omfwd ─▶ rstunnel client ══veth══▶ rsyslogd imtcp TLS (gtls | ossl,
//!                                   (client certificate)       x509/name, PermittedPeer)
//! ```
//!
//! * A native TLS sender (octet-counted, RFC 5425), checking the server tunnel's certificate
//!   by name, delivers every line exactly once through a server tunnel to a plain imtcp: a
//!   site moving from tunnels to rsyslog's own TLS one client at a time.
//! * A client tunnel presenting a client certificate to an rsyslog TLS server that checks it
//!   by name: the permitted name is delivered, every line once; another name (same CA) is
//!   refused by rsyslog, the tunnel logs the failed session, and nothing is delivered. (The
//!   ossl refusal case is `#[ignore]`d: Debian 12's ossl driver lets such a peer through.)
//!
//! The rsyslog and rstunnel snippets are the README's ("Mixed fleets"), filled with this
//! run's paths, addresses and ports; `readme_shows_the_snippets_these_tests_run` checks the
//! README still shows them verbatim. Root only (network namespaces); skipped otherwise.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::daemon::parse_close_line;
use common::daemon::start_with;
use common::faults::Capture;
use common::netns::{exec_in, free_port_in, wait_listening, Namespaces};
use common::process::require_root;
use common::syslog::{assert_readme_shows, fill, Lines, CLIENT_TUNNEL, LINES, SERVER_TUNNEL};
use common::tools::{read_or_empty, spawn_rsyslogd, wait_ready, ChildGuard};
use common::*;

/// Generous: rsyslog's retry interval is 1 s here, and a loaded 2-CPU machine is slow.
const DELIVERY: Duration = Duration::from_secs(120);
const READY: Duration = Duration::from_secs(30);
/// How long an rsyslog server gets to say it refused a certificate (it does so at once).
const REFUSAL: Duration = Duration::from_secs(20);

/// A native TLS sender (README): rsyslog checks the tunnel's certificate by name.
const NATIVE_SENDER: &str = r#"global(DefaultNetstreamDriverCAFile="{ca}")
action(type="omfwd" target="{host}" port="{port}" protocol="tcp"
       TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format"
       StreamDriver="{driver}" StreamDriverMode="1"
       StreamDriverAuthMode="x509/name" StreamDriverPermittedPeers="{peer}"
       action.resumeRetryCount="-1" action.resumeInterval="1")"#;

/// A plain sender into its local client tunnel (README).
const PLAIN_SENDER: &str = r#"action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp"
       TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format"
       action.resumeRetryCount="-1" action.resumeInterval="1")"#;

/// An rsyslog TLS server that accepts only the client certificate named `{peer}` (README).
const NATIVE_SERVER: &str = r#"global(DefaultNetstreamDriverCAFile="{ca}"
       DefaultNetstreamDriverCertFile="{cert}"
       DefaultNetstreamDriverKeyFile="{key}")
module(load="imtcp" StreamDriver.Name="{driver}" StreamDriver.Mode="1"
       StreamDriver.AuthMode="x509/name" PermittedPeer=["{peer}"])
input(type="imtcp" port="{port}" ruleset="remote")"#;

/// The README's example values for every placeholder above.
const EXAMPLE: &[(&str, &str)] = &[
    ("ca", "/etc/rstunnel/ca.crt"),
    ("host", "logs.example.net"),
    ("peer", "logs.example.net"),
    ("accept", "6514"),
    ("plain", "514"),
    ("tls", "6514"),
    ("driver", "gtls"),
];

/// The receiver's own rules in front of a snippet: ruleset `remote` writes each message text
/// on a line of `out`.
fn receiver_ruleset(out: &Path) -> String {
    format!(
        "template(name=\"text\" type=\"string\" string=\"%msg%\\n\")\n\
         ruleset(name=\"remote\") {{\n  action(type=\"omfile\" file=\"{}\" template=\"text\")\n}}\n",
        out.display()
    )
}

/// A sender: `imptcp` on a Unix stream socket (where the test writes its lines) into the
/// default ruleset, which holds `forward` (a README snippet). Returns once the socket is there.
fn start_sender(dir: &TestDir, ns: &str, forward: &str) -> (ChildGuard, PathBuf, PathBuf) {
    let socket = dir.join("sender.sock");
    let rules = format!(
        "module(load=\"imptcp\")\ninput(type=\"imptcp\" path=\"{}\" unlink=\"on\")\n{forward}\n",
        socket.display()
    );
    let (mut guard, log) = spawn_rsyslogd(dir, "sender", &exec_in(ns), &rules);
    wait_ready(&mut guard, &log, "the sender's socket", READY, || {
        socket.exists()
    });
    (guard, log, socket)
}

/// A receiver in `ns` with `rules` (which must listen on `port` and use ruleset `remote`);
/// returns once it listens, with its output file and its own messages' file.
fn start_receiver(
    dir: &TestDir,
    ns: &str,
    port: u16,
    rules: &str,
) -> (ChildGuard, PathBuf, PathBuf) {
    let out = dir.join("received.log");
    let rules = format!("{}{rules}\n", receiver_ruleset(&out));
    let (mut guard, log) = spawn_rsyslogd(dir, "receiver", &exec_in(ns), &rules);
    wait_ready(&mut guard, &log, "the receiver's imtcp", READY, || {
        wait_listening(ns, port, Duration::from_millis(200))
    });
    (guard, out, log)
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// Native TLS sender (`driver`) ══▶ rstunnel server tunnel ─▶ plain imtcp.
fn native_sender_through_a_server_tunnel(driver: &str) {
    let dir = TestDir::new(&format!("fleet-sender-{driver}"));
    let pki = Pki::new(&dir);
    let ns = Namespaces::pair(&format!("fs{driver}"));
    let (c, s) = (ns.name("c"), ns.name("s"));

    let plain = free_port_in(s, "127.0.0.1");
    let (_receiver, out, _) = start_receiver(
        &dir,
        s,
        plain,
        &format!("module(load=\"imtcp\")\ninput(type=\"imtcp\" address=\"127.0.0.1\" port=\"{plain}\" ruleset=\"remote\")"),
    );
    let plain_s = plain.to_string();
    let (cert, key) = (path(&pki.server.cert), path(&pki.server.key));
    let body = fill(
        SERVER_TUNNEL,
        &[
            ("accept", "192.0.2.2:0"),
            ("plain", &plain_s),
            ("cert", &cert),
            ("key", &key),
        ],
    );
    let tunnel = start_with(&dir, "server-tunnel", &body, &exec_in(s), &["syslog-tls"]);
    let tls = tunnel.port("syslog-tls");
    let mut capture = Capture::start_on(
        &exec_in(s),
        "vs",
        dir.join("wire.pcap"),
        &format!("tcp port {tls}"),
    );

    let tls_s = tls.to_string();
    let ca = path(&pki.ca_file);
    let forward = fill(
        NATIVE_SENDER,
        &[
            ("ca", &ca),
            ("host", "192.0.2.2"),
            ("port", &tls_s),
            ("driver", driver),
            ("peer", "right.name"),
        ],
    );
    let (_sender, sender_log, socket) = start_sender(&dir, c, &forward);
    let lines = Lines::new(&format!("sender-{driver}"), LINES);
    lines.feed(&socket);
    if let Err(e) = lines.wait_all_once(&out, DELIVERY) {
        tunnel.fail(&format!(
            "{driver} sender through the server tunnel: {e}\n--- sender ---\n{}",
            read_or_empty(&sender_log)
        ));
    }
    capture.stop();
    let bytes = lines.assert_not_in_clear(&capture.file, tls);
    tunnel.wait_for_log("accepted connection from 192.0.2.1:", READY);
    println!("{driver} sender: {LINES} lines once each, {bytes} TLS payload bytes on the veth");
}

/// What the client-tunnel cases end with.
enum Expect {
    /// Every line, once.
    Delivered,
    /// rsyslog refuses the tunnel's certificate: nothing arrives.
    Refused,
}

/// Plain sender ─▶ rstunnel client tunnel ══▶ rsyslog TLS server (`driver`) that permits
/// only `client.right.name`; the tunnel presents that certificate (`Delivered`) or one for
/// `intruder.right.name` from the same CA (`Refused`).
fn client_tunnel_into_a_native_server(driver: &str, expect: Expect) {
    let tag = match expect {
        Expect::Delivered => "ok",
        Expect::Refused => "no",
    };
    let dir = TestDir::new(&format!("fleet-server-{driver}-{tag}"));
    let pki = Pki::new(&dir);
    let client = match expect {
        Expect::Delivered => pki.client.clone(),
        Expect::Refused => pki
            .ca
            .issue(
                "intruder.right.name",
                &["intruder.right.name"],
                KeyKind::EcP256,
            )
            .write(&dir, "intruder"),
    };
    let ns = Namespaces::pair(&format!("fr{driver}{tag}"));
    let (c, s) = (ns.name("c"), ns.name("s"));
    let ca = path(&pki.ca_file);
    let server_cert = path(&pki.server.cert);
    let server_key = path(&pki.server.key);

    let tls = free_port_in(s, "192.0.2.2");
    let tls_s = tls.to_string();
    let (_receiver, out, receiver_log) = start_receiver(
        &dir,
        s,
        tls,
        &fill(
            NATIVE_SERVER,
            &[
                ("ca", &ca),
                ("cert", &server_cert),
                ("key", &server_key),
                ("driver", driver),
                ("peer", "client.right.name"),
                ("port", &tls_s),
            ],
        ),
    );
    let (cert, key) = (path(&client.cert), path(&client.key));
    let body = fill(
        CLIENT_TUNNEL,
        &[
            ("port", "0"),
            ("host", "192.0.2.2"),
            ("tls", &tls_s),
            ("cert", &cert),
            ("key", &key),
            ("ca", &ca),
            ("peer", "right.name"),
        ],
    );
    // When rsyslog refuses after reading nothing, the session may end by TIMEOUTclose: its
    // close_notify half-closes the plain side, and omfwd never reads, so it never closes
    // (stunnel 5.68 waits the same way). 5 s instead of 60 keeps the case short.
    let body = match expect {
        Expect::Delivered => body,
        Expect::Refused => format!(
            "{body}
TIMEOUTclose = 5"
        ),
    };
    let tunnel = start_with(&dir, "client-tunnel", &body, &exec_in(c), &["syslog-tls"]);
    let entry = tunnel.port("syslog-tls").to_string();
    let mut capture = Capture::start_on(
        &exec_in(s),
        "vs",
        dir.join("wire.pcap"),
        &format!("tcp port {tls}"),
    );
    let (sender, sender_log, socket) =
        start_sender(&dir, c, &fill(PLAIN_SENDER, &[("port", &entry)]));
    let lines = Lines::new(&format!("server-{driver}-{tag}"), LINES);
    lines.feed(&socket);
    match expect {
        Expect::Delivered => {
            if let Err(e) = lines.wait_all_once(&out, DELIVERY) {
                tunnel.fail(&format!(
                    "client tunnel into the {driver} server: {e}\n--- sender ---\n{}",
                    read_or_empty(&sender_log)
                ));
            }
        }
        Expect::Refused => {
            // rsyslog says why it refused (error 2088: "peer name not authorized") and
            // closes the session: gtls always. ossl (8.2302) may close it without that
            // word, or take the lines' bytes, say nothing and keep the connection open;
            // so wait (bounded) for its word or the session's end, then stop the sender,
            // which ends the session in any case. The tunnel must log the session's end with
            // nothing back. (How much it sent into TLS is not judged: rsyslog checks the
            // name after the handshake, and may close before the tunnel has read a line.)
            let deadline = Instant::now() + REFUSAL;
            let said = || read_or_empty(&receiver_log).contains("2088");
            let ended = || {
                tunnel
                    .log_lines()
                    .iter()
                    .any(|l| parse_close_line(l).is_some())
            };
            while !said() && !ended() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            match (said(), driver) {
                (true, _) => {}
                (false, "ossl") => println!("ossl server: refused without a word"),
                (false, _) => tunnel.fail(&format!(
                    "the {driver} server did not log its refusal within {REFUSAL:?}:\n{}",
                    read_or_empty(&receiver_log)
                )),
            }
            drop(sender);
            let end = tunnel.wait_close_counts(1, DELIVERY).remove(0);
            println!("{driver} server refused the tunnel: {end:?}");
            assert_eq!(
                end.sent_to_socket, 0,
                "the refused session must show nothing sent back to the sender: {end:?}"
            );
            let got = lines.counts(&read_or_empty(&out));
            assert!(
                got.is_empty(),
                "{} line(s) delivered although rsyslog refused the tunnel's certificate",
                got.len()
            );
        }
    }
    capture.stop();
    let bytes = lines.assert_not_in_clear(&capture.file, tls);
    println!(
        "client tunnel into the {driver} server ({tag}): {bytes} TLS payload bytes on the veth"
    );
}

#[test]
fn gtls_sender_delivers_every_line_once_through_a_server_tunnel() {
    if !require_root("gtls_sender_delivers_every_line_once_through_a_server_tunnel") {
        return;
    }
    native_sender_through_a_server_tunnel("gtls");
}

#[test]
fn ossl_sender_delivers_every_line_once_through_a_server_tunnel() {
    if !require_root("ossl_sender_delivers_every_line_once_through_a_server_tunnel") {
        return;
    }
    native_sender_through_a_server_tunnel("ossl");
}

#[test]
fn gtls_server_accepts_the_client_tunnel_by_name() {
    if !require_root("gtls_server_accepts_the_client_tunnel_by_name") {
        return;
    }
    client_tunnel_into_a_native_server("gtls", Expect::Delivered);
}

#[test]
fn ossl_server_accepts_the_client_tunnel_by_name() {
    if !require_root("ossl_server_accepts_the_client_tunnel_by_name") {
        return;
    }
    client_tunnel_into_a_native_server("ossl", Expect::Delivered);
}

#[test]
fn gtls_server_refuses_a_client_tunnel_with_another_name() {
    if !require_root("gtls_server_refuses_a_client_tunnel_with_another_name") {
        return;
    }
    client_tunnel_into_a_native_server("gtls", Expect::Refused);
}

/// Ignored: Debian 12's rsyslog-openssl (8.2302) does not enforce `x509/name` reliably. In
/// most runs it delivered all 1,000 lines from a tunnel whose certificate names
/// `intruder.right.name` (not permitted), without a word in its log; in the others it
/// refused with error 2088. Run it with `--ignored` against a newer rsyslog.
#[test]
#[ignore = "rsyslog-openssl 8.2302 delivers lines from a peer name it does not permit (README, Mixed fleets)"]
fn ossl_server_refuses_a_client_tunnel_with_another_name() {
    if !require_root("ossl_server_refuses_a_client_tunnel_with_another_name") {
        return;
    }
    client_tunnel_into_a_native_server("ossl", Expect::Refused);
}

#[test]
fn readme_shows_the_snippets_these_tests_run() {
    let example = |t: &str, extra: &[(&str, &str)]| {
        let mut v: Vec<(&str, &str)> = extra.to_vec();
        v.extend_from_slice(EXAMPLE);
        fill(t, &v)
    };
    let tunnel_files = [
        ("cert", "/etc/rstunnel/tunnel.crt"),
        ("key", "/etc/rstunnel/tunnel.key"),
    ];
    let server_files = [
        ("cert", "/etc/rstunnel/logs.crt"),
        ("key", "/etc/rstunnel/logs.key"),
    ];
    assert_readme_shows(
        "native TLS sender",
        &example(NATIVE_SENDER, &[("port", "6514")]),
    );
    assert_readme_shows("server tunnel", &example(SERVER_TUNNEL, &server_files));
    assert_readme_shows("plain sender", &example(PLAIN_SENDER, &[("port", "514")]));
    assert_readme_shows(
        "client tunnel",
        &example(
            CLIENT_TUNNEL,
            &[&[("port", "514")][..], &tunnel_files].concat(),
        ),
    );
    assert_readme_shows(
        "native TLS server",
        &example(
            NATIVE_SERVER,
            &[
                &[("port", "6514"), ("peer", "tunnel.example.net")][..],
                &server_files,
            ]
            .concat(),
        ),
    );
}
