//! OCSP against OpenSSL's own responder (`openssl ocsp -index`, run on loopback per test):
//!
//! * client with `verifyChain` + `CAfile` + `OCSP = URL`: a good server certificate lets data
//!   through; a revoked one fails the handshake and the client logs `Certificate revoked`;
//!   with the responder down, `OCSPrequire = no` lets the session through with a LOG4
//!   warning and the default (`yes`) refuses it; `OCSPnonce = yes` works with a responder
//!   that echoes the nonce;
//! * server with `verifyChain` + `OCSP = URL`: a revoked client certificate is refused;
//! * stapling: a server whose certificate names the responder in its AIA extension staples
//!   a response (`openssl s_client -status` sees it); a client with `OCSPaia = yes` uses the
//!   stapled response, so it needs no responder of its own, and refuses a stapled `revoked`.
//!
//! ```text
//! test ──plain──▶ rstunnel client [cli] ──TLS──▶ rstunnel server [srv] ──plain──▶ echo
//!                        └──────── HTTP ────────▶ openssl ocsp ◀──── HTTP ───────┘
//! ```
//!
//! Certificates are made at run time. The responder's index needs the serials before the
//! certificates that name its port exist, so serials are chosen first, the responder is
//! started on port 0 (it prints `ACCEPT [::]:PORT`), then the certificates are issued. Each
//! serial has two certificates: one without AIA (the server does not staple) and one whose
//! AIA names the responder (the server staples).

mod common;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

use openssl::bn::{BigNum, MsbOption};

use common::certs::LeafSpec;
use common::tools::{openssl, ChildGuard};
use common::*;

const T: Duration = Duration::from_secs(10);

/// A serial for the responder's index, chosen before the certificate that carries it exists.
fn random_serial() -> BigNum {
    let mut bn = BigNum::new().unwrap();
    bn.rand(64, MsbOption::ONE, false).unwrap();
    bn
}

/// A TLS leaf (server and client use, SANs localhost and 127.0.0.1) signed by `ca` with the
/// serial the responder's index names, and an AIA naming the responder if `aia` is set.
fn issue_tls(ca: &Ca, cn: &str, serial: &BigNum, aia: Option<&str>) -> Leaf {
    let spec = LeafSpec {
        dns: &["localhost"],
        ips: &["127.0.0.1"],
        serial: Some(serial),
        ocsp_url: aia,
        ..LeafSpec::default()
    };
    ca.issue_with(cn, KeyKind::EcP256, &spec)
}

/// `openssl ocsp` answering from an index on loopback; killed on drop.
struct Responder {
    child: ChildGuard,
    port: u16,
    _output: Receiver<String>,
}

impl Responder {
    /// Starts the responder for `ca`'s index `index`, signing with `signer` (cert + key in
    /// one file), responses valid for 5 minutes. Waits for its `ACCEPT` line.
    fn start(dir: &TestDir, index: &Path, ca_file: &Path, signer: &LeafFiles) -> Responder {
        let mut child = Command::new(openssl())
            .current_dir(dir.path())
            .args(["ocsp", "-ignore_err", "-port", "0", "-nmin", "5", "-index"])
            .arg(index)
            .arg("-CA")
            .arg(ca_file)
            .arg("-rsigner")
            .arg(&signer.cert)
            .arg("-rkey")
            .arg(&signer.key)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning openssl ocsp");
        let (tx, rx) = channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let guard = ChildGuard(Some(child));
        let mut seen = Vec::new();
        let port = loop {
            let line = rx
                .recv_timeout(T)
                .unwrap_or_else(|_| panic!("no ACCEPT line from openssl ocsp: {seen:?}"));
            // `ACCEPT [::]:PORT PID=N` (or `0.0.0.0:PORT` without IPv6).
            if let Some(rest) = line.strip_prefix("ACCEPT ") {
                let addr = rest.split_whitespace().next().unwrap_or_default();
                let port = addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok());
                break port.unwrap_or_else(|| panic!("unexpected ACCEPT line {line:?}"));
            }
            seen.push(line);
        };
        Responder {
            child: guard,
            port,
            _output: rx,
        }
    }

    /// Kills the responder now (it is also killed on drop).
    fn stop(&mut self) {
        drop(std::mem::replace(&mut self.child, ChildGuard(None)));
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }
}

