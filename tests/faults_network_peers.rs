//! Network faults from the TLS peers (issue 8): peers that reset, truncate, send garbage
//! or stall the handshake, and a sniffer on the TLS port. The target-side faults (refused,
//! black-holed, not reading, tiny writes and bursts, half-close, idle) are in
//! `tests/faults_network_targets.rs`.
//!
//! Each case runs rstunnel on both sides (a [`TunnelPair`]) unless a foreign TLS peer is
//! the point (raw TCP or the `openssl` crate then plays it), asserts a precise outcome within
//! a bound, checks afterwards that both tunnel processes are alive and serve a fresh session,
//! counts every byte that should have arrived (SHA-256), and prints one
//! `summary: net <case> | load=… | faults=… | bad_inputs=N | bytes_lost=N` line
//! (scripts/test-faults.sh makes its table of them). The shared pieces are in
//! `tests/common/faults.rs`.
//!
//! The sniffer case runs in a network namespace of its own (root), so its capture sees
//! nothing but its own traffic.

mod common;
use common::process;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc::{channel, Sender};
use std::time::{Duration, Instant};

use common::faults::*;
use common::*;

/// How the victim of a fault ended on the target side, for the test to inspect.
type EndReport = Sender<(u64, Ending)>;

/// A target handler that echoes until the connection ends, then reports how many bytes it
/// saw and how the connection ended.
fn echo_and_report(tx: EndReport) -> impl FnOnce(TcpStream) + Send + 'static {
    move |mut s| {
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        let end = loop {
            match s.read(&mut buf) {
                Ok(0) => break Ending::Eof,
                Ok(n) => {
                    total += n as u64;
                    if let Err(e) = s.write_all(&buf[..n]) {
                        break Ending::Error(e.kind());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => break Ending::Error(e.kind()),
            }
        };
        let _ = tx.send((total, end));
    }
}

// ---------------------------------------------------------------------------------------
// 1. Resets mid-stream
// ---------------------------------------------------------------------------------------

/// The plain client resets its connection while data is in flight both ways.
#[test]
fn reset_from_plain_client_mid_stream() {
    let (_env, target, mut pair, mut ledger) = fault_setup("reset-plain");
    let bystander = Bystander::start(pair.entry(), 11, 4 * MIB as usize);
    let (tx, rx) = channel();
    target.push(echo_and_report(tx));
    let mut victim = connect(pair.entry());
    let victim_peer = victim.local_addr().unwrap();
    let verified = payload(12, MIB as usize);
    let ok = echo_exact(&mut victim, &verified);
    ledger.bytes(&verified, if ok { &verified } else { &[] });
    assert!(ok, "the victim's first 1 MiB did not echo intact");
    // Mid-stream: more data on the way that will never be read, then RST.
    let _ = victim.write_all(&payload(13, 256 * 1024));
    reset(victim);
    let line = pair
        .client
        .try_wait_for(PROMPT, |l| is_summary_of(l, victim_peer))
        .unwrap_or_else(|| {
            pair.client
                .fail("the reset session was not closed and logged")
        });
    let (seen, end) = rx.recv_timeout(PROMPT).unwrap_or_else(|_| {
        pair.server
            .fail("the target side of the reset session never ended")
    });
    assert!(seen >= MIB, "target saw {seen} byte(s) of the victim");
    wait_summaries(&pair.server, 1, PROMPT);
    bystander.finish(&pair.client, &mut ledger);
    alive_both(&mut pair);
    fresh_plain_session(pair.entry(), 14, &pair.client, &mut ledger);
    summary(
        "reset-plain-client",
        "1MiB echo + 256KiB in flight; bystander 4MiB echo",
        "RST from plain client",
        0,
        &ledger,
    );
    println!("  client tunnel: {line}\n  target side ended: {end:?} after {seen} byte(s)");
    assert_eq!(ledger.lost(), 0);
}

/// A foreign TLS client (the `openssl` crate) resets its TCP connection to the server tunnel
/// mid-stream, without close_notify.
#[test]
fn reset_from_tls_client_peer_mid_stream() {
    let ((_dir, pki), target, mut pair, mut ledger) = fault_setup("reset-tls-client");
    let bystander = Bystander::start(pair.entry(), 21, 4 * MIB as usize);
    let (tx, rx) = channel();
    target.push(echo_and_report(tx));
    let mut victim = process::tls_connect(pair.server.addr("srv"), &pki.ca_file)
        .unwrap_or_else(|e| pair.server.fail(&format!("raw TLS client: {e:?}")));
    let victim_peer = victim.get_ref().local_addr().unwrap();
    let verified = payload(22, MIB as usize);
    let ok = echo_exact(&mut victim, &verified);
    ledger.bytes(&verified, if ok { &verified } else { &[] });
    assert!(ok, "the raw TLS client's first 1 MiB did not echo intact");
    let _ = victim.write_all(&payload(23, 256 * 1024));
    let tcp = victim.get_ref().try_clone().unwrap();
    reset(tcp);
    drop(victim);
    let line = pair
        .server
        .try_wait_for(PROMPT, |l| is_summary_of(l, victim_peer))
        .unwrap_or_else(|| {
            pair.server
                .fail("the reset TLS session was not closed and logged")
        });
    let (seen, end) = rx.recv_timeout(PROMPT).unwrap_or_else(|_| {
        pair.server
            .fail("the target side of the reset session never ended")
    });
    bystander.finish(&pair.client, &mut ledger);
    alive_both(&mut pair);
    fresh_plain_session(pair.entry(), 24, &pair.client, &mut ledger);
    summary(
        "reset-tls-client-peer",
        "1MiB echo + 256KiB in flight; bystander 4MiB echo",
        "RST from TLS client peer",
        0,
        &ledger,
    );
    println!("  server tunnel: {line}\n  target side ended: {end:?} after {seen} byte(s)");
    assert_eq!(ledger.lost(), 0);
}

/// A foreign TLS server resets the client tunnel's TLS connection mid-stream.
#[test]
fn reset_from_tls_server_peer_mid_stream() {
    let dir = TestDir::new("reset-tls-server");
    let pki = Pki::new(&dir);
    let acceptor = tls_acceptor(&pki.server);
    let server = Target::tls_echo(acceptor.clone());
    let mut client = Tunnel::start(&dir, "client", &client_body(server.addr(), ""));
    let mut ledger = Ledger::default();
    let bystander = Bystander::start(client.addr("cli"), 31, 4 * MIB as usize);
    // The victim's TLS server: echoes 1 MiB, sends 256 KiB more unasked, then RST.
    server.push(move |tcp| {
        let raw = tcp.try_clone().unwrap();
        if let Ok(mut tls) = acceptor.accept(tcp) {
            let mut buf = vec![0u8; MIB as usize];
            // The ack byte says the echo reached the plain client: an RST discards what is
            // still in our send buffer, so resetting earlier would lose it on our side.
            let mut ack = [0u8; 1];
            if tls.read_exact(&mut buf).is_ok()
                && tls.write_all(&buf).is_ok()
                && tls.read_exact(&mut ack).is_ok()
            {
                let _ = tls.write_all(&payload(33, 256 * 1024));
            }
            reset(raw);
        }
    });
    let mut victim = connect(client.addr("cli"));
    let victim_peer = victim.local_addr().unwrap();
    let verified = payload(32, MIB as usize);
    let ok = echo_exact(&mut victim, &verified);
    ledger.bytes(&verified, if ok { &verified } else { &[] });
    assert!(ok, "the victim's first 1 MiB did not echo intact");
    victim.write_all(b"k").unwrap();
    let (_, end, took) = read_until_end(&mut victim, PROMPT);
    assert_ne!(end, Ending::Hung, "the plain client was left hanging");
    client
        .try_wait_for(PROMPT, |l| is_summary_of(l, victim_peer))
        .unwrap_or_else(|| client.fail("the reset session was not closed and logged"));
    bystander.finish(&client, &mut ledger);
    assert_alive(&mut client);
    fresh_plain_session(client.addr("cli"), 34, &client, &mut ledger);
    summary(
        "reset-tls-server-peer",
        "1MiB echo + 256KiB in flight; bystander 4MiB echo",
        "RST from TLS server peer",
        0,
        &ledger,
    );
    println!("  plain client saw {end:?} {took:?} after the RST");
    assert_eq!(ledger.lost(), 0);
}

/// The target resets while the plain client is still sending.
#[test]
fn reset_from_target_mid_stream() {
    let (_env, target, mut pair, mut ledger) = fault_setup("reset-target");
    let bystander = Bystander::start(pair.entry(), 41, 4 * MIB as usize);
    // Echo exactly 1 MiB, then RST while more is arriving.
    target.push(|mut s| {
        let mut buf = vec![0u8; MIB as usize];
        if s.read_exact(&mut buf).is_ok() && s.write_all(&buf).is_ok() {
            let mut more = [0u8; 1024];
            let _ = s.read(&mut more);
        }
        reset(s);
    });
    let mut victim = connect_with_timeout(pair.entry(), PROMPT);
    let victim_peer = victim.local_addr().unwrap();
    let mut w = victim.try_clone().unwrap();
    let (echoed_tx, echoed_rx) = channel::<()>();
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&payload(42, MIB as usize));
        // Streams on once the echo is back (so the target's reset cannot cut it short, and
        // the target sees these bytes only after the echo was delivered), until the tunnel
        // closes the connection.
        let _ = echoed_rx.recv_timeout(PROMPT);
        let _ = w.write_all(&payload(43, 8 * MIB as usize));
    });
    let mut first = vec![0u8; MIB as usize];
    let ok = victim.read_exact(&mut first).is_ok() && first == payload(42, MIB as usize);
    let _ = echoed_tx.send(());
    ledger.bytes(&payload(42, MIB as usize), if ok { &first } else { &[] });
    assert!(
        ok,
        "the 1 MiB echoed before the reset did not arrive intact"
    );
    let (_, end, _) = read_until_end(&mut victim, PROMPT);
    assert_ne!(end, Ending::Hung, "the plain client was left hanging");
    writer.join().unwrap();
    pair.client
        .try_wait_for(PROMPT, |l| is_summary_of(l, victim_peer))
        .unwrap_or_else(|| {
            pair.client
                .fail("the reset session was not closed and logged")
        });
    let reset_line = pair
        .server
        .try_wait_for(PROMPT, |l| l.contains("Session summary:"))
        .unwrap_or_else(|| {
            pair.server
                .fail("the server tunnel did not log the reset session")
        });
    bystander.finish(&pair.client, &mut ledger);
    alive_both(&mut pair);
    fresh_plain_session(pair.entry(), 44, &pair.client, &mut ledger);
    summary(
        "reset-target",
        "1MiB echo + 8MiB streaming; bystander 4MiB echo",
        "RST from target",
        0,
        &ledger,
    );
    println!("  server tunnel: {reset_line}\n  plain client saw {end:?}");
    assert_eq!(ledger.lost(), 0);
}

