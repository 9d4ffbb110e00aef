//! Checks of the test harness itself (`tests/common/`), without the binary: if these fail, the
//! other integration tests cannot be trusted.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use common::daemon::{parse_bound_line, parse_close_line, parse_log_line, section_names};
use common::*;
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{X509StoreContext, X509};

const T: Duration = Duration::from_secs(10);

#[test]
fn log_line_parsers() {
    let l = "2026.11.26 20:00:35 LOG6[ui]: Service [x] (FD=8) bound to 127.0.0.1:42269";
    assert_eq!(
        parse_bound_line(l),
        Some(("x".into(), "127.0.0.1:42269".parse().unwrap()))
    );
    let l = "2026.11.26 20:00:35 LOG6[ui]: Service [a b] (FD=9) bound to ::1:443";
    assert_eq!(
        parse_bound_line(l),
        Some(("a b".into(), "[::1]:443".parse().unwrap()))
    );
    let c = "2026.11.26 20:00:35 LOG5[3]: Connection closed: 10 byte(s) sent to TLS, 20 byte(s) sent to socket";
    let cc = parse_close_line(c).unwrap();
    assert_eq!(
        (
            cc.sent_to_tls,
            cc.sent_to_socket,
            cc.how.as_str(),
            cc.id.as_str()
        ),
        (10, 20, "closed", "3")
    );
    let r = "2026.11.26 20:00:35 LOG5[4]: Connection reset/closed: 0 byte(s) sent to TLS, 0 byte(s) sent to socket";
    assert_eq!(parse_close_line(r).unwrap().how, "reset/closed");
    let p = parse_log_line("2026.11.26 20:00:35 LOG3[12]: SSL_accept: x").unwrap();
    assert_eq!(
        (p.level, p.id.as_str(), p.text.as_str()),
        (3, "12", "SSL_accept: x")
    );
    assert!(parse_log_line("[!] /x.conf:3: \"a\": b").is_none());
    assert_eq!(
        section_names("a = b\n[one]\nx = y\n  [ two ]  \n"),
        vec!["one", " two "]
    );
}

#[test]
fn test_dirs_are_unique_and_removed() {
    let a = TestDir::new("a");
    let b = TestDir::new("a");
    assert_ne!(a.path(), b.path());
    let p = a.path().to_path_buf();
    a.write("f", "x");
    drop(a);
    if std::env::var_os("RSTUNNEL_KEEP_TEST_DIRS").is_none() {
        assert!(!p.exists(), "{} was not removed", p.display());
    }
}

fn verifies(ca: &X509, leaf: &X509) -> bool {
    let mut store = X509StoreBuilder::new().unwrap();
    store.add_cert(ca.clone()).unwrap();
    let store = store.build();
    let mut ctx = X509StoreContext::new().unwrap();
    let chain = Stack::new().unwrap();
    ctx.init(&store, leaf, &chain, |c| c.verify_cert()).unwrap()
}

#[test]
fn certificates_chain_to_their_own_ca_only() {
    for kind in [KeyKind::EcP256, KeyKind::Rsa2048] {
        let dir = TestDir::new("certs");
        let pki = Pki::with_kind(&dir, kind);
        let load = |p: &std::path::Path| X509::from_pem(&std::fs::read(p).unwrap()).unwrap();
        let ca = load(&pki.ca_file);
        let wrong = load(&pki.wrong_ca_file);
        let server = load(&pki.server.cert);
        let client = load(&pki.client.combined);
        let wrong_client = load(&pki.wrong_client.cert);
        assert!(
            verifies(&ca, &server),
            "{kind:?}: server cert must chain to the CA"
        );
        assert!(verifies(&ca, &client));
        assert!(
            !verifies(&ca, &wrong_client),
            "{kind:?}: wrong-CA cert must not chain to the CA"
        );
        assert!(!verifies(&wrong, &server));
        let names: Vec<String> = server
            .subject_alt_names()
            .unwrap()
            .iter()
            .map(|n| {
                n.dnsname()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{:?}", n.ipaddress()))
            })
            .collect();
        assert!(
            names.contains(&"right.name".to_string()) && names.contains(&"localhost".to_string()),
            "{names:?}"
        );
        // The combined file holds the key too, and it matches the certificate.
        let pem = std::fs::read(&pki.server.combined).unwrap();
        let key = openssl::pkey::PKey::private_key_from_pem(&pem).unwrap();
        assert!(server.public_key().unwrap().public_eq(&key));
    }
}

#[test]
fn payloads_are_deterministic_and_distinct() {
    assert_eq!(payload(1, 1000), payload(1, 1000));
    assert_ne!(payload(1, 1000), payload(2, 1000));
    assert_eq!(payload(3, 100_003).len(), 100_003);
    assert_eq!(Digest::of(&payload(5, 300_000)), payload_digest(5, 300_000));
    // Read in pieces that are not multiples of its 8-byte words: the same stream.
    let mut p = Payload::new(9, 1000);
    let mut pieces = Vec::new();
    let mut buf = [0u8; 3];
    loop {
        let n = p.fill(&mut buf);
        if n == 0 {
            break;
        }
        pieces.extend_from_slice(&buf[..n]);
    }
    assert_eq!(pieces, payload(9, 1000));
}

