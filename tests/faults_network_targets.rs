//! Network faults on the target side and in the streams (issue 8): targets that refuse,
//! black-hole or stop reading, single-byte writes and 64 MiB bursts both ways, half-close in
//! one direction while the other streams, idle sessions. The faults from the TLS peers are in
//! `tests/faults_network_peers.rs`.
//!
//! Each case runs rstunnel on both sides (a [`TunnelPair`]) unless a foreign TLS peer is
//! the point (raw TCP or the `openssl` crate then plays it), asserts a precise outcome within
//! a bound, checks afterwards that both tunnel processes are alive and serve a fresh session,
//! counts every byte that should have arrived (SHA-256), and prints one
//! `summary: net <case> | load=… | faults=… | bad_inputs=N | bytes_lost=N` line
//! (scripts/test-faults.sh makes its table of them). The shared pieces are in
//! `tests/common/faults.rs`.
//!
//! The black-hole case runs in a network namespace of its own (root), so its iptables rule
//! sees nothing but its own traffic.

mod common;
use common::process;

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::faults::*;
use common::*;

// 6. Targets: refused, black-holed, not reading
// ---------------------------------------------------------------------------------------

#[test]
fn target_refused_then_back() {
    let dir = TestDir::new("refused");
    let pki = Pki::new(&dir);
    let port = process::free_port();
    let target_addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut pair = TunnelPair::start(&dir, &pki, target_addr, "", "");
    let mut ledger = Ledger::default();
    let started = Instant::now();
    let p = probe(pair.entry(), b"to a target that is down\n", PROMPT);
    assert_ne!(
        p.end,
        End::TimedOut,
        "a refused target left the plain client hanging"
    );
    assert!(p.received.is_empty(), "plain client got {:?}", p.received);
    let took = started.elapsed();
    let refused = pair.server.wait_for_log("Connection refused", PROMPT);
    wait_summaries(&pair.server, 1, PROMPT);
    wait_summaries(&pair.client, 1, PROMPT);
    // The target comes up on the same port: the next session through the same tunnels works.
    let listener = TcpListener::bind(target_addr).expect("rebinding the target's port");
    let _target = Target::serve(listener, |s| {
        let _ = echo_stream(s);
    });
    alive_both(&mut pair);
    fresh_plain_session(pair.entry(), 91, &pair.client, &mut ledger);
    summary(
        "target-refused",
        "1 plain line; 256KiB echo",
        &format!("target port closed (ended after {took:.1?})"),
        0,
        &ledger,
    );
    println!("  {refused}");
    assert_eq!(ledger.lost(), 0);
}

/// A target whose SYNs vanish (192.0.2.99 behind an iptables DROP, in a private network
/// namespace): the server tunnel gives up after TIMEOUTconnect and the plain client's
/// connection is closed; another service of the same processes keeps serving meanwhile.
#[test]
fn target_black_holed_ends_after_timeout_connect() {
    in_netns(|| {
        ip(&["addr", "add", "192.0.2.1/24", "dev", "lo"]);
        iptables(&["-A", "OUTPUT", "-d", "192.0.2.99", "-j", "DROP"]);
        let dir = TestDir::new("blackhole");
        let pki = Pki::new(&dir);
        let target = Target::echo();
        let mut server = Tunnel::start(
            &dir,
            "server",
            &format!(
                "cert = {}\n[dead]\naccept = 127.0.0.1:0\nconnect = 192.0.2.99:9\nTIMEOUTconnect = 2\n\
                 [alive]\naccept = 127.0.0.1:0\nconnect = {}\n",
                pki.server.combined.display(),
                target.addr()
            ),
        );
        let mut client = Tunnel::start(
            &dir,
            "client",
            &format!(
                "client = yes\n[cli_dead]\naccept = 127.0.0.1:0\nconnect = {}\n\
                 [cli]\naccept = 127.0.0.1:0\nconnect = {}\n",
                server.addr("dead"),
                server.addr("alive")
            ),
        );
        let mut ledger = Ledger::default();
        let mut s = connect_with_timeout(client.addr("cli_dead"), PROMPT);
        let started = Instant::now();
        let _ = s.write_all(b"to a black hole\n");
        // While that session waits for its target, the other service answers at once.
        fresh_plain_session(client.addr("cli"), 101, &client, &mut ledger);
        let quick = started.elapsed();
        let (got, end, _) = read_until_end(&mut s, PROMPT);
        let took = started.elapsed();
        assert_ne!(end, Ending::Hung, "the black-holed session was never ended");
        assert!(got.is_empty(), "plain client got {got:?}");
        assert!(
            took >= Duration::from_millis(1800) && took < Duration::from_secs(8),
            "the black-holed session ended after {took:?}; TIMEOUTconnect is 2 s"
        );
        assert!(
            quick < Duration::from_millis(1800),
            "the other service waited ({quick:?})"
        );
        server.wait_for_log("s_connect: connect 192.0.2.99:9", PROMPT);
        server.wait_for_log("No more addresses to connect", PROMPT);
        assert_alive(&mut server);
        assert_alive(&mut client);
        fresh_plain_session(client.addr("cli"), 102, &client, &mut ledger);
        summary(
            "target-black-holed",
            "1 plain line; 2 x 256KiB echo",
            &format!("SYNs to 192.0.2.99 dropped (iptables, netns), ended after {took:.1?}"),
            0,
            &ledger,
        );
        assert_eq!(ledger.lost(), 0);
    })
}

