//! Renewed certificates picked up without a signal (`watchCertificates`, default yes;
//! docs/ARCHITECTURE.md, Certificates; issue 17): when a service's certificate or key is
//! replaced by rename, as certbot and ACME clients do, new sessions get the new certificate
//! within 2 s while live sessions carry on with their bytes intact; a half-written
//! certificate or a key that does not match it is refused with an error line and the old
//! certificate keeps serving, until a correct pair arrives. A certbot-style symlink swap in
//! `live/` is followed too, and `/status` counts the reloads and lists the certificate now
//! loaded. With `watchCertificates = no` a rename is not picked up (a SIGHUP still is).

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::tls::{tls_finish, tls_to};
use common::*;

const WAIT: Duration = Duration::from_secs(10);
/// What issue 17 allows between the rename and new sessions seeing the new certificate.
const PICKED_UP_WITHIN: Duration = Duration::from_secs(2);

/// A server leaf for `localhost`/`127.0.0.1` with subject CN `cn`.
fn leaf(pki: &Pki, cn: &str) -> Leaf {
    pki.ca
        .issue(cn, common::certs::SERVER_NAMES, KeyKind::EcP256)
}

/// One server leaf per CN.
fn leaves<const N: usize>(pki: &Pki, cns: [&str; N]) -> [Leaf; N] {
    cns.map(|cn| leaf(pki, cn))
}

/// Writes `contents` beside `path` (mode 0600, as a key wants) and renames it over `path`:
/// a replacement by rename.
fn replace(path: &Path, contents: &[u8]) {
    let tmp = path.with_extension("new");
    write_private(&tmp, contents);
    std::fs::rename(&tmp, path).unwrap();
}