// ---------------------------------------------------------------------------------------
// 2. TLS truncation (no close_notify)
// ---------------------------------------------------------------------------------------

/// A foreign TLS client sends 1 MiB and FINs its TCP without close_notify (at a record
/// boundary), then a second one does the same in the middle of a record.
#[test]
fn tls_truncation_without_close_notify() {
    let ((dir, pki), target, mut pair, mut ledger) = fault_setup("truncation");

    // a) At a record boundary: everything sent must reach the target, followed by EOF.
    let (tx, rx) = channel();
    target.push(move |mut s| {
        let d = read_digest(&mut s);
        let _ = tx.send(d.map_err(|e| e.kind()));
    });
    let mut tls = process::tls_connect(pair.server.addr("srv"), &pki.ca_file)
        .unwrap_or_else(|e| pair.server.fail(&format!("raw TLS client: {e:?}")));
    let peer_a = tls.get_ref().local_addr().unwrap();
    let sent = send_payload(&mut tls, 51, MIB).unwrap();
    let mut tcp = tls.get_ref().try_clone().unwrap();
    tcp.shutdown(Shutdown::Write).unwrap();
    drop(tls); // frees the SSL object: no close_notify is ever sent
    let got = rx
        .recv_timeout(PROMPT)
        .unwrap_or_else(|_| {
            pair.server
                .fail("the target never saw the end of the truncated session")
        })
        .unwrap_or_else(|e| {
            pair.server
                .fail(&format!("target read error after truncation: {e:?}"))
        });
    ledger.flow(&sent, &got);
    assert_eq!(got, sent, "bytes sent before the truncation");
    // The tunnel closes its TLS side too: the raw client sees the end, no hang.
    tcp.set_read_timeout(Some(PROMPT)).unwrap();
    let (_, end_a, _) = read_until_end(&mut tcp, PROMPT);
    assert_ne!(
        end_a,
        Ending::Hung,
        "the truncating peer's socket was left open"
    );
    let line_a = pair
        .server
        .try_wait_for(PROMPT, |l| is_summary_of(l, peer_a))
        .unwrap_or_else(|| pair.server.fail("the truncated session was not logged"));
    assert!(
        pair.server.has_log("closed without close_notify"),
        "the truncation is logged as such"
    );

    // b) Mid-record: 512 KiB echoed (so verified delivered), then a record header announcing
    //    16 KiB followed by 100 bytes and FIN.
    let mut tls = process::tls_connect(pair.server.addr("srv"), &pki.ca_file)
        .unwrap_or_else(|e| pair.server.fail(&format!("raw TLS client: {e:?}")));
    let peer_b = tls.get_ref().local_addr().unwrap();
    let data = payload(52, 512 * 1024);
    let ok = echo_exact(&mut tls, &data);
    ledger.bytes(&data, if ok { &data } else { &[] });
    assert!(
        ok,
        "512 KiB before the mid-record truncation did not echo intact"
    );
    let mut tcp = tls.get_ref().try_clone().unwrap();
    let mut partial = vec![0x17, 0x03, 0x03, 0x40, 0x00];
    partial.extend_from_slice(&payload(53, 100));
    tcp.write_all(&partial).unwrap();
    tcp.shutdown(Shutdown::Write).unwrap();
    drop(tls);
    tcp.set_read_timeout(Some(PROMPT)).unwrap();
    let (_, end_b, took_b) = read_until_end(&mut tcp, PROMPT);
    assert_ne!(
        end_b,
        Ending::Hung,
        "a mid-record truncation left the session hanging"
    );
    let line_b = pair
        .server
        .try_wait_for(PROMPT, |l| is_summary_of(l, peer_b))
        .unwrap_or_else(|| pair.server.fail("the mid-record truncation was not logged"));

    // Logged like the boundary case: OpenSSL reports both as an unexpected EOF.
    pair.server
        .wait_for_logs("closed without close_notify", 2, PROMPT);

    // c) The mirror: a foreign TLS server sends 1 MiB to the client tunnel and FINs without
    //    close_notify; the plain client gets every byte, then EOF.
    let acceptor = tls_acceptor(&pki.server);
    let server = Target::serve(TcpListener::bind("127.0.0.1:0").unwrap(), move |tcp| {
        let mut raw = tcp.try_clone().unwrap();
        if let Ok(mut tls) = acceptor.accept(tcp) {
            if send_payload(&mut tls, 54, MIB).is_ok() {
                let _ = raw.shutdown(Shutdown::Write);
                let mut sink = Vec::new();
                let _ = raw.read_to_end(&mut sink);
            }
        }
    });
    let mut client2 = Tunnel::start(&dir, "client2", &client_body(server.addr(), ""));
    let mut plain = connect_with_timeout(client2.addr("cli"), PROMPT);
    let got = read_digest(&mut plain)
        .unwrap_or_else(|e| client2.fail(&format!("plain client after truncation: {e}")));
    let expected = payload_digest(54, MIB);
    ledger.flow(&expected, &got);
    assert_eq!(got, expected, "bytes the TLS server sent before truncating");
    client2.wait_for_log("closed without close_notify", PROMPT);

    alive_both(&mut pair);
    assert_alive(&mut client2);
    fresh_plain_session(pair.entry(), 55, &pair.client, &mut ledger);
    summary(
        "tls-truncation",
        "1MiB up + 512KiB echo + 1MiB down",
        "FIN without close_notify x3 (2 at record boundary, 1 mid-record)",
        1,
        &ledger,
    );
    println!("  boundary: {line_a}\n  mid-record ({end_b:?} after {took_b:?}): {line_b}");
    assert_eq!(ledger.lost(), 0);
}

