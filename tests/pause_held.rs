//! `pauseWhenDown`'s held connections (issue 14; `src/listeners.rs`, `src/resume.rs`): the
//! connections waiting in a backlog when a service pauses are held, not reset; counted
//! against the connection cap; listed by SIGUSR2; kept by a reload, reset and said so at
//! exit; and served on resume first by a canary, alone, then the rest.
//!
//! Every scenario starts the same way (`pause_with_clients_held`): a session reaches the
//! target, which resets it, so the service checks; the target's queue is full from then
//! on, so the check's probe times out and the service pauses with the clients that
//! arrived meanwhile held. Real TLS, certificates made at run time, loopback only.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::faults::{reset, Target};
use common::process::*;
use common::*;

const WAIT: Duration = Duration::from_secs(10);

/// The target of these scenarios (`BacklogOfOne`): a black hole while its queue is full,
/// one more connection in each time the test makes room.
type Blackhole = common::net::BacklogOfOne;

/// What the held scenarios do with their target beyond `BacklogOfOne`.
trait CollectLines {
    fn collect_lines(&self, t: &Tunnel, lines: &[&str]);
}

impl CollectLines for Blackhole {
    /// Accepts everything that comes until `lines` have all arrived (each connection's
    /// first read), or fails the test after 15 s.
    fn collect_lines(&self, t: &Tunnel, lines: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut got = String::new();
        while !lines.iter().all(|l| got.contains(l)) {
            assert!(
                Instant::now() < deadline,
                "lines {lines:?} never all reached the target (got {got:?}):\n{}",
                t.log_text()
            );
            for mut s in self.accept_all() {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(500)))
                    .unwrap();
                let mut buf = [0u8; 64];
                if let Ok(n) = s.read(&mut buf) {
                    got.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A TLS client of `srv` in a thread of its own: connects, and once its handshake is done
/// sends `line` and returns. Held by a paused tunnel, it waits in its handshake.
fn client_sending(srv: SocketAddr, ca: &std::path::Path, line: String) -> ClientThread {
    // The TCP connection is made here, before the caller goes on, so that it is surely in
    // the backlog when the service pauses (a thread started late on a loaded machine could
    // miss the check); the handshake, which waits as long as the client is held, runs on
    // the thread, with time to spare for a pause, a canary and a resume.
    let tcp = TcpStream::connect_timeout(&srv, Duration::from_secs(5));
    let connector = connector(ca);
    std::thread::spawn(move || -> Result<(), String> {
        let tcp = tcp.map_err(|e| format!("{line:?}: connect: {e}"))?;
        tcp.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        tcp.set_write_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut s = connector
            .connect("localhost", tcp)
            .map_err(|e| format!("{line:?}: handshake: {e}"))?;
        s.write_all(line.as_bytes())
            .map_err(|e| format!("{line:?} write: {e}"))?;
        Ok(())
    })
}

type ClientThread = std::thread::JoinHandle<Result<(), String>>;

/// Brings the server tunnel `t` (in front of `target`, `pauseWhenDown = yes`,
/// `TIMEOUTconnect = 2`) to "paused with clients held": session A reaches the target,
/// which resets it, so the service checks; the target's queue is full from then on, so
/// the check's probe times out; `n` clients (sending "client I") arrive during the check,
/// wait in the backlog, and are held when the service pauses. Returns the connection
/// that fills the target's queue, and the clients.
fn pause_with_clients_held(
    t: &Tunnel,
    target: &Blackhole,
    ca: &std::path::Path,
    n: usize,
) -> (TcpStream, Vec<ClientThread>) {
    pause_with_clients_held_after(t, target, ca, n, || ())
}

/// `pause_with_clients_held`, with `first` run once the service checks, before the clients
/// arrive (what it returns is kept alive until the pause).
fn pause_with_clients_held_after<T>(
    t: &Tunnel,
    target: &Blackhole,
    ca: &std::path::Path,
    n: usize,
    first: impl FnOnce() -> T,
) -> (TcpStream, Vec<ClientThread>) {
    target.accept_all(); // the startup probe
    let mut a = tls_connect(t.addr("srv"), ca).unwrap_or_else(|e| t.fail(&format!("{e:?}")));
    a.write_all(b"a\n").unwrap();
    let deadline = Instant::now() + WAIT;
    let a_far = loop {
        if let Some(s) = target.accept_all().pop() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "session A never reached the target"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let filler = TcpStream::connect(target.addr).unwrap();
    reset(a_far);
    t.wait_for_log("checking it before accepting again", WAIT);
    let kept = first();
    let clients = (0..n)
        .map(|i| client_sending(t.addr("srv"), ca, format!("client {i}\n")))
        .collect();
    t.wait_for_log("Service [srv] paused: ", WAIT);
    drop(kept);
    (filler, clients)
}

/// As `held_tunnel`, on a fixed port: a reload keeps a listener only at the same
/// configured address (port 0 is a new port each time, so its held connections go with it).
fn held_tunnel_on_fixed_port(dir: &TestDir, pki: &Pki, target: &Blackhole) -> Tunnel {
    Tunnel::start(
        dir,
        "server",
        &format!(
            "[srv]\naccept = {}\nconnect = {}\ncert = {}\npauseWhenDown = yes\nTIMEOUTconnect = 2\n",
            lo(free_port()),
            target.addr,
            pki.server.combined.display()
        ),
    )
}

/// After a canary's fate: which clients were served (their handshake done) and which are
/// still held, checked against `expected` (served, held); returns the held ones.
fn still_held(
    t: &Tunnel,
    clients: Vec<ClientThread>,
    expected: (usize, usize),
    what: &str,
) -> Vec<(usize, ClientThread)> {
    std::thread::sleep(Duration::from_millis(300));
    let (served, held): (Vec<_>, Vec<_>) = clients
        .into_iter()
        .enumerate()
        .partition(|(_, c)| c.is_finished());
    assert_eq!(
        (served.len(), held.len()),
        expected,
        "{what}: {}",
        t.log_text()
    );
    held
}

/// The target takes connections again: every client in `held` gets its line through.
fn serve_the_held(t: &Tunnel, target: &Blackhole, held: Vec<(usize, ClientThread)>) {
    let lines: Vec<String> = held.iter().map(|(i, _)| format!("client {i}\n")).collect();
    target.collect_lines(t, &lines.iter().map(String::as_str).collect::<Vec<_>>());
    for (_, c) in held {
        c.join().unwrap().unwrap_or_else(|e| t.fail(&e));
    }
}

fn held_tunnel(dir: &TestDir, pki: &Pki, target: &Blackhole) -> Tunnel {
    Tunnel::start(
        dir,
        "server",
        &server_body(
            target.addr,
            &pki.server.combined,
            "pauseWhenDown = yes\nTIMEOUTconnect = 2",
        ),
    )
}

/// Makes room for one connection in the target's queue: the next probe takes it and the
/// service resumes, and the first session's connect then times out, so it pauses again.
fn resume_into_a_far_side_that_fails_again(t: &Tunnel, target: &Blackhole) {
    drop(target.accept_all());
    t.wait_for_log("Service [srv] resumed after ", WAIT);
    t.wait_for_logs("Service [srv] paused: ", 2, WAIT);
}

/// The parts of every scenario here: a directory, certificates, the target, and a server
/// tunnel in front of it (`fixed_port`: one a reload keeps, see `held_tunnel_on_fixed_port`).
struct Scene {
    t: Tunnel,
    target: Blackhole,
    pki: Pki,
    _dir: TestDir,
}

fn scene(label: &str, fixed_port: bool) -> Scene {
    let dir = TestDir::new(label);
    let pki = Pki::new(&dir);
    let target = Blackhole::new();
    let t = if fixed_port {
        held_tunnel_on_fixed_port(&dir, &pki, &target)
    } else {
        held_tunnel(&dir, &pki, &target)
    };
    Scene {
        t,
        target,
        pki,
        _dir: dir,
    }
}

/// Findings 1 and 5 end to end: while a service checks its far side (one probe after a
/// session's far side broke) it keeps listening, so a new client waits in the backlog
/// instead of being refused; when that probe fails and the service pauses, the client is
/// held, not reset, and served when the far side is back: its line arrives (before the
/// fix: refused at once by the check, or reset with the backlog at the pause).
#[test]
fn a_client_arriving_during_a_failed_check_is_held_and_served_on_resume() {
    let Scene {
        t,
        target,
        pki,
        _dir,
    } = scene("pause-held", false);
    let (_filler, mut clients) = pause_with_clients_held(&t, &target, &pki.ca_file, 1);
    let b = clients.pop().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    if b.is_finished() {
        let ended = b.join().unwrap();
        t.fail(&format!(
            "B must wait, neither refused nor reset; it ended with {ended:?}"
        ));
    }
    t.wait_for_log("held until it resumes", WAIT);
    // The target takes connections again: the next probe answers, B is served.
    target.collect_lines(&t, &["client 0\n"]);
    b.join().unwrap().unwrap_or_else(|e| t.fail(&e));
    t.wait_for_log("Service [srv] resumed after ", WAIT);
}

/// Issue 14's third read, F2: connections held during a long pause were reset without a
/// word when the process stopped. Now SIGUSR2 lists them, and SIGTERM resets them (their
/// senders learn the data was not delivered) and says how many.
#[test]
fn held_connections_are_listed_and_reset_at_sigterm_said_so() {
    let Scene {
        mut t,
        target,
        pki,
        _dir,
    } = scene("pause-held-term", false);
    let (_filler, clients) = pause_with_clients_held(&t, &target, &pki.ca_file, 2);
    t.wait_for_log("2 connection(s) waiting on", WAIT);
    let listed = t.usr2_services();
    assert!(
        listed
            .iter()
            .any(|l| l.contains("Service [srv]: 2 connection(s) held on")),
        "{listed:#?}"
    );
    t.signal(libc::SIGTERM);
    let st = t.wait_exit(WAIT);
    assert!(st.is_some_and(|s| s.success()), "exit 0, got {st:?}");
    assert!(
        t.has_log("2 held connection(s) on ") && t.has_log("reset: the service stopped"),
        "{}",
        t.log_text()
    );
    for c in clients {
        let ended = c.join().unwrap();
        assert!(
            ended.is_err(),
            "a held client must see its connection fail, got {ended:?}"
        );
    }
}

/// Issue 14's third read, F2: a reload that keeps the service hands its held connections
/// to the new configuration, which serves them when the far side is back.
#[test]
fn held_connections_survive_a_reload_and_are_served() {
    let Scene {
        t,
        target,
        pki,
        _dir,
    } = scene("pause-held-hup", true);
    let (_filler, clients) = pause_with_clients_held(&t, &target, &pki.ca_file, 1);
    t.wait_for_log("held until it resumes", WAIT);
    t.signal(libc::SIGHUP);
    t.wait_for_log("Configuration reloaded", WAIT);
    let listed = t.usr2_services();
    assert!(
        listed
            .iter()
            .any(|l| l.contains("Service [srv]: 1 connection(s) held on")),
        "{listed:#?}"
    );
    target.collect_lines(&t, &["client 0\n"]);
    for c in clients {
        c.join().unwrap().unwrap_or_else(|e| t.fail(&e));
    }
}

/// Issue 14's third read, F1: a pause took every connection waiting in the backlog, so a
/// reconnect storm during a check could hold more descriptors than the connection cap
/// allows; and (a second read) held connections counted as whole sessions could take the
/// room of services that are up. Under RLIMIT_NOFILE 80 (a cap of 8 sessions, 16
/// descriptors) twelve clients arrive during a check: four are held (a quarter of the
/// descriptors), the other eight are reset (their senders learn at once) and the log says
/// the cap was reached; another service still accepts.
#[test]
fn a_pause_holds_no_more_connections_than_its_share_of_the_cap() {
    let dir = TestDir::new("pause-held-cap");
    let pki = Pki::new(&dir);
    let target = Blackhole::new();
    let other_target = Target::echo();
    let mut t = Tunnel::start_with_open_files(
        &dir,
        "cap",
        80,
        &format!(
            "{}[other]\naccept = 127.0.0.1:0\nconnect = {}\npauseWhenDown = no\ncert = {}\n",
            server_body(
                target.addr,
                &pki.server.combined,
                "pauseWhenDown = yes\nTIMEOUTconnect = 2"
            ),
            other_target.addr(),
            pki.server.combined.display()
        ),
    );
    let (_filler, clients) = pause_with_clients_held(&t, &target, &pki.ca_file, 12);
    t.wait_for_log("4 connection(s) waiting on", WAIT);
    t.wait_for_log("take their share of the connection cap", WAIT);
    std::thread::sleep(Duration::from_millis(500));
    let (ended, waiting): (Vec<_>, Vec<_>) = clients.into_iter().partition(|c| c.is_finished());
    assert_eq!(
        (ended.len(), waiting.len()),
        (8, 4),
        "eight clients over the share end, four wait"
    );
    for c in ended {
        let r = c.join().unwrap();
        assert!(r.is_err(), "a client over the share is reset, got {r:?}");
    }
    tls_echo(t.addr("other"), &pki.ca_file, b"still served\n")
        .unwrap_or_else(|e| t.fail(&format!("a service that is up must keep its room: {e}")));
    t.signal(libc::SIGTERM);
    t.wait_exit(WAIT);
    assert!(t.has_log("4 held connection(s) on "), "{}", t.log_text());
}

/// Issue 14's third read, F4: on resume every held connection was started at once, so a
/// far side that answered the probe and failed again at once cost all of them. Now the
/// first is served alone (the canary) and the rest wait for it to reach the far side.
/// Here the probe's connection fills the target's queue again, so the canary's connect
/// times out: the service pauses again with the other two still held, and they are
/// served, lines and all, when the target really comes back.
#[test]
fn after_a_resume_the_first_connection_goes_alone() {
    let Scene {
        t,
        target,
        pki,
        _dir,
    } = scene("pause-canary", false);
    let (_filler, clients) = pause_with_clients_held(&t, &target, &pki.ca_file, 3);
    t.wait_for_log("3 connection(s) waiting on", WAIT);
    // Room for one connection in the target's queue: the next probe's.
    resume_into_a_far_side_that_fails_again(&t, &target);
    // The clients raced to connect: whichever was accepted first is the canary.
    let held = still_held(
        &t,
        clients,
        (1, 2),
        "the canary alone was served, the other two are still held",
    );
    let listed = t.usr2_services();
    assert!(
        listed
            .iter()
            .any(|l| l.contains("Service [srv]: 2 connection(s) held on")),
        "{listed:#?}"
    );
    serve_the_held(&t, &target, held);
}

/// A second read of F4: the oldest held connection's client gave up during the pause, so
/// as the canary its session ended at once, and that disarmed the canary: every other held
/// connection was then served at once against a far side that still failed. Now a held
/// connection whose client closed it without a word is dropped before it becomes a session
/// (a third read), and a canary whose session ends without reaching the far side (here: its
/// client sent garbage instead of a ClientHello) passes the turn to the next held
/// connection. That one's connect times out, the service pauses again, and the last client
/// is still held, then served when the target comes back.
#[test]
fn a_canary_whose_client_gave_up_passes_the_turn_on() {
    let Scene {
        t,
        target,
        pki,
        _dir,
    } = scene("pause-canary-stale", false);
    // First in the backlog: a client that gives up without a word, and one that sends
    // garbage.
    let stale = std::cell::RefCell::new(Vec::new());
    let (_filler, clients) = pause_with_clients_held_after(&t, &target, &pki.ca_file, 2, || {
        let silent = TcpStream::connect(t.addr("srv")).unwrap();
        let mut garbage = TcpStream::connect(t.addr("srv")).unwrap();
        garbage.write_all(b"not a ClientHello\n").unwrap();
        stale.borrow_mut().extend([silent, garbage]);
        std::thread::sleep(Duration::from_millis(100));
    });
    t.wait_for_log("4 connection(s) waiting on", WAIT);
    drop(stale.borrow_mut().remove(0)); // the silent one gives up
    std::thread::sleep(Duration::from_millis(100));
    // Room for one connection in the target's queue: the next probe's.
    resume_into_a_far_side_that_fails_again(&t, &target);
    let held = still_held(
        &t,
        clients,
        (1, 1),
        "after the dropped and the failed canary, one more canary and no more",
    );
    assert!(t.has_log("closed by its client while held: dropped"));
    assert!(t.has_log("the first held connection ended before reaching the far side"));
    serve_the_held(&t, &target, held);
}

/// A second read of F4: a reload during a canary's wait started the new listener thread
/// with no canary, so it served every other held connection at once. Now each listener
/// thread starts with a canary: after the reload one more goes alone (here it times out
/// too, and the service pauses again), and the third is still held.
#[test]
fn a_reload_during_the_canary_wait_keeps_the_rest_held() {
    let Scene {
        t,
        target,
        pki,
        _dir,
    } = scene("pause-canary-hup", true);
    let (_filler, clients) = pause_with_clients_held(&t, &target, &pki.ca_file, 3);
    t.wait_for_log("3 connection(s) waiting on", WAIT);
    drop(target.accept_all());
    t.wait_for_log("serving the first held connection alone", WAIT);
    t.signal(libc::SIGHUP);
    t.wait_for_log("Configuration reloaded", WAIT);
    t.wait_for_logs("Service [srv] paused: ", 2, Duration::from_secs(15));
    let held = still_held(
        &t,
        clients,
        (2, 1),
        "one canary before the reload, one after, the third still held",
    );
    serve_the_held(&t, &target, held);
}
