//! Certificates in every form, checked against foreign peers (OpenSSL's `s_client` and the
//! reference `stunnel4`): a chain file (leaf + intermediate) trusted through the root only,
//! an encrypted key (exit 1 at once saying so, no passphrase prompt), PKCS#12 with an empty
//! password (also with the intermediate inside).
//!
//! Checking the tests themselves: `RSTUNNEL_TEST_BIN=/usr/bin/stunnel4` runs them with the
//! reference in rstunnel's place. All pass then except the rstunnel-only `--check` of
//! `encrypted_key_is_refused_without_prompt` and the `chain.p12` step of
//! `pkcs12_cert_with_empty_password` (stunnel 5.68 does not send a bundle's CA
//! certificates). Every foreign process runs under a guard (killed on drop) and every wait
//! is bounded.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::certs::intermediate_ca;
use common::daemon::rstunnel_bin;
use common::tools::{run_with_timeout, stunnel4};

use common::tls_peers::*;
use common::*;

/// `cert = chain.pem` (leaf, intermediate CA, key): clients that trust only the root
/// accept it; a file with the leaf alone is refused by them (missing issuer).
/// A stunnel4 client tunnel (`s4-client`) to `srv` that verifies the chain against `ca`
/// and checks the host name `right.name`.
fn stunnel4_client_trusting(dir: &TestDir, srv: &Tunnel, ca: &Path) -> Tunnel {
    let verify = format!(
        "verifyChain = yes\nCAfile = {}\ncheckHost = right.name\n",
        ca.display()
    );
    client(
        Program::Stunnel4,
        dir,
        "s4-client",
        srv.addr("srv"),
        &verify,
    )
}

#[test]
fn cert_chain_file_is_sent_whole() {
    stunnel4();
    let dir = TestDir::new("chain-file");
    let root = Ca::new("rstunnel chain root", KeyKind::EcP256);
    let root_file = root.write_cert(&dir, "root.crt");
    let inter = intermediate_ca(&root, "rstunnel chain intermediate");
    let leaf = inter.issue("right.name", common::certs::SERVER_NAMES, KeyKind::EcP256);
    let mut chain = leaf.cert.to_pem().unwrap();
    chain.extend(inter.cert.to_pem().unwrap());
    chain.extend(leaf.key.private_key_to_pem_pkcs8().unwrap());
    let chain_file = dir.write("chain.pem", chain);
    private_file(&chain_file);
    let leaf_only = leaf.write(&dir, "leaf-only").combined;

    for (cert, ok) in [(&chain_file, true), (&leaf_only, false)] {
        let what = if ok {
            "leaf + intermediate"
        } else {
            "leaf alone"
        };
        let backend = Backend::line_echo_once();
        let srv = server(Program::Rstunnel, &dir, "server", backend.addr(), cert, "");
        let r = s_client_verifying(srv.port("srv"), &root_file);
        let verified = r.stdout.contains("Verify return code: 0 (ok)");
        if ok != (verified && echoed(&r)) {
            srv.fail(&format!(
                "{what}: s_client trusting only the root must {}\n{}",
                if ok {
                    "verify and get through"
                } else {
                    "refuse"
                },
                r.describe()
            ));
        }
        let echo = Backend::echo();
        let srv = server(Program::Rstunnel, &dir, "server2", echo.addr(), cert, "");
        let cli = stunnel4_client_trusting(&dir, &srv, &root_file);
        if ok {
            assert_echo_works(cli.addr("cli"), &srv, "stunnel4 client trusting the root");
        } else {
            assert_refused(cli.addr("cli"), &cli, 0, "", "stunnel4 client, leaf alone");
            assert_eq!(echo.connections(), 0);
        }
    }
}

/// An encrypted private key: `rstunnel --check` (and a plain start) exit 1 at once, saying
/// the key is encrypted, without asking for a passphrase (stdin is closed).
#[test]
fn encrypted_key_is_refused_without_prompt() {
    let dir = TestDir::new("encrypted-key");
    let pki = Pki::new(&dir);
    // PKCS#8 (`ENCRYPTED PRIVATE KEY`) and the traditional form (`Proc-Type: 4,ENCRYPTED`).
    let pkcs8 = dir.join("encrypted.key");
    let traditional = dir.join("encrypted-traditional.key");
    for (out, extra, marker) in [
        (&pkcs8, None, "ENCRYPTED PRIVATE KEY"),
        (&traditional, Some("-traditional"), "Proc-Type: 4,ENCRYPTED"),
    ] {
        let mut args = vec!["pkey", "-in"];
        let key = p(&pki.server.key);
        let out_s = p(out);
        args.push(&key);
        args.extend(extra);
        args.extend(["-aes256", "-passout", "pass:x", "-out", &out_s]);
        ossl(dir.path(), &args);
        private_file(out);
        assert!(
            std::fs::read_to_string(out).unwrap().contains(marker),
            "openssl pkey {args:?} wrote no {marker:?}"
        );
    }
    // The encrypted key inside the `cert` file itself (no `key =`).
    let mut combined = std::fs::read(&pki.server.cert).unwrap();
    combined.extend(std::fs::read(&pkcs8).unwrap());
    let combined = dir.write("encrypted-combined.pem", combined);
    private_file(&combined);

    let cases = [
        (
            "key = PKCS#8",
            format!(
                "cert = {}\nkey = {}\n",
                pki.server.cert.display(),
                pkcs8.display()
            ),
        ),
        (
            "key = traditional",
            format!(
                "cert = {}\nkey = {}\n",
                pki.server.cert.display(),
                traditional.display()
            ),
        ),
        (
            "cert = cert+key",
            format!("cert = {}\n", combined.display()),
        ),
    ];
    for (i, (what, lines)) in cases.iter().enumerate() {
        let conf = dir.write(
            &format!("encrypted{i}.conf"),
            format!(
                "foreground = yes\n[srv]\naccept = 127.0.0.1:0\nconnect = 127.0.0.1:9\n{lines}"
            ),
        );
        for args in [vec!["--check", &*p(&conf)], vec![&*p(&conf)]] {
            let started = Instant::now();
            let mut cmd = Command::new(rstunnel_bin());
            cmd.args(&args);
            // stdin is a pipe that is closed at once: nothing to answer a prompt with.
            let r = run_with_timeout(cmd, b"", RUN_TIMEOUT);
            let out = format!("{}{}", r.stdout, r.stderr);
            assert_eq!(
                r.status.code(),
                Some(1),
                "{what}: rstunnel {args:?}\n{}",
                r.describe()
            );
            assert!(
                out.contains("encrypted"),
                "{what}: rstunnel {args:?} must say that the key is encrypted\n{}",
                r.describe()
            );
            assert!(
                !out.to_lowercase().contains("pass phrase"),
                "{what}: rstunnel {args:?} must not prompt\n{}",
                r.describe()
            );
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{what}: rstunnel {args:?} took {:?}",
                started.elapsed()
            );
        }
    }
}