/// What `gnutls-serv --echo` can carry (tests/common/gnutls_cli.rs): 64-byte lines of
/// printable bytes, no NUL, the same for the same seed, streamed in any piece sizes.
#[test]
fn text_payloads_are_lines_of_printable_bytes() {
    use common::gnutls_cli::{stream_input, text_digest, Input, TextPayload};
    let mut all = vec![0u8; 64 * 100 + 10];
    let mut p = TextPayload::new(3, all.len() as u64);
    // Odd piece sizes: the line position must carry over between calls.
    let mut at = 0;
    for piece in [1, 63, 64, 100, 7].iter().cycle() {
        let end = (at + piece).min(all.len());
        at += p.fill(&mut all[at..end]);
        if at == all.len() {
            break;
        }
    }
    assert_eq!(p.fill(&mut [0u8; 8]), 0, "the payload ends at its length");
    for (i, line) in all.chunks(64).enumerate() {
        let (body, end) = line.split_at(line.len().min(63));
        assert!(
            body.iter()
                .all(|b| b.is_ascii_alphanumeric() || b"+/".contains(b)),
            "line {i}"
        );
        if line.len() == 64 {
            assert_eq!(end, b"\n", "line {i} ends the line");
        }
    }
    assert_eq!(text_digest(3, all.len() as u64), Digest::of(&all));
    assert_ne!(text_digest(4, all.len() as u64), Digest::of(&all));
    let mut sink = Vec::new();
    let d = stream_input(&Input::Text(3, all.len() as u64), &mut sink).unwrap();
    assert_eq!((d, sink), (Digest::of(&all), all));
}

#[test]
fn echo_backend_echoes_and_closes() {
    let b = Backend::echo();
    let data = payload(9, 3 * MIB as usize);
    let got = echo_session(b.addr(), &data).unwrap();
    assert!(got == data, "echo backend returned different bytes");
    assert_eq!(b.next_result(T), Digest::of(&data));
    assert_eq!(b.connections(), 1);
}

#[test]
fn digest_reply_backend_answers_after_eof() {
    let b = Backend::digest_reply();
    let mut s = connect(b.addr());
    let sent = send_payload(&mut s, 4, 100_000).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, format!("{}\n", sent.line()));
}

#[test]
fn greeter_backend_reads_after_its_eof() {
    let b = Backend::greeter(6, 70_000);
    let mut s = connect(b.addr());
    assert_eq!(read_digest(&mut s).unwrap(), payload_digest(6, 70_000));
    let sent = send_payload(&mut s, 7, 50_000).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(b.next_result(T), sent);
}

#[test]
fn probe_sees_eof_and_timeout() {
    let closer = Backend::spawn(|_s, _r| Ok(()));
    let p = probe(closer.addr(), b"x", T);
    assert!(p.received.is_empty());
    assert_ne!(p.end, End::TimedOut);
    let silent = Backend::spawn(|mut s, _r| {
        std::thread::sleep(Duration::from_secs(2));
        s.write_all(b"")
    });
    let p = probe(silent.addr(), b"x", Duration::from_millis(300));
    assert_eq!(p.end, End::TimedOut);
}

#[test]
fn syslog_fill_refuses_an_unfilled_placeholder() {
    use common::syslog::fill;
    let t = "a {one} b ${MSG} c {\n  {two_2} {Three} {} {three_x}";
    let filled = fill(t, &[("one", "1"), ("three_x", "3")]);
    assert_eq!(filled, "a 1 b ${MSG} c {\n  {two_2} {Three} {} 3");
    let left = std::panic::catch_unwind(|| fill("x {ca} {port_no}", &[("ca", "/c")]));
    let msg = left.expect_err("{port_no} left unfilled must panic");
    let msg = msg
        .downcast_ref::<String>()
        .expect("a formatted panic message");
    assert!(msg.contains("{port_no}"), "{msg}");
}

/// A line that comes again after all have arrived (a resend after a reconnect) is caught
/// within the settle period; lines that stay once each pass after it.
#[test]
fn syslog_lines_once_waits_for_late_duplicates() {
    use common::syslog::{Lines, SETTLE};
    let dir = TestDir::new("harness-syslog-once");
    let lines = Lines::new("harness", 3);
    let all: String = (0..3).map(|i| format!("{}\n", lines.line(i))).collect();
    let out = dir.write("once.log", &all);
    let started = std::time::Instant::now();
    lines.wait_all_once(&out, T).expect("every line once");
    assert!(
        started.elapsed() >= SETTLE,
        "returned before the settle period"
    );

    let out = dir.write("twice.log", &all);
    let late = lines.line(1);
    let writer = {
        let out = out.clone();
        std::thread::spawn(move || {
            std::thread::sleep(SETTLE / 4);
            let mut f = std::fs::OpenOptions::new().append(true).open(&out).unwrap();
            writeln!(f, "{late}").unwrap();
        })
    };
    let e = lines
        .wait_all_once(&out, T)
        .expect_err("a late duplicate must fail");
    writer.join().unwrap();
    assert!(e.contains("more than once") && e.contains("(1, 2)"), "{e}");
}