// ---------------------------------------------------------------------------------------
// 3. Garbage instead of a ClientHello / ServerHello
// ---------------------------------------------------------------------------------------

#[test]
fn garbage_instead_of_hello() {
    // TIMEOUTbusy far above the probe timeout: each input must fail on its own merits.
    let ((dir, _pki), target, mut pair, mut ledger) =
        fault_setup_with("garbage", "TIMEOUTbusy = 30", "");
    let mut http = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec();
    http.extend_from_slice(b"marker-in-clear");
    let inputs: Vec<(&str, Vec<u8>)> = vec![
        ("random 4KiB", payload(61, 4096)),
        ("HTTP request", http),
        (
            "record length 0xffff",
            vec![0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0x00],
        ),
        (
            "ClientHello length 0xffffff",
            vec![0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0xff, 0xff, 0xff],
        ),
        ("zeros 1KiB", vec![0u8; 1024]),
        ("SSLv2-style hello", {
            let mut v = vec![
                0x80, 0x2e, 0x01, 0x00, 0x02, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10,
            ];
            v.extend_from_slice(&payload(62, 0x25));
            v
        }),
    ];
    let srv = pair.server.addr("srv");
    for (what, data) in &inputs {
        let p = probe(srv, data, PROMPT);
        assert_ne!(
            p.end,
            End::TimedOut,
            "{what}: the server tunnel left the connection hanging"
        );
        assert!(
            only_tls_alerts(&p.received),
            "{what}: the server tunnel answered something other than a TLS alert: {:02x?}",
            &p.received[..p.received.len().min(64)]
        );
    }
    let failures = pair
        .server
        .wait_for_logs("SSL_accept:", inputs.len(), PROMPT);
    assert_eq!(target.accepted(), 0, "garbage must never reach the target");

    // Toward the client tunnel: a "server" that answers the ClientHello with an HTTP error.
    let (tx, rx) = channel();
    let fake = Target::serve(TcpListener::bind("127.0.0.1:0").unwrap(), move |mut s| {
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).unwrap_or(0);
        let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        let _ = s.shutdown(Shutdown::Write);
        let mut rest = buf[..n].to_vec();
        let _ = s.read_to_end(&mut rest);
        let _ = tx.send(rest);
    });
    let mut client2 = Tunnel::start(&dir, "client2", &client_body(fake.addr(), ""));
    let p = probe(
        client2.addr("cli"),
        b"plain data for a broken server",
        PROMPT,
    );
    assert_ne!(
        p.end,
        End::TimedOut,
        "the client tunnel left the plain client hanging"
    );
    assert!(
        p.received.is_empty(),
        "the plain client got {:?}",
        p.received
    );
    let seen = rx
        .recv_timeout(PROMPT)
        .expect("fake server saw the client tunnel");
    let types = tls_record_types(&seen).unwrap_or_else(|| {
        panic!("the client tunnel sent something that is not TLS records: {seen:02x?}")
    });
    assert!(
        types.iter().all(|t| *t == 0x16 || *t == 0x15),
        "only a ClientHello and alerts may go to a broken server; record types {types:?}"
    );
    client2.wait_for_log("SSL_connect:", PROMPT);

    alive_both(&mut pair);
    assert_alive(&mut client2);
    fresh_plain_session(pair.entry(), 63, &pair.client, &mut ledger);
    summary(
        "garbage-hello",
        "6 garbage ClientHellos + 1 garbage ServerHello",
        "random, HTTP, record len 0xffff, msg len 0xffffff, zeros, SSLv2, HTTP reply",
        inputs.len() + 1,
        &ledger,
    );
    for f in failures {
        println!("  {f}");
    }
    assert_eq!(ledger.lost(), 0);
}