/// A target that accepts but does not read: the sender blocks, neither tunnel buffers the
/// stream in memory; once the target reads, every byte arrives.
#[test]
fn target_not_reading_applies_back_pressure() {
    const TOTAL: u64 = 256 * MIB;
    let (_env, target, mut pair, mut ledger) = fault_setup("backpressure");
    // Warm up (thread stacks, TLS buffers) so the baseline is a process that has served.
    fresh_plain_session(pair.entry(), 111, &pair.client, &mut ledger);
    let pids = [tunnel_pid(&pair.client), tunnel_pid(&pair.server)];
    let base = pids.map(rss_kib);

    let (go_tx, go_rx) = channel::<()>();
    let (res_tx, res_rx) = channel();
    target.push(move |mut s| {
        let _ = go_rx.recv_timeout(Duration::from_secs(60));
        let _ = res_tx.send(read_digest(&mut s).map_err(|e| e.to_string()));
    });
    let written = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let mut s = connect(pair.entry());
    let sender = {
        let (written, done) = (written.clone(), done.clone());
        std::thread::spawn(move || {
            let mut p = Payload::new(112, TOTAL);
            let mut buf = vec![0u8; 64 * 1024];
            let mut h = openssl::sha::Sha256::new();
            loop {
                let n = p.fill(&mut buf);
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                if let Err(e) = s.write_all(&buf[..n]) {
                    done.store(true, Ordering::SeqCst);
                    return Err(e.to_string());
                }
                written.fetch_add(n as u64, Ordering::SeqCst);
            }
            s.shutdown(Shutdown::Write).unwrap();
            done.store(true, Ordering::SeqCst);
            Ok(Digest {
                sha: h.finish(),
                bytes: TOTAL,
            })
        })
    };
    // Wait for the sender to stall: no progress for 1 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = (u64::MAX, Instant::now());
    let mut peak = base;
    let stalled_at = loop {
        std::thread::sleep(Duration::from_millis(100));
        for (i, pid) in pids.iter().enumerate() {
            peak[i] = peak[i].max(rss_kib(*pid));
        }
        let w = written.load(Ordering::SeqCst);
        if done.load(Ordering::SeqCst) {
            pair.client.fail(&format!(
                "the sender finished ({w} bytes) although the target reads nothing"
            ));
        }
        if w != last.0 {
            last = (w, Instant::now());
        } else if last.1.elapsed() >= Duration::from_secs(1) {
            break w;
        }
        assert!(Instant::now() < deadline, "the sender never stalled");
    };
    // Let it read; sample RSS while the stream drains.
    go_tx.send(()).unwrap();
    while !done.load(Ordering::SeqCst) {
        for (i, pid) in pids.iter().enumerate() {
            peak[i] = peak[i].max(rss_kib(*pid));
        }
    }
    let sent = sender
        .join()
        .unwrap()
        .unwrap_or_else(|e| pair.client.fail(&format!("sender: {e}")));
    let got = res_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the target reported")
        .unwrap_or_else(|e| pair.server.fail(&format!("target: {e}")));
    ledger.flow(&sent, &got);
    let growth: Vec<i64> = (0..2).map(|i| peak[i] as i64 - base[i] as i64).collect();
    alive_both(&mut pair);
    fresh_plain_session(pair.entry(), 113, &pair.client, &mut ledger);
    summary(
        "target-backpressure",
        "256MiB up",
        &format!(
            "target not reading until the sender stalled at {} MiB",
            stalled_at / MIB
        ),
        0,
        &ledger,
    );
    println!(
        "  RSS KiB client {} -> peak {}, server {} -> peak {}",
        base[0], peak[0], base[1], peak[1]
    );
    assert_eq!(got, sent, "the stream after the target started reading");
    assert!(
        stalled_at < 64 * MIB,
        "the sender got {stalled_at} bytes out before blocking: something buffers without bound"
    );
    for (name, g) in ["client", "server"].iter().zip(&growth) {
        assert!(
            *g < 20 * 1024,
            "the {name} tunnel's RSS grew by {g} KiB under back-pressure"
        );
    }
    assert_eq!(ledger.lost(), 0);
}

