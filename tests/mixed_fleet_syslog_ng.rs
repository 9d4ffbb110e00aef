//! syslog-ng in a fleet of rstunnel tunnels (Debian's syslog-ng-core, unpacked by
//! scripts/deps.sh because it conflicts with rsyslog: see `UNPACKED` there), each case in two
//! network namespaces of its own (`c` 192.0.2.1, `s` 192.0.2.2, one veth pair), 1,000 lines,
//! tcpdump on the veth proving that no line crosses it in clear:
//!
//! ```text
//! through tunnels: syslog-ng network() ─▶ rstunnel client ══veth══▶ rstunnel server ─▶ syslog-ng
//! native TLS:      syslog-ng network(transport("tls") tls(...)) ══veth══▶ rstunnel server ─▶ syslog-ng
//! ```
//!
//! * syslog-ng as sender and as receiver through a pair of tunnels: every line arrives once.
//! * syslog-ng's own `tls()` destination, checking the server tunnel's certificate, into a
//!   server tunnel: every line arrives once. A server tunnel whose certificate another CA
//!   signed is refused (the tunnel logs the alert) and nothing arrives.
//!
//! The syslog-ng snippets are the README's ("Mixed fleets"), filled with this run's values;
//! `readme_shows_the_syslog_ng_snippets_these_tests_run` checks the README still shows them.
//! Root only (network namespaces); skipped otherwise.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::certs::LeafSpec;
use common::daemon::start_with;
use common::faults::Capture;
use common::netns::{exec_in, free_port_in, wait_listening, Namespaces};
use common::process::require_root;
use common::syslog::{assert_readme_shows, fill, Lines, CLIENT_TUNNEL, LINES, SERVER_TUNNEL};
use common::tools::{read_or_empty, spawn_syslog_ng, wait_ready, ChildGuard};
use common::*;

const DELIVERY: Duration = Duration::from_secs(120);
const READY: Duration = Duration::from_secs(30);

/// syslog-ng's own TLS into a server tunnel, checking its certificate (README).
const TLS_DESTINATION: &str = r#"destination d_logs {
    network("{host}" port({port}) transport("tls")
            tls(ca-file("{ca}") peer-verify(required-trusted)));
};"#;

/// A plain destination into the local client tunnel (README).
const PLAIN_DESTINATION: &str = r#"destination d_logs {
    network("127.0.0.1" port({port}) transport("tcp"));
};"#;

/// The receiver behind a server tunnel (README).
const PLAIN_SOURCE: &str = r#"source s_tunnel {
    network(ip("127.0.0.1") port({port}) transport("tcp"));
};"#;

const EXAMPLE: &[(&str, &str)] = &[
    ("ca", "/etc/rstunnel/ca.crt"),
    ("host", "logs.example.net"),
    ("port", "514"),
];

/// A sender: `unix-stream()` at `<dir>/sender.sock` (where the test writes) into
/// `destination` (a snippet defining `d_logs`). Returns once the socket is there.
fn start_sender(dir: &TestDir, ns: &str, destination: &str) -> (ChildGuard, PathBuf, PathBuf) {
    let socket = dir.join("sender.sock");
    let config = format!(
        "@version: 3.38\n\
         source s_local {{ unix-stream(\"{}\"); }};\n\
         {destination}\n\
         log {{ source(s_local); destination(d_logs); }};\n",
        socket.display()
    );
    let (mut guard, log) = spawn_syslog_ng(dir, "sender", &exec_in(ns), &config);
    wait_ready(
        &mut guard,
        &log,
        "the syslog-ng sender's socket",
        READY,
        || socket.exists(),
    );
    (guard, log, socket)
}