/// `openssl ca` database time: YYMMDDHHMMSSZ.
const FAR_FUTURE: &str = "491231235959Z";
const REVOKED_ON: &str = "250101000000Z";

/// A CA, its OCSP responder, and server/client certificates: `good` and `revoked` ones, each
/// with and without AIA pointing at the responder.
struct Scenario {
    dir: TestDir,
    ca_file: PathBuf,
    responder: Responder,
    good: PathBuf,
    revoked: PathBuf,
    good_aia: PathBuf,
    revoked_aia: PathBuf,
    revoked_client: LeafFiles,
}

impl Scenario {
    fn new(label: &str) -> Scenario {
        let dir = TestDir::new(label);
        let ca = Ca::new("rstunnel OCSP test CA", KeyKind::EcP256);
        let ca_file = ca.write_cert(&dir, "ca.crt");
        let signer_serial = random_serial();
        let signer_spec = LeafSpec {
            ocsp_signing: true,
            serial: Some(&signer_serial),
            ..LeafSpec::default()
        };
        let signer = ca
            .issue_with("rstunnel OCSP responder", KeyKind::EcP256, &signer_spec)
            .write(&dir, "responder");
        let good_serial = random_serial();
        let revoked_serial = random_serial();
        let client_serial = random_serial();
        let line = |status: &str, revoked: &str, serial: &BigNum, cn: &str| {
            format!(
                "{status}\t{FAR_FUTURE}\t{revoked}\t{}\tunknown\t/O=rstunnel tests/CN={cn}\n",
                serial.to_hex_str().unwrap()
            )
        };
        let index = dir.write(
            "index.txt",
            [
                line("V", "", &good_serial, "good"),
                line("R", REVOKED_ON, &revoked_serial, "revoked"),
                line("R", REVOKED_ON, &client_serial, "revoked client"),
            ]
            .concat(),
        );
        let responder = Responder::start(&dir, &index, &ca_file, &signer);
        let url = responder.url();
        let mk = |cn: &str, serial: &BigNum, aia: Option<&str>, name: &str| {
            issue_tls(&ca, cn, serial, aia).write_with_chain(&dir, name, &ca)
        };
        let good = mk("good", &good_serial, None, "good");
        let revoked = mk("revoked", &revoked_serial, None, "revoked");
        let good_aia = mk("good", &good_serial, Some(&url), "good-aia");
        let revoked_aia = mk("revoked", &revoked_serial, Some(&url), "revoked-aia");
        let revoked_client =
            issue_tls(&ca, "revoked client", &client_serial, None).write(&dir, "revoked-client");
        Scenario {
            dir,
            ca_file,
            responder,
            good,
            revoked,
            good_aia,
            revoked_aia,
            revoked_client,
        }
    }

    fn server(&self, cert: &Path, backend: &Backend, extra: &str) -> Tunnel {
        Tunnel::start(
            &self.dir,
            "server",
            &server_body(backend.addr(), cert, extra),
        )
    }

    /// A client tunnel to `server` that verifies the chain against the CA, plus `extra`.
    fn client(&self, server: &Tunnel, extra: &str) -> Tunnel {
        let checks = format!(
            "verifyChain = yes\nCAfile = {}\n{extra}",
            self.ca_file.display()
        );
        Tunnel::start(
            &self.dir,
            "client",
            &client_body(server.addr("srv"), &checks),
        )
    }
}

/// A loopback URL where nothing listens.
fn dead_url() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}/")
}

fn assert_flows(client: &Tunnel, echo: &Backend) {
    let data = payload(7, 10_000);
    let got = echo_session(client.addr("cli"), &data).unwrap_or_else(|e| {
        client.fail(&format!("session through the tunnels failed: {e}"));
    });
    if got != data {
        client.fail(&format!(
            "echoed data differs ({} bytes back, {} sent)",
            got.len(),
            data.len()
        ));
    }
    assert_eq!(echo.connections(), 1);
}