// ---------------------------------------------------------------------------------------
// 4./5. Stalled handshakes
// ---------------------------------------------------------------------------------------

/// Half a real ClientHello, then nothing: the server tunnel ends it after TIMEOUTbusy while
/// serving other sessions at once.
#[test]
fn half_client_hello_ends_after_timeout_busy() {
    let (_env, target, mut pair, mut ledger) =
        fault_setup_with("half-hello", "TIMEOUTbusy = 2", "");
    let hello = client_hello();
    let mut s = connect_with_timeout(pair.server.addr("srv"), PROMPT);
    let started = Instant::now();
    s.write_all(&hello[..hello.len() / 2]).unwrap();
    // Meanwhile a full session goes through at once.
    fresh_plain_session(pair.entry(), 71, &pair.client, &mut ledger);
    let quick = started.elapsed();
    let (got, end, _) = read_until_end(&mut s, PROMPT);
    let took = started.elapsed();
    assert_ne!(end, Ending::Hung, "the half ClientHello was never ended");
    assert!(
        only_tls_alerts(&got),
        "reply to half a ClientHello: {got:02x?}"
    );
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_secs(7),
        "the half ClientHello ended after {took:?}; TIMEOUTbusy is 2 s"
    );
    assert!(
        quick < Duration::from_millis(1800),
        "another session waited behind the stalled handshake ({quick:?})"
    );
    pair.server
        .wait_for_log("SSL_accept: TIMEOUTbusy exceeded", PROMPT);
    assert_eq!(
        target.accepted(),
        1,
        "only the full session reached the target"
    );
    alive_both(&mut pair);
    fresh_plain_session(pair.entry(), 72, &pair.client, &mut ledger);
    summary(
        "half-client-hello",
        "half ClientHello; 2 x 256KiB echo",
        &format!(
            "ClientHello cut at {} of {} bytes, ended after {took:.1?}",
            hello.len() / 2,
            hello.len()
        ),
        1,
        &ledger,
    );
    assert_eq!(ledger.lost(), 0);
}

