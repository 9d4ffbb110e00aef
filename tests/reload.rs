//! SIGHUP reload (docs/ARCHITECTURE.md, Reload): the file is parsed and built
//! first; a bad one is logged (`Failed to reload the configuration file`) and the old
//! configuration keeps running; a good one swaps in new TLS contexts on the *same* listening
//! sockets, so no connection is ever refused and live sessions are never cut. Sections added
//! by a reload start listening; removed ones stop.
//!
//! Ports are fixed (found free by the test): port 0 cannot be kept across reloads.

mod common;

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::certs::SERVER_NAMES;
use common::process::*;
use common::*;

const WAIT: Duration = Duration::from_secs(10);
const SESSIONS: usize = 50;
const RELOADS: usize = 20;

/// One server section `[name]` on 127.0.0.1:`port` with `cert`.
fn section(name: &str, port: u16, backend: SocketAddr, cert: &Path, extra: &str) -> String {
    format!(
        "[{name}]\naccept = 127.0.0.1:{port}\nconnect = {backend}\ncert = {}\n{extra}\n",
        cert.display()
    )
}

/// The tunnel under test plus what is needed to rewrite its config.
struct Server {
    t: Tunnel,
    /// The global lines `Tunnel` wrote in front of the body (foreground, debug, ...).
    header: String,
}

impl Server {
    fn start(dir: &TestDir, body: &str) -> Server {
        let t = Tunnel::start(dir, "server", body);
        let written = std::fs::read_to_string(&t.conf).unwrap();
        let at = written
            .find(body)
            .expect("the config Tunnel wrote contains the body");
        let header = written[..at].to_string();
        Server { t, header }
    }

    fn outcomes(&self) -> (usize, usize) {
        let lines = self.t.log_lines();
        let ok = lines
            .iter()
            .filter(|l| l.contains("Configuration reloaded"))
            .count();
        let failed = lines
            .iter()
            .filter(|l| l.contains("Failed to reload the configuration file"))
            .count();
        (ok, failed)
    }