fn assert_refused(client: &Tunnel, echo: &Backend) {
    let p = probe(client.addr("cli"), b"must not get through\n", T);
    if !p.received.is_empty() || p.end == End::TimedOut {
        client.fail(&format!("session was not refused: {p:?}"));
    }
    assert_eq!(echo.connections(), 0, "the backend must not be reached");
}

#[test]
fn client_accepts_a_good_server_certificate() {
    let s = Scenario::new("ocsp-good");
    let echo = Backend::echo();
    let server = s.server(&s.good, &echo, "");
    let client = s.client(&server, &format!("OCSP = {}\n", s.responder.url()));
    assert_flows(&client, &echo);
    client.wait_for_log("OCSP: Certificate good at depth=0", T);
    assert!(
        !server.has_log("OCSP stapling"),
        "no AIA: the server must not staple"
    );
}

#[test]
fn client_refuses_a_revoked_server_certificate() {
    let s = Scenario::new("ocsp-revoked");
    let echo = Backend::echo();
    let server = s.server(&s.revoked, &echo, "");
    let client = s.client(&server, &format!("OCSP = {}\n", s.responder.url()));
    assert_refused(&client, &echo);
    let line = client.wait_for_log("OCSP: Certificate revoked", T);
    assert!(line.contains("LOG4["), "{line}");
    assert!(line.contains("CN=revoked"), "{line}");
}

#[test]
fn nonce_is_sent_and_checked() {
    let s = Scenario::new("ocsp-nonce");
    let echo = Backend::echo();
    let server = s.server(&s.good, &echo, "");
    let client = s.client(
        &server,
        &format!(
            "OCSP = {}\nOCSPnonce = yes\nOCSPflag = NOEXPLICIT\n",
            s.responder.url()
        ),
    );
    assert_flows(&client, &echo);
    client.wait_for_log("OCSP: Certificate good at depth=0", T);
}

#[test]
fn responder_down_with_require_no_accepts_with_a_warning() {
    let s = Scenario::new("ocsp-down-lenient");
    let echo = Backend::echo();
    let server = s.server(&s.good, &echo, "");
    let client = s.client(
        &server,
        &format!("OCSP = {}\nOCSPrequire = no\nTIMEOUTocsp = 2\n", dead_url()),
    );
    assert_flows(&client, &echo);
    let line = client.wait_for_log("without a revocation check", T);
    assert!(line.contains("LOG4["), "{line}");
}

#[test]
fn responder_down_with_require_yes_refuses() {
    let s = Scenario::new("ocsp-down-strict");
    let echo = Backend::echo();
    let server = s.server(&s.good, &echo, "");
    let client = s.client(
        &server,
        &format!("OCSP = {}\nTIMEOUTocsp = 2\n", dead_url()),
    );
    assert_refused(&client, &echo);
    client.wait_for_log("no conclusive answer", T);
}

#[test]
fn server_refuses_a_revoked_client_certificate() {
    let s = Scenario::new("ocsp-client-cert");
    let echo = Backend::echo();
    let server = s.server(
        &s.good,
        &echo,
        &format!(
            "verifyChain = yes\nCAfile = {}\nOCSP = {}\n",
            s.ca_file.display(),
            s.responder.url()
        ),
    );
    let client = s.client(
        &server,
        &format!(
            "cert = {}\nkey = {}\n",
            s.revoked_client.cert.display(),
            s.revoked_client.key.display()
        ),
    );
    assert_refused(&client, &echo);
    server.wait_for_log("OCSP: Certificate revoked", T);
}

/// `openssl s_client -status` against `port`, verifying against the CA; stdin is empty, so
/// it exits after the handshake.
fn s_client_status(s: &Scenario, port: u16) -> String {
    let args = [
        OsStr::new("-status"),
        OsStr::new("-servername"),
        OsStr::new("localhost"),
        OsStr::new("-CAfile"),
        s.ca_file.as_os_str(),
    ];
    let r = openssl_cli::s_client(port, &args, b"", Duration::from_secs(20));
    format!("{}\n{}", r.stdout, r.stderr)
}