/// `cert = server.p12` (PKCS#12, empty password, key and certificate): s_client and a
/// stunnel4 client verify it and get through. One with the chain inside works for
/// clients trusting only the root. A PKCS#12 file with a password is refused by `--check`
/// at once (exit 1, no prompt).
/// `openssl pkcs12 -export` of `leaf` (and the `chain` certificates) into `out`, protected by
/// `password` (empty: none); the bundle is made private (mode 0600) as a key file must be.
fn pkcs12_bundle(dir: &TestDir, leaf: &LeafFiles, chain: &[&Path], password: &str, out: &Path) {
    let (key, cert, out_s) = (p(&leaf.key), p(&leaf.cert), p(out));
    let pass = format!("pass:{password}");
    let mut args = vec![
        "pkcs12", "-export", "-passout", &pass, "-inkey", &key, "-in", &cert,
    ];
    let chain: Vec<String> = chain.iter().map(|c| p(c)).collect();
    for c in &chain {
        args.extend(["-certfile", c.as_str()]);
    }
    args.extend(["-out", out_s.as_str()]);
    ossl(dir.path(), &args);
    private_file(out);
}

#[test]
fn pkcs12_cert_with_empty_password() {
    stunnel4();
    let dir = TestDir::new("pkcs12");
    let pki = Pki::new(&dir);
    let p12 = dir.join("server.p12");
    pkcs12_bundle(&dir, &pki.server, &[], "", &p12);
    let backend = Backend::line_echo_once();
    let srv = server(Program::Rstunnel, &dir, "server", backend.addr(), &p12, "");
    let r = s_client_verifying(srv.port("srv"), &pki.ca_file);
    if !echoed(&r) || !r.stdout.contains("Verify return code: 0 (ok)") {
        srv.fail(&format!(
            "cert = server.p12: s_client must verify and get through\n{}",
            r.describe()
        ));
    }
    let echo = Backend::echo();
    let srv = server(Program::Rstunnel, &dir, "server2", echo.addr(), &p12, "");
    let cli = stunnel4_client_trusting(&dir, &srv, &pki.ca_file);
    assert_echo_works(cli.addr("cli"), &srv, "stunnel4 client, cert = server.p12");
    drop((cli, srv));

    // With the intermediate inside the bundle (rstunnel sends it; stunnel 5.68 does not).
    let root = Ca::new("rstunnel p12 root", KeyKind::EcP256);
    let root_file = root.write_cert(&dir, "p12-root.crt");
    let inter = intermediate_ca(&root, "rstunnel p12 intermediate");
    let inter_file = inter.write_cert(&dir, "p12-inter.crt");
    let leaf = inter
        .issue("right.name", common::certs::SERVER_NAMES, KeyKind::EcP256)
        .write(&dir, "p12-leaf");
    let chain_p12 = dir.join("chain.p12");
    pkcs12_bundle(&dir, &leaf, &[&inter_file], "", &chain_p12);
    let backend = Backend::line_echo_once();
    let srv = server(
        Program::Rstunnel,
        &dir,
        "server3",
        backend.addr(),
        &chain_p12,
        "",
    );
    let r = s_client_verifying(srv.port("srv"), &root_file);
    if !echoed(&r) || !r.stdout.contains("Verify return code: 0 (ok)") {
        srv.fail(&format!(
            "cert = chain.p12: s_client trusting only the root must verify\n{}",
            r.describe()
        ));
    }
    drop(srv);

    // Refused: a password-protected bundle.
    let locked = dir.join("locked.p12");
    pkcs12_bundle(&dir, &pki.server, &[], "secret", &locked);
    let conf = dir.write(
        "locked.conf",
        format!(
            "[srv]\naccept = 127.0.0.1:0\nconnect = 127.0.0.1:9\ncert = {}\n",
            locked.display()
        ),
    );
    let started = Instant::now();
    let mut cmd = Command::new(rstunnel_bin());
    cmd.arg("--check").arg(&conf);
    let r = run_with_timeout(cmd, b"", RUN_TIMEOUT);
    assert_eq!(
        r.status.code(),
        Some(1),
        "a PKCS#12 file with a password must fail --check\n{}",
        r.describe()
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "--check of a locked PKCS#12 must not wait for a password"
    );
}