/// A receiver in `ns`: [`PLAIN_SOURCE`] on 127.0.0.1:`port`, each message text a line of
/// `<dir>/received.log`. Returns once it listens.
fn start_receiver(dir: &TestDir, ns: &str, port: u16) -> (ChildGuard, PathBuf) {
    let out = dir.join("received.log");
    let config = format!(
        "@version: 3.38\n\
         {}\n\
         destination d_out {{ file(\"{}\" template(\"${{MSG}}\\n\")); }};\n\
         log {{ source(s_tunnel); destination(d_out); }};\n",
        fill(PLAIN_SOURCE, &[("port", &port.to_string())]),
        out.display()
    );
    let (mut guard, log) = spawn_syslog_ng(dir, "receiver", &exec_in(ns), &config);
    wait_ready(&mut guard, &log, "the syslog-ng receiver", READY, || {
        wait_listening(ns, port, Duration::from_millis(200))
    });
    (guard, out)
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// How the sender reaches the server tunnel.
enum Sender {
    /// Plain, through a client tunnel next to it.
    ClientTunnel,
    /// syslog-ng's own TLS.
    NativeTls,
    /// syslog-ng's own TLS to a server tunnel whose certificate another CA signed: refused.
    NativeTlsUntrusted,
}

fn deliver(how: Sender) {
    let tag = match how {
        Sender::ClientTunnel => "tunnels",
        Sender::NativeTls => "tls",
        Sender::NativeTlsUntrusted => "untrusted",
    };
    let dir = TestDir::new(&format!("fleet-syslog-ng-{tag}"));
    let pki = Pki::new(&dir);
    let ns = Namespaces::pair(&format!("ng{tag}"));
    let (c, s) = (ns.name("c"), ns.name("s"));

    let plain = free_port_in(s, "127.0.0.1");
    let (_receiver, out) = start_receiver(&dir, s, plain);
    // syslog-ng checks the name it connects to against the certificate (its CN when
    // there is no DNS name): the server tunnel's certificate is named for its address.
    let issuer = match how {
        Sender::NativeTlsUntrusted => &pki.wrong_ca,
        _ => &pki.ca,
    };
    let server = issuer
        .issue_with(
            "192.0.2.2",
            KeyKind::EcP256,
            &LeafSpec {
                ips: &["192.0.2.2"],
                dns: &["right.name"],
                ..LeafSpec::default()
            },
        )
        .write(&dir, "server-192.0.2.2");
    let (cert, key, ca) = (path(&server.cert), path(&server.key), path(&pki.ca_file));
    let plain_s = plain.to_string();
    let body = fill(
        SERVER_TUNNEL,
        &[
            ("accept", "192.0.2.2:0"),
            ("plain", &plain_s),
            ("cert", &cert),
            ("key", &key),
        ],
    );
    let server_tunnel = start_with(&dir, "server-tunnel", &body, &exec_in(s), &["syslog-tls"]);
    let tls = server_tunnel.port("syslog-tls");
    let tls_s = tls.to_string();
    let mut capture = Capture::start_on(
        &exec_in(s),
        "vs",
        dir.join("wire.pcap"),
        &format!("tcp port {tls}"),
    );

    let mut client_tunnel = None;
    let destination = match how {
        Sender::ClientTunnel => {
            let (ccert, ckey) = (path(&pki.client.cert), path(&pki.client.key));
            let body = fill(
                CLIENT_TUNNEL,
                &[
                    ("port", "0"),
                    ("host", "192.0.2.2"),
                    ("tls", &tls_s),
                    ("cert", &ccert),
                    ("key", &ckey),
                    ("ca", &ca),
                    ("peer", "right.name"),
                ],
            );
            let t = start_with(&dir, "client-tunnel", &body, &exec_in(c), &["syslog-tls"]);
            let entry = t.port("syslog-tls").to_string();
            client_tunnel = Some(t);
            fill(PLAIN_DESTINATION, &[("port", &entry)])
        }
        Sender::NativeTls | Sender::NativeTlsUntrusted => fill(
            TLS_DESTINATION,
            &[("host", "192.0.2.2"), ("port", &tls_s), ("ca", &ca)],
        ),
    };
    let (_sender, sender_log, socket) = start_sender(&dir, c, &destination);
    let lines = Lines::new(&format!("syslog-ng-{tag}"), LINES);
    lines.feed(&socket);
    if let Sender::NativeTlsUntrusted = how {
        // syslog-ng aborts the handshake (unknown CA) and retries later; the tunnel logs
        // the failed handshake with syslog-ng's alert (the README quotes the line), and
        // nothing may arrive.
        let failed = server_tunnel.wait_for_log("SSL_accept", DELIVERY);
        if !failed.contains("SSL_accept: tlsv1 alert unknown ca") {
            server_tunnel.fail(&format!(
                "the failed handshake must be logged as `SSL_accept: tlsv1 alert unknown ca` \
                 (README, Mixed fleets), got: {failed}"
            ));
        }
        println!("syslog-ng refused the untrusted tunnel: {failed}");
        let got = lines.counts(&read_or_empty(&out));
        assert!(
            got.is_empty(),
            "{} line(s) delivered to an untrusted server",
            got.len()
        );
        capture.stop();
        lines.assert_not_in_clear(&capture.file, tls);
        return;
    }
    if let Err(e) = lines.wait_all_once(&out, DELIVERY) {
        if let Some(t) = &client_tunnel {
            println!("--- client tunnel ---\n{}", t.log_text());
        }
        server_tunnel.fail(&format!(
            "syslog-ng ({tag}): {e}\n--- sender ---\n{}",
            read_or_empty(&sender_log)
        ));
    }
    capture.stop();
    let bytes = lines.assert_not_in_clear(&capture.file, tls);
    server_tunnel.wait_for_log("accepted connection from 192.0.2.1:", READY);
    println!("syslog-ng ({tag}): {LINES} lines once each, {bytes} TLS payload bytes on the veth");
}

#[test]
fn syslog_ng_sends_and_receives_every_line_once_through_tunnels() {
    if !require_root("syslog_ng_sends_and_receives_every_line_once_through_tunnels") {
        return;
    }
    deliver(Sender::ClientTunnel);
}

#[test]
fn syslog_ng_tls_destination_delivers_every_line_once_through_a_server_tunnel() {
    if !require_root("syslog_ng_tls_destination_delivers_every_line_once_through_a_server_tunnel") {
        return;
    }
    deliver(Sender::NativeTls);
}

#[test]
fn syslog_ng_tls_destination_refuses_a_server_tunnel_from_another_ca() {
    if !require_root("syslog_ng_tls_destination_refuses_a_server_tunnel_from_another_ca") {
        return;
    }
    deliver(Sender::NativeTlsUntrusted);
}

#[test]
fn readme_shows_the_syslog_ng_snippets_these_tests_run() {
    assert_readme_shows(
        "syslog-ng tls() destination",
        &fill(
            TLS_DESTINATION,
            &[&[("port", "6514")][..], EXAMPLE].concat(),
        ),
    );
    assert_readme_shows(
        "syslog-ng destination into a client tunnel",
        &fill(PLAIN_DESTINATION, EXAMPLE),
    );
    assert_readme_shows(
        "syslog-ng source behind a server tunnel",
        &fill(PLAIN_SOURCE, EXAMPLE),
    );
}