// ---------------------------------------------------------------------------------------
// 7. Tiny writes and big bursts, both directions at once
// ---------------------------------------------------------------------------------------

/// Both ends write `len` bytes at once in `chunk`-byte writes; returns (client→target sent,
/// received; target→client sent, received).
fn both_ways(
    entry: SocketAddr,
    target: &Target,
    len: usize,
    chunk: usize,
    seeds: (u64, u64),
) -> [(Digest, Digest); 2] {
    fn write_chunks(mut w: TcpStream, data: Vec<u8>, chunk: usize) -> std::io::Result<()> {
        w.set_nodelay(true)?;
        for c in data.chunks(chunk) {
            w.write_all(c)?;
        }
        w.shutdown(Shutdown::Write)
    }
    let (tx, rx) = channel();
    target.push(move |mut s| {
        let w = s.try_clone().unwrap();
        let out = payload(seeds.1, len);
        let writer = std::thread::spawn(move || write_chunks(w, out, chunk));
        let got = read_digest(&mut s);
        let wrote = writer.join().unwrap();
        let _ = tx.send((
            got.map_err(|e| e.to_string()),
            wrote.map_err(|e| e.to_string()),
        ));
    });
    let mut s = connect(entry);
    let w = s.try_clone().unwrap();
    let out = payload(seeds.0, len);
    let writer = std::thread::spawn(move || write_chunks(w, out, chunk));
    let got_here = read_digest(&mut s).expect("client reading");
    writer.join().unwrap().expect("client writing");
    let (got_there, wrote_there) = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("target report");
    wrote_there.expect("target writing");
    [
        (
            payload_digest(seeds.0, len as u64),
            got_there.expect("target reading"),
        ),
        (payload_digest(seeds.1, len as u64), got_here),
    ]
}

/// One both-ways case: `len` bytes each way in `chunk`-byte writes (payload seeds
/// `seed`, `seed + 1`; `seed + 2` for the fresh session after it), then the `summary:` line
/// (`case`, `load`, `faults`) and the checks, `what` naming the stream in their messages.
struct BothWays {
    label: &'static str,
    len: usize,
    chunk: usize,
    seed: u64,
    case: &'static str,
    load: &'static str,
    faults: &'static str,
    what: &'static str,
}

fn both_ways_case(c: BothWays) {
    let (_env, target, mut pair, mut ledger) = fault_setup(c.label);
    let started = Instant::now();
    let flows = both_ways(pair.entry(), &target, c.len, c.chunk, (c.seed, c.seed + 1));
    let took = started.elapsed();
    for (sent, got) in &flows {
        ledger.flow(sent, got);
    }
    alive_both(&mut pair);
    fresh_plain_session(pair.entry(), c.seed + 2, &pair.client, &mut ledger);
    summary(c.case, c.load, c.faults, 0, &ledger);
    println!("  took {took:?}");
    for (sent, got) in &flows {
        assert_eq!(got, sent, "{}", c.what);
    }
    assert_eq!(ledger.lost(), 0);
}