#[test]
fn server_staples_from_the_aia_responder() {
    let s = Scenario::new("ocsp-staple");
    let echo = Backend::echo();
    let server = s.server(&s.good_aia, &echo, "");
    server.wait_for_log("OCSP stapling: response from", T);
    let out = s_client_status(&s, server.port("srv"));
    for expected in ["OCSP Response Status: successful", "Cert Status: good"] {
        if !out.contains(expected) {
            server.fail(&format!("s_client -status lacks {expected:?}:\n{out}"));
        }
    }
}

#[test]
fn server_staples_from_the_configured_responder() {
    let s = Scenario::new("ocsp-staple-url");
    let echo = Backend::echo();
    let server = s.server(&s.good, &echo, &format!("OCSP = {}\n", s.responder.url()));
    let out = s_client_status(&s, server.port("srv"));
    if !out.contains("Cert Status: good") {
        server.fail(&format!("no stapled good status:\n{out}"));
    }
}

#[test]
fn client_uses_the_stapled_response() {
    let mut s = Scenario::new("ocsp-stapled-client");
    let echo = Backend::echo();
    let server = s.server(&s.good_aia, &echo, "");
    server.wait_for_log("OCSP stapling: response from", T);
    // From now on only the stapled response can answer.
    s.responder.stop();
    let client = s.client(&server, "OCSPaia = yes\n");
    assert_flows(&client, &echo);
    client.wait_for_log("the server stapled a response", T);
    client.wait_for_log("OCSP: Certificate good at depth=0", T);
}

#[test]
fn client_refuses_a_stapled_revoked_status() {
    let s = Scenario::new("ocsp-stapled-revoked");
    let echo = Backend::echo();
    let server = s.server(&s.revoked_aia, &echo, "");
    server.wait_for_log("(certificate revoked)", T);
    let client = s.client(&server, &format!("OCSP = {}\n", dead_url()));
    assert_refused(&client, &echo);
    client.wait_for_log("OCSP: Certificate revoked", T);
}

/// TLS 1.2 sends the stapled response in its own message after the certificate: the client
/// must still wait for it rather than judge the server in the verify callback.
#[test]
fn tls12_client_uses_the_stapled_response() {
    let mut s = Scenario::new("ocsp-tls12-stapled");
    let echo = Backend::echo();
    let server = s.server(&s.good_aia, &echo, "");
    server.wait_for_log("OCSP stapling: response from", T);
    s.responder.stop();
    let client = s.client(&server, "OCSPaia = yes\nsslVersionMax = TLSv1.2\n");
    assert_flows(&client, &echo);
    client.wait_for_log("the server stapled a response", T);
    client.wait_for_log("TLSv1.2 ciphersuite", T);
}

#[test]
fn tls12_client_refuses_a_revoked_server_certificate() {
    let s = Scenario::new("ocsp-tls12-revoked");
    let echo = Backend::echo();
    let server = s.server(&s.revoked, &echo, "");
    let client = s.client(
        &server,
        &format!("OCSP = {}\nsslVersionMax = TLSv1.2\n", s.responder.url()),
    );
    assert_refused(&client, &echo);
    client.wait_for_log("OCSP: Certificate revoked", T);
}

#[test]
fn server_without_a_response_serves_unstapled() {
    let s = Scenario::new("ocsp-staple-down");
    let echo = Backend::echo();
    let server = s.server(
        &s.good,
        &echo,
        &format!("OCSP = {}\nTIMEOUTocsp = 2\n", dead_url()),
    );
    let line = server.wait_for_log("serving without stapling", T);
    assert!(line.contains("LOG4["), "{line}");
    let out = s_client_status(&s, server.port("srv"));
    if !out.contains("OCSP response: no response sent") || !out.contains("BEGIN CERTIFICATE") {
        server.fail(&format!("expected a handshake without stapling:\n{out}"));
    }
}

#[test]
fn ocsp_without_verification_only_warns() {
    let s = Scenario::new("ocsp-no-verify");
    let echo = Backend::echo();
    let server = s.server(&s.revoked, &echo, "");
    let client = Tunnel::start(
        &s.dir,
        "client",
        &client_body(
            server.addr("srv"),
            &format!("OCSP = {}\n", s.responder.url()),
        ),
    );
    let line = client.wait_for_log("verifyChain and verifyPeer are off", T);
    assert!(line.contains("LOG4["), "{line}");
    assert_flows(&client, &echo);
}