    /// Rewrites the config with `body`, sends SIGHUP and waits for the outcome line, which
    /// must be success iff `expect_ok`.
    fn reload(&self, body: &str, expect_ok: bool) {
        let (ok0, failed0) = self.outcomes();
        write_atomic(&self.t.conf, &format!("{}{body}\n", self.header));
        self.t.signal(libc::SIGHUP);
        let deadline = Instant::now() + WAIT;
        loop {
            let (ok, failed) = self.outcomes();
            if ok + failed > ok0 + failed0 {
                if expect_ok && ok != ok0 + 1 {
                    self.t.fail(
                        "a valid config was rejected: `Failed to reload the configuration file`",
                    );
                }
                if !expect_ok && failed != failed0 + 1 {
                    self.t.fail(
                        "an invalid config (`client = maybe`) was accepted: `Configuration reloaded`",
                    );
                }
                return;
            }
            if Instant::now() >= deadline {
                self.t.fail(&format!(
                    "no `Configuration reloaded` / `Failed to reload the configuration file` \
                     line within {WAIT:?} of SIGHUP"
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A fresh TLS session to `port`: its certificate's CN after one echo round trip.
    fn session_cn(&self, port: u16, ca: &Path) -> String {
        let mut s = tls_connect(lo(port), ca)
            .unwrap_or_else(|e| self.t.fail(&format!("TLS session to port {port}: {e:?}")));
        echo_check(&mut s, b"which certificate?\n").unwrap_or_else(|e| self.t.fail(&e));
        let cn = peer_cn(&s);
        tls_close(s);
        cn
    }
}

/// What the streaming sessions and the connection prober saw.
#[derive(Default)]
struct Stats {
    rounds: Vec<AtomicU64>,
    errors: Mutex<Vec<String>>,
    probes_ok: AtomicUsize,
    refused: AtomicUsize,
    probe_errors: Mutex<Vec<String>>,
}

#[test]
fn reload_under_load_swaps_certs_keeps_sessions_and_never_refuses() {
    let dir = TestDir::new("reload-load");
    let pki = Pki::new(&dir);
    let cert_a = pki
        .ca
        .issue("a.right.name", SERVER_NAMES, KeyKind::EcP256)
        .write(&dir, "cert-a");
    let cert_b = pki
        .ca
        .issue("b.right.name", SERVER_NAMES, KeyKind::EcP256)
        .write(&dir, "cert-b");
    let echo = Backend::echo();
    let port = free_port();
    let valid = |cert: &LeafFiles| section("srv", port, echo.addr(), &cert.combined, "");
    let invalid =
        |cert: &LeafFiles| section("srv", port, echo.addr(), &cert.combined, "client = maybe");
    let server = Server::start(&dir, &valid(&cert_a));
    assert_eq!(server.session_cn(port, &pki.ca_file), "a.right.name");

    let stats = Arc::new(Stats {
        rounds: (0..SESSIONS).map(|_| AtomicU64::new(0)).collect(),
        ..Stats::default()
    });
    let stop = Arc::new(AtomicBool::new(false));

    // 50 sessions, each streaming echo round trips of varying sizes and checking every byte.
    let streams: Vec<_> = (0..SESSIONS)
        .map(|i| {
            let stats = stats.clone();
            let stop = stop.clone();
            let ca = pki.ca_file.clone();
            std::thread::spawn(move || {
                let mut s = match tls_connect(lo(port), &ca) {
                    Ok(s) => s,
                    Err(e) => {
                        stats
                            .errors
                            .lock()
                            .unwrap()
                            .push(format!("session {i}: connect: {e:?}"));
                        return;
                    }
                };
                let mut round = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let len = 256 + ((round as usize * 997 + i * 131) % 6000);
                    let data = payload((i as u64) << 32 | round, len);
                    if let Err(e) = echo_check(&mut s, &data) {
                        stats
                            .errors
                            .lock()
                            .unwrap()
                            .push(format!("session {i}, round {round}: {e}"));
                        return;
                    }
                    round += 1;
                    stats.rounds[i].store(round, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                }
                tls_close(s);
            })
        })
        .collect();
    let deadline = Instant::now() + WAIT;
    while stats.rounds.iter().any(|r| r.load(Ordering::SeqCst) == 0)
        && stats.errors.lock().unwrap().is_empty()
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = stats
        .rounds
        .iter()
        .filter(|r| r.load(Ordering::SeqCst) > 0)
        .count();
    if started < SESSIONS {
        stop.store(true, Ordering::SeqCst);
        server.t.fail(&format!(
            "only {started} of {SESSIONS} sessions got going: {:?}",
            stats.errors.lock().unwrap()
        ));
    }

    // Meanwhile: new connections, one after another, each must be accepted and handshake.
    let probe_stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let stats = stats.clone();
        let probe_stop = probe_stop.clone();
        let connector = connector(&pki.ca_file);
        std::thread::spawn(move || {
            while !probe_stop.load(Ordering::SeqCst) {
                match tls_connect_with(&connector, lo(port)) {
                    Ok(s) => {
                        stats.probes_ok.fetch_add(1, Ordering::SeqCst);
                        tls_close(s);
                    }
                    Err(ConnectError::Tcp(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        stats.refused.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => stats.probe_errors.lock().unwrap().push(format!("{e:?}")),
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };

    let reloads_started = Instant::now();
    let mut current_cn = "a.right.name";
    for i in 0..RELOADS {
        // Even: a valid config with the other certificate; odd: the same, made invalid.
        let (cert, cn) = if (i / 2) % 2 == 0 {
            (&cert_b, "b.right.name")
        } else {
            (&cert_a, "a.right.name")
        };
        if i % 2 == 0 {
            server.reload(&valid(cert), true);
            current_cn = cn;
        } else {
            server.reload(&invalid(cert), false);
        }
        let got = server.session_cn(port, &pki.ca_file);
        if got != current_cn {
            server.t.fail(&format!(
                "after reload {i} ({}) a new session must present {current_cn}, got {got}",
                if i % 2 == 0 {
                    "valid"
                } else {
                    "invalid: old config stays"
                }
            ));
        }
        std::thread::sleep(Duration::from_millis(100 + (i as u64 % 3) * 50));
    }

    println!("{RELOADS} reloads took {:?}", reloads_started.elapsed());
    // Every session must still be flowing after the last reload.
    let after_reloads: Vec<u64> = stats
        .rounds
        .iter()
        .map(|r| r.load(Ordering::SeqCst))
        .collect();
    let deadline = Instant::now() + WAIT;
    while stats
        .rounds
        .iter()
        .zip(&after_reloads)
        .any(|(r, before)| r.load(Ordering::SeqCst) <= *before)
        && stats.errors.lock().unwrap().is_empty()
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    probe_stop.store(true, Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    prober.join().expect("prober thread");
    for s in streams {
        s.join().expect("session thread");
    }

    let errors = stats.errors.lock().unwrap().clone();
    if !errors.is_empty() {
        server.t.fail(&format!(
            "{} of {SESSIONS} live sessions broke during the reloads: {errors:?}",
            errors.len()
        ));
    }
    let stalled: Vec<usize> = stats
        .rounds
        .iter()
        .zip(&after_reloads)
        .enumerate()
        .filter(|(_, (r, before))| r.load(Ordering::SeqCst) <= **before)
        .map(|(i, _)| i)
        .collect();
    if !stalled.is_empty() {
        server.t.fail(&format!(
            "sessions {stalled:?} stopped moving data after the reloads"
        ));
    }
    let refused = stats.refused.load(Ordering::SeqCst);
    let probe_errors = stats.probe_errors.lock().unwrap().clone();
    let probes_ok = stats.probes_ok.load(Ordering::SeqCst);
    if refused != 0 || !probe_errors.is_empty() {
        server.t.fail(&format!(
            "new connections during the reloads: {probes_ok} ok, {refused} refused, failed: {probe_errors:?}"
        ));
    }
    assert!(
        probes_ok >= RELOADS,
        "only {probes_ok} probe connections ran"
    );
    let total: u64 = stats.rounds.iter().map(|r| r.load(Ordering::SeqCst)).sum();
    println!(
        "{SESSIONS} sessions made {total} echo round trips across {RELOADS} reloads; \
         {probes_ok} new connections, 0 refused"
    );

    let (ok, failed) = server.outcomes();
    assert_eq!(
        (ok, failed),
        (RELOADS / 2, RELOADS / 2),
        "reload outcome lines"
    );
    assert_eq!(server.session_cn(port, &pki.ca_file), current_cn);
    let final_cn = if (RELOADS / 2 - 1) % 2 == 0 {
        "b.right.name"
    } else {
        "a.right.name"
    };
    assert_eq!(current_cn, final_cn);
}

/// Polls until connecting to `addr` is refused; false if it still accepts after `timeout`.
fn becomes_refused(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return true,
            _ => {}
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn reload_adds_and_removes_sections() {
    let dir = TestDir::new("reload-sections");
    let pki = Pki::new(&dir);
    let echo = Backend::echo();
    let port1 = free_port();
    let port2 = loop {
        let p = free_port();
        if p != port1 {
            break p;
        }
    };
    let cert = &pki.server.combined;
    let one = section("srv", port1, echo.addr(), cert, "");
    let two = format!("{one}{}", section("srv2", port2, echo.addr(), cert, ""));
    let server = Server::start(&dir, &one);
    assert!(
        becomes_refused(lo(port2), Duration::ZERO),
        "nothing listens on the second port before the reload"
    );

    server.reload(&two, true);
    assert_eq!(server.session_cn(port2, &pki.ca_file), "right.name");
    assert_eq!(server.session_cn(port1, &pki.ca_file), "right.name");
    // A session on [srv2] that stays open across its removal.
    let mut live = tls_connect(lo(port2), &pki.ca_file)
        .unwrap_or_else(|e| server.t.fail(&format!("session on [srv2]: {e:?}")));
    echo_check(&mut live, b"before removal\n").unwrap();

    server.reload(&one, true);
    if !becomes_refused(lo(port2), Duration::from_secs(2)) {
        server.t.fail(&format!(
            "127.0.0.1:{port2} still accepts after a reload removed [srv2]"
        ));
    }
    assert_eq!(server.session_cn(port1, &pki.ca_file), "right.name");
    echo_check(
        &mut live,
        b"after removal: live sessions are never cut by a reload\n",
    )
    .unwrap_or_else(|e| {
        server
            .t
            .fail(&format!("the live [srv2] session broke: {e}"))
    });
    tls_close(live);

    // And back: the section can be added again on the same port.
    server.reload(&two, true);
    assert_eq!(server.session_cn(port2, &pki.ca_file), "right.name");
}