#[test]
fn one_byte_writes_both_directions() {
    both_ways_case(BothWays {
        label: "one-byte",
        len: 20_000,
        chunk: 1,
        seed: 121,
        case: "one-byte-writes",
        load: "20000 x 1-byte writes x2 directions",
        faults: "TCP_NODELAY single-byte writes",
        what: "single-byte stream",
    });
}

#[test]
fn bursts_64mib_both_directions() {
    both_ways_case(BothWays {
        label: "bursts",
        len: 64 * MIB as usize,
        chunk: 1024 * 1024,
        seed: 131,
        case: "bursts-both-ways",
        load: "64MiB x2 at once",
        faults: "none (load)",
        what: "64 MiB burst",
    });
}

// ---------------------------------------------------------------------------------------
// 8. Half-close in one direction while the other keeps streaming
// ---------------------------------------------------------------------------------------

/// The client sends 1 MiB and shuts down its write side; the target goes on sending 32 MiB,
/// the second half only after it has seen the client's EOF.
#[test]
fn half_close_client_first_while_target_streams() {
    let (_env, target, mut pair, mut ledger) = fault_setup("half-close-client");
    let (tx, rx) = channel();
    target.push(move |mut s| {
        let mut w = s.try_clone().unwrap();
        let (eof_tx, eof_rx) = channel::<()>();
        let writer = std::thread::spawn(move || -> std::io::Result<bool> {
            send_payload(&mut w, 141, 16 * MIB)?;
            let saw_eof = eof_rx.recv_timeout(Duration::from_secs(30)).is_ok();
            send_payload(&mut w, 142, 16 * MIB)?;
            w.shutdown(Shutdown::Write)?;
            Ok(saw_eof)
        });
        let got = read_digest(&mut s);
        let _ = eof_tx.send(());
        let wrote = writer.join().unwrap();
        let _ = tx.send((
            got.map_err(|e| e.to_string()),
            wrote.map_err(|e| e.to_string()),
        ));
    });
    let mut s = connect(pair.entry());
    let up = send_payload(&mut s, 143, MIB).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let down = read_digest(&mut s).expect("reading the target's 32 MiB after our shutdown");
    let (got_up, wrote) = rx.recv_timeout(PROMPT).expect("target report");
    let got_up = got_up.expect("target reading");
    let saw_eof_mid_stream = wrote.expect("target writing");
    let mut expected_down = openssl::sha::Sha256::new();
    for seed in [141, 142] {
        expected_down.update(&payload(seed, 16 * MIB as usize));
    }
    let expected_down = Digest {
        sha: expected_down.finish(),
        bytes: 32 * MIB,
    };
    ledger.flow(&up, &got_up);
    ledger.flow(&expected_down, &down);
    alive_both(&mut pair);
    fresh_plain_session(pair.entry(), 144, &pair.client, &mut ledger);
    summary(
        "half-close-client-first",
        "1MiB up then 32MiB down",
        "client SHUT_WR after 1MiB",
        0,
        &ledger,
    );
    assert!(
        saw_eof_mid_stream,
        "the target never saw the client's EOF while it was streaming"
    );
    assert_eq!(got_up, up);
    assert_eq!(down, expected_down);
    assert_eq!(ledger.lost(), 0);
}