/// A server that accepts TCP and never answers the handshake: the client tunnel gives up
/// after TIMEOUTbusy and closes the plain client's connection.
#[test]
fn silent_tls_server_ends_after_timeout_busy() {
    let dir = TestDir::new("silent-server");
    let pki = Pki::new(&dir);
    let server = Target::tls_echo(tls_acceptor(&pki.server));
    let (tx, rx) = channel();
    server.push(move |mut s| {
        // Reads (the ClientHello) and never writes.
        let mut seen = Vec::new();
        let _ = s.read_to_end(&mut seen);
        let _ = tx.send(seen);
    });
    let mut client = Tunnel::start(
        &dir,
        "client",
        &client_body(server.addr(), "TIMEOUTbusy = 2"),
    );
    let mut ledger = Ledger::default();
    let mut s = connect_with_timeout(client.addr("cli"), PROMPT);
    let started = Instant::now();
    let _ = s.write_all(b"plain bytes waiting for a handshake\n");
    let (got, end, _) = read_until_end(&mut s, PROMPT);
    let took = started.elapsed();
    assert_ne!(end, Ending::Hung, "the plain client was left hanging");
    assert!(got.is_empty(), "plain client got {got:?}");
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_secs(7),
        "the stalled handshake ended after {took:?}; TIMEOUTbusy is 2 s"
    );
    client.wait_for_log("SSL_connect: TIMEOUTbusy exceeded", PROMPT);
    let seen = rx
        .recv_timeout(PROMPT)
        .expect("the silent server saw the end");
    assert!(
        tls_record_types(&seen).is_some(),
        "the silent server got something other than TLS records"
    );
    assert_alive(&mut client);
    fresh_plain_session(client.addr("cli"), 81, &client, &mut ledger);
    summary(
        "silent-tls-server",
        "1 plain line; 256KiB echo",
        &format!("server never answers the handshake, ended after {took:.1?}"),
        0,
        &ledger,
    );
    assert_eq!(ledger.lost(), 0);
}