fn write_private(path: &Path, contents: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn cert_pem(l: &Leaf) -> Vec<u8> {
    l.cert.to_pem().unwrap()
}

fn key_pem(l: &Leaf) -> Vec<u8> {
    l.key.private_key_to_pem_pkcs8().unwrap()
}

/// The CN of the certificate a new session to `addr` gets (verified against `ca`).
fn served_cn(addr: std::net::SocketAddr, ca: &Path) -> String {
    let mut s = tls_to(addr, Some(ca), None);
    let cn = s
        .ssl()
        .peer_certificate()
        .expect("a server certificate")
        .subject_name()
        .entries_by_nid(openssl::nid::Nid::COMMONNAME)
        .next()
        .and_then(|e| e.data().to_string().ok())
        .unwrap_or_default();
    tls_finish(&mut s);
    cn
}

/// Waits until new sessions get `cn`; how long that took.
fn until_served(t: &Tunnel, ca: &Path, cn: &str, timeout: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if served_cn(t.addr("srv"), ca) == cn {
            return start.elapsed();
        }
        if start.elapsed() > timeout {
            t.fail(&format!("new sessions did not get {cn} within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sessions echoing through the tunnel until told to stop, each checking every byte that
/// comes back; the rounds done so far are counted.
struct LiveSessions {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    threads: Vec<JoinHandle<u64>>,
}

impl LiveSessions {
    fn start(addr: std::net::SocketAddr, ca: &Path, n: u64) -> LiveSessions {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let threads = (0..n)
            .map(|i| {
                let mut s = tls_to(addr, Some(ca), None);
                let (stop, rounds) = (Arc::clone(&stop), Arc::clone(&rounds));
                std::thread::spawn(move || {
                    let mut done = 0;
                    while !stop.load(Ordering::Relaxed) {
                        lockstep_echo(&mut s, i * 1000 + done, 64 * 1024, "a live session");
                        done += 1;
                        rounds.fetch_add(1, Ordering::Relaxed);
                        // Streaming, not flooding: the machine is shared.
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    tls_finish(&mut s);
                    done
                })
            })
            .collect();
        LiveSessions {
            stop,
            rounds,
            threads,
        }
    }

    /// Waits for `more` rounds past now (the sessions are still moving bytes).
    fn move_on(&self, more: u64) {
        let target = self.rounds.load(Ordering::Relaxed) + more;
        assert!(
            wait_until(WAIT, || self.rounds.load(Ordering::Relaxed) >= target),
            "the live sessions stalled"
        );
    }

    /// Stops them; every one must have ended cleanly (a cut session panics its thread).
    fn finish(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .map(|t| t.join().expect("a live session was cut or lost bytes"))
            .collect()
    }
}

fn count(t: &Tunnel, pattern: &str) -> usize {
    t.log_lines().iter().filter(|l| l.contains(pattern)).count()
}

/// `<name>.crt` and `<name>.key` (mode 0600) of `leaf` in `dir`.
fn write_pair(dir: &TestDir, name: &str, leaf: &Leaf) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(&format!("{name}.crt")),
        dir.join(&format!("{name}.key")),
    );
    write_private(&cert, &cert_pem(leaf));
    write_private(&key, &key_pem(leaf));
    (cert, key)
}

/// The `n`th refused certificate reload: an error line for the file (`setting`, e.g.
/// `cert = PATH: `) with `reason`, then `… keeping the current certificates`.
fn refused(t: &Tunnel, n: usize, setting: &str, reason: &str) {
    if !wait_until(WAIT, || count(t, "keeping the current certificates") == n) {
        t.fail(&format!("refused reload {n} was not logged"));
    }
    let lines = t.log_lines();
    let at = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains("keeping the current certificates"))
        .nth(n - 1)
        .map_or(0, |(i, _)| i);
    assert!(lines[at].contains("LOG3["), "{}", lines[at]);
    let cause = &lines[at - 1];
    assert!(
        cause.contains("LOG3[") && cause.contains(setting) && cause.contains(reason),
        "expected the error for {setting}{reason}…, got {cause}"
    );
}

/// A server `[srv]` on `accept` with `cert =` and `key =` files in front of `backend`,
/// `globals` before it.
fn server(
    dir: &TestDir,
    globals: &str,
    accept: &str,
    (cert, key): (&Path, &Path),
    backend: std::net::SocketAddr,
) -> Tunnel {
    let body = format!(
        "{globals}[srv]\naccept = {accept}\nconnect = {backend}\ncert = {}\nkey = {}\n",
        cert.display(),
        key.display()
    );
    Tunnel::start(dir, "server", &body)
}

#[test]
fn renewal_by_rename_is_picked_up_and_bad_files_are_refused() {
    let dir = TestDir::new("renewal");
    let pki = Pki::new(&dir);
    let [first, second, third] = leaves(&pki, ["first.name", "second.name", "third.name"]);
    let (cert, key) = write_pair(&dir, "srv", &first);
    let echo = Backend::echo();
    let status = std::net::SocketAddr::from(([127, 0, 0, 1], common::process::free_port()));
    let globals = format!("status = {status}\n");
    let t = server(&dir, &globals, "127.0.0.1:0", (&cert, &key), echo.addr());
    t.wait_for_log("for changed certificate, key, CA and CRL files", WAIT);
    assert_eq!(served_cn(t.addr("srv"), &pki.ca_file), "first.name");
    let live = LiveSessions::start(t.addr("srv"), &pki.ca_file, 3);
    live.move_on(6);

    // A renewal: the new key and certificate written beside, then renamed over.
    replace(&key, &key_pem(&second));
    replace(&cert, &cert_pem(&second));
    let took = until_served(&t, &pki.ca_file, "second.name", WAIT);
    println!("renewal picked up by new sessions {took:?} after the rename");
    assert!(took < PICKED_UP_WITHIN, "took {took:?}");
    let notice = t.wait_for_log("Certificates reloaded: ", WAIT);
    assert!(
        notice.contains("srv.crt") && notice.contains("srv.key"),
        "{notice}"
    );
    live.move_on(6);

    // Half-written: the PEM cut in the middle. Refused, the second certificate serves.
    let pem = cert_pem(&third);
    replace(&cert, &pem[..pem.len() / 2]);
    refused(
        &t,
        1,
        &format!("cert = {}: ", cert.display()),
        "bad end line",
    );
    assert_eq!(served_cn(t.addr("srv"), &pki.ca_file), "second.name");
    live.move_on(6);

    // A whole certificate whose key is not the one beside it: refused too.
    replace(&cert, &cert_pem(&third));
    refused(
        &t,
        2,
        &format!("key = {}: ", key.display()),
        "key values mismatch",
    );
    assert_eq!(served_cn(t.addr("srv"), &pki.ca_file), "second.name");

    // Its key arrives: the pair is picked up.
    replace(&key, &key_pem(&third));
    let took = until_served(&t, &pki.ca_file, "third.name", WAIT);
    assert!(took < PICKED_UP_WITHIN, "took {took:?}");
    live.move_on(6);
    let rounds = live.finish();
    println!("live sessions: {rounds:?} rounds of 64 KiB echoed, uncut");
    assert_eq!(count(&t, "Certificates reloaded: "), 2);
    // The listening socket stayed the same one throughout (port 0 was not bound again).
    assert_eq!(count(&t, " bound to "), 1);
    // The status endpoint counts the reloads and lists the certificate now loaded.
    let doc = common::status::status(status);
    assert_eq!(
        (doc.reloads.certificates_ok, doc.reloads.certificates_failed),
        (2, 2)
    );
    let listed: Vec<(&str, &str, &str, &str)> = doc
        .certificates
        .iter()
        .map(|c| {
            (
                c.service.as_str(),
                c.role.as_str(),
                c.file.as_str(),
                c.subject.as_str(),
            )
        })
        .collect();
    let file = cert.display().to_string();
    assert_eq!(
        listed,
        [(
            "srv",
            "cert",
            file.as_str(),
            "O=rstunnel tests, CN=third.name"
        )]
    );
    // The harness' leaves are valid for a year from when they were made.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let not_after = doc.certificates[0].not_after_unix;
    assert!(
        (not_after - (now + 365 * 86_400)).abs() < 120,
        "{not_after}"
    );
}

/// certbot: `live/NAME/cert.pem` is a symlink into `archive/NAME/`; a renewal writes new
/// files there and swaps the links in `live/` by rename.
#[test]
fn a_certbot_style_symlink_swap_is_followed() {
    let dir = TestDir::new("renewal-symlink");
    let pki = Pki::new(&dir);
    let [first, second] = leaves(&pki, ["first.name", "second.name"]);
    let (live, archive) = (dir.join("live"), dir.join("archive"));
    std::fs::create_dir_all(&live).unwrap();
    std::fs::create_dir_all(&archive).unwrap();
    let link = |name: &str, target: &str| {
        let tmp = live.join(format!("{name}.tmp"));
        std::os::unix::fs::symlink(format!("../archive/{target}"), &tmp).unwrap();
        std::fs::rename(&tmp, live.join(name)).unwrap();
    };
    std::fs::write(archive.join("cert1.pem"), cert_pem(&first)).unwrap();
    write_private(&archive.join("privkey1.pem"), &key_pem(&first));
    link("cert.pem", "cert1.pem");
    link("privkey.pem", "privkey1.pem");
    let echo = Backend::echo();
    let (cert, key): (PathBuf, PathBuf) = (live.join("cert.pem"), live.join("privkey.pem"));
    let t = server(&dir, "", "127.0.0.1:0", (&cert, &key), echo.addr());
    t.wait_for_log("for changed certificate, key, CA and CRL files", WAIT);
    assert_eq!(served_cn(t.addr("srv"), &pki.ca_file), "first.name");
    std::fs::write(archive.join("cert2.pem"), cert_pem(&second)).unwrap();
    write_private(&archive.join("privkey2.pem"), &key_pem(&second));
    link("cert.pem", "cert2.pem");
    link("privkey.pem", "privkey2.pem");
    let took = until_served(&t, &pki.ca_file, "second.name", WAIT);
    assert!(took < PICKED_UP_WITHIN, "took {took:?}");
}

#[test]
fn watch_certificates_no_leaves_a_rename_for_sighup() {
    let dir = TestDir::new("renewal-off");
    let pki = Pki::new(&dir);
    let [first, second] = leaves(&pki, ["first.name", "second.name"]);
    let (cert, key) = write_pair(&dir, "srv", &first);
    let echo = Backend::echo();
    // Fixed port: a SIGHUP reload keeps a listener only for the same configured address.
    let accept = format!("127.0.0.1:{}", common::process::free_port());
    let globals = "watchCertificates = no\n";
    let t = server(&dir, globals, &accept, (&cert, &key), echo.addr());
    replace(&key, &key_pem(&second));
    replace(&cert, &cert_pem(&second));
    // Four times the debounce and more than the 2 s a watched renewal is allowed.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(served_cn(t.addr("srv"), &pki.ca_file), "first.name");
    assert_eq!(count(&t, "for changed certificate"), 0, "nothing watched");
    t.signal(libc::SIGHUP);
    t.wait_for_log("Configuration reloaded", WAIT);
    assert_eq!(served_cn(t.addr("srv"), &pki.ca_file), "second.name");
}

/// A SIGHUP that names other files re-arms the watch on them.
#[test]
fn a_reload_watches_the_files_it_names() {
    let dir = TestDir::new("renewal-rearm");
    let pki = Pki::new(&dir);
    let [first, second, third] = leaves(&pki, ["first.name", "second.name", "third.name"]);
    let (cert, key) = write_pair(&dir, "a", &first);
    let (cert_b, key_b) = write_pair(&dir, "b", &second);
    let echo = Backend::echo();
    let accept = format!("127.0.0.1:{}", common::process::free_port());
    let t = server(&dir, "", &accept, (&cert, &key), echo.addr());
    t.wait_for_log("for changed certificate, key, CA and CRL files", WAIT);
    let conf = std::fs::read_to_string(&t.conf).unwrap();
    std::fs::write(
        &t.conf,
        conf.replace("a.crt", "b.crt").replace("a.key", "b.key"),
    )
    .unwrap();
    t.signal(libc::SIGHUP);
    t.wait_for_log("Configuration reloaded", WAIT);
    assert_eq!(served_cn(t.addr("srv"), &pki.ca_file), "second.name");
    replace(&key_b, &key_pem(&third));
    replace(&cert_b, &cert_pem(&third));
    let took = until_served(&t, &pki.ca_file, "third.name", WAIT);
    assert!(took < PICKED_UP_WITHIN, "took {took:?}");
    // The old files are no longer watched: replacing them changes nothing.
    let reloads = count(&t, "Certificates reloaded: ");
    replace(&cert, &cert_pem(&first));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(count(&t, "Certificates reloaded: "), reloads);
}