/// The mirror: the target sends 1 MiB and shuts down its write side; the client goes on
/// sending 32 MiB, the second half only after it has read the target's EOF.
#[test]
fn half_close_target_first_while_client_streams() {
    let (_env, target, mut pair, mut ledger) = fault_setup("half-close-target");
    let (tx, rx) = channel();
    target.push(move |mut s| {
        let sent = send_payload(&mut s, 151, MIB).and_then(|d| {
            s.shutdown(Shutdown::Write)?;
            Ok(d)
        });
        let got = read_digest(&mut s);
        let _ = tx.send((
            got.map_err(|e| e.to_string()),
            sent.map_err(|e| e.to_string()),
        ));
    });
    let mut s = connect(pair.entry());
    let mut w = s.try_clone().unwrap();
    let (eof_tx, eof_rx) = channel::<()>();
    let writer = std::thread::spawn(move || -> std::io::Result<(Digest, bool)> {
        let a = payload(152, 16 * MIB as usize);
        w.write_all(&a)?;
        let saw_eof = eof_rx.recv_timeout(Duration::from_secs(30)).is_ok();
        let b = payload(153, 16 * MIB as usize);
        w.write_all(&b)?;
        w.shutdown(Shutdown::Write)?;
        let mut h = openssl::sha::Sha256::new();
        h.update(&a);
        h.update(&b);
        Ok((
            Digest {
                sha: h.finish(),
                bytes: 32 * MIB,
            },
            saw_eof,
        ))
    });
    let down = read_digest(&mut s).expect("reading the target's 1 MiB");
    let _ = eof_tx.send(());
    let (up, saw_eof_mid_stream) = writer.join().unwrap().expect("client writing 32 MiB");
    let (got_up, sent_down) = rx.recv_timeout(PROMPT).expect("target report");
    let got_up = got_up.expect("target reading");
    let sent_down = sent_down.expect("target writing");
    ledger.flow(&sent_down, &down);
    ledger.flow(&up, &got_up);
    alive_both(&mut pair);
    fresh_plain_session(pair.entry(), 154, &pair.client, &mut ledger);
    summary(
        "half-close-target-first",
        "1MiB down then 32MiB up",
        "target SHUT_WR after 1MiB",
        0,
        &ledger,
    );
    assert!(
        saw_eof_mid_stream,
        "the client never saw the target's EOF while it was streaming"
    );
    assert_eq!(down, sent_down);
    assert_eq!(got_up, up);
    assert_eq!(ledger.lost(), 0);
}

// ---------------------------------------------------------------------------------------
// 9. Idle sessions
// ---------------------------------------------------------------------------------------

/// With TIMEOUTidle = 2 on both tunnels an idle session is closed after 2 s and logged,
/// while a session that sends a byte every 250 ms for 4 s lives on.
#[test]
fn idle_session_closed_by_timeout_idle_busy_one_survives() {
    let (_env, _target, mut pair, mut ledger) =
        fault_setup_with("idle", "TIMEOUTidle = 2", "TIMEOUTidle = 2");
    let mut idle = connect_with_timeout(pair.entry(), PROMPT);
    let ok = echo_exact(&mut idle, b"ping\n");
    ledger.bytes(b"ping\n", if ok { b"ping\n" } else { b"" });
    assert!(ok, "first echo on the soon-idle session");
    let started = Instant::now();
    let busy = std::thread::spawn({
        let entry = pair.entry();
        move || {
            let mut s = connect_with_timeout(entry, PROMPT);
            let data = payload(161, 16);
            let mut back = Vec::new();
            for b in &data {
                if !echo_exact(&mut s, std::slice::from_ref(b)) {
                    break;
                }
                back.push(*b);
                std::thread::sleep(Duration::from_millis(250));
            }
            (data, back)
        }
    });
    let (got, end, _) = read_until_end(&mut idle, PROMPT);
    let took = started.elapsed();
    assert_ne!(end, Ending::Hung, "the idle session was never closed");
    assert!(got.is_empty());
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_secs(7),
        "the idle session was closed after {took:?}; TIMEOUTidle is 2 s"
    );
    let (data, back) = busy.join().unwrap();
    ledger.bytes(&data, &back);
    let idle_line = pair
        .client
        .try_wait_for(Duration::from_secs(2), |l| {
            l.contains("TIMEOUTidle exceeded")
        })
        .or_else(|| {
            pair.server.try_wait_for(Duration::from_secs(2), |l| {
                l.contains("TIMEOUTidle exceeded")
            })
        })
        .unwrap_or_else(|| pair.server.fail("no tunnel logged TIMEOUTidle exceeded"));
    alive_both(&mut pair);
    fresh_plain_session(pair.entry(), 162, &pair.client, &mut ledger);
    summary(
        "idle-timeout",
        "1 idle session; 16 x 1-byte echo at 250ms over 4s",
        &format!("TIMEOUTidle=2, idle session closed after {took:.1?}"),
        0,
        &ledger,
    );
    println!("  {idle_line}");
    assert_eq!(back, data, "the busy session was cut by TIMEOUTidle");
    assert_eq!(ledger.lost(), 0);
}

// ---------------------------------------------------------------------------------------