// ---------------------------------------------------------------------------------------

// 10. Sniffer: nothing in clear on the TLS side
// ---------------------------------------------------------------------------------------

/// tcpdump on the TLS port (in a private namespace) while markers cross the tunnels in a
/// normal session, a failed handshake (client trusts the wrong CA), a target that
/// disconnects first and a refused target: the TLS capture holds no marker, while a capture
/// of the plain ports does (so the search works), and the TLS capture is not empty.
#[test]
fn sniffer_sees_no_plaintext_on_the_tls_port() {
    in_netns(|| {
        let dir = TestDir::new("sniffer");
        let pki = Pki::new(&dir);
        let mut rnd = [0u8; 32];
        openssl::rand::rand_bytes(&mut rnd).unwrap();
        let marker_up = hex(&rnd).into_bytes();
        openssl::rand::rand_bytes(&mut rnd).unwrap();
        let marker_down = hex(&rnd).into_bytes();
        let up = marker_up.repeat(1000);
        let down = marker_down.repeat(100);

        // Echo by default (the fresh session at the end); the marker sessions queue their own.
        let target = Target::echo();
        let refused_port = process::free_port();
        let mut server = Tunnel::start(
            &dir,
            "server",
            &format!(
                "cert = {cert}\n[srv]\naccept = 127.0.0.1:0\nconnect = {t}\n\
                 [srv_refused]\naccept = 127.0.0.1:0\nconnect = 127.0.0.1:{refused_port}\n",
                cert = pki.server.combined.display(),
                t = target.addr()
            ),
        );
        let mut client = Tunnel::start(
            &dir,
            "client",
            &format!(
                "client = yes\n[cli]\naccept = 127.0.0.1:0\nconnect = {srv}\n\
                 [cli_badca]\naccept = 127.0.0.1:0\nconnect = {srv}\nCAfile = {wrong}\nverifyChain = yes\n\
                 [cli_refused]\naccept = 127.0.0.1:0\nconnect = {refused}\n",
                srv = server.addr("srv"),
                refused = server.addr("srv_refused"),
                wrong = pki.wrong_ca_file.display()
            ),
        );
        let tls_ports = [server.port("srv"), server.port("srv_refused")];
        let plain_ports = [client.port("cli"), target.addr().port()];
        let mut tls_cap = Capture::start(
            dir.join("tls.pcap"),
            &format!("tcp port {} or tcp port {}", tls_ports[0], tls_ports[1]),
        );
        let mut plain_cap = Capture::start(
            dir.join("plain.pcap"),
            &format!("tcp port {} or tcp port {}", plain_ports[0], plain_ports[1]),
        );
        let mut ledger = Ledger::default();

        // a) A normal session: markers both ways (the target sends its own, then echoes).
        target.push({
            let down = down.clone();
            move |mut s| {
                if s.write_all(&down).is_ok() {
                    let _ = echo_stream(s);
                }
            }
        });
        let got = echo_session(client.addr("cli"), &up).expect("normal session");
        let mut expected = down.clone();
        expected.extend_from_slice(&up);
        ledger.bytes(&expected, &got);
        assert!(
            got == expected,
            "normal session: {} of {} byte(s), not equal",
            got.len(),
            expected.len()
        );
        // b) The client tunnel trusts the wrong CA: the handshake fails after the plain
        //    client has already sent its marker.
        let p = probe(client.addr("cli_badca"), &up[..6400], PROMPT);
        assert_ne!(p.end, End::TimedOut);
        assert!(p.received.is_empty(), "a failed handshake delivered data");
        client.wait_for_log("SSL_connect:", PROMPT);
        // c) The target sends its marker and disconnects first (RST) while the client is
        //    still sending markers.
        target.push({
            let down = down.clone();
            move |mut s| {
                let _ = s.write_all(&down);
                let mut buf = [0u8; 640];
                let _ = s.read(&mut buf);
                reset(s);
            }
        });
        let mut s = connect_with_timeout(client.addr("cli"), PROMPT);
        let mut w = s.try_clone().unwrap();
        let up2 = up.clone();
        let writer = std::thread::spawn(move || {
            for _ in 0..8 {
                if w.write_all(&up2).is_err() {
                    break;
                }
            }
        });
        let (_, end, _) = read_until_end(&mut s, PROMPT);
        assert_ne!(
            end,
            Ending::Hung,
            "target-first disconnect left the client hanging"
        );
        writer.join().unwrap();
        // d) A refused target, with the plain client sending its marker.
        let p = probe(client.addr("cli_refused"), &up[..6400], PROMPT);
        assert_ne!(p.end, End::TimedOut);
        server.wait_for_log("Connection refused", PROMPT);

        let tls_err = tls_cap.stop();
        let plain_err = plain_cap.stop();
        let tls_pcap = std::fs::read(&tls_cap.file).unwrap();
        let plain_pcap = std::fs::read(&plain_cap.file).unwrap();
        let tls_pkts = pcap_tcp_packets(&tls_pcap);
        let payload_pkts = tls_pkts.iter().filter(|p| p.2 > 0).count();
        let per_port: Vec<usize> = tls_ports
            .iter()
            .map(|port| {
                tls_pkts
                    .iter()
                    .filter(|p| p.2 > 0 && (p.0 == *port || p.1 == *port))
                    .count()
            })
            .collect();
        // Session a) alone put 64,000 + 6,400 bytes of markers through port 0 both ways.
        let tls_bytes: usize = tls_pkts
            .iter()
            .filter(|p| p.0 == tls_ports[0] || p.1 == tls_ports[0])
            .map(|p| p.2)
            .sum();
        let leaked = contains(&tls_pcap, &marker_up) || contains(&tls_pcap, &marker_down);
        let control = contains(&plain_pcap, &marker_up) && contains(&plain_pcap, &marker_down);
        assert_alive(&mut server);
        assert_alive(&mut client);
        fresh_plain_session(client.addr("cli"), 171, &client, &mut ledger);
        summary(
            "sniffer-no-plaintext",
            "64KiB+6.4KiB markers up x4 sessions, 6.4KiB markers down",
            "wrong CA, target RST first, target refused",
            0,
            &ledger,
        );
        println!(
            "  TLS capture: {} packets, {payload_pkts} with payload (per port {per_port:?}), {tls_bytes} payload bytes on [srv]; plain capture {} bytes",
            tls_pkts.len(),
            plain_pcap.len()
        );
        for err in [&tls_err, &plain_err] {
            assert_eq!(
                dropped_by_kernel(err),
                Some(0),
                "tcpdump dropped packets (or printed no count): {err}"
            );
        }
        assert!(
            control,
            "the plain-side capture lacks the markers: the search would not see a leak"
        );
        assert!(
            per_port.iter().all(|n| *n > 0) && payload_pkts >= 10,
            "the TLS capture is (nearly) empty: {per_port:?}"
        );
        assert!(
            tls_bytes >= up.len() + down.len(),
            "the TLS capture holds {tls_bytes} payload bytes, fewer than the markers sent"
        );
        assert!(!leaked, "a plaintext marker crossed the TLS port in clear");
        assert_eq!(ledger.lost(), 0);
    })
}
