//! `CRLfile` / `CRLpath` checked against foreign peers (OpenSSL's `s_client`/`s_server` and
//! the reference `stunnel4`), with a CA run by the `openssl ca` command line (index.txt,
//! serial, crlnumber, `-revoke`, `-gencrl`, `openssl rehash`): the good client certificate
//! gets through, the revoked one is refused and the server logs `certificate revoked`; the
//! same on the client side against `s_server`/stunnel4.
//!
//! Checking the tests themselves: `RSTUNNEL_TEST_BIN=/usr/bin/stunnel4` runs them with the
//! reference in rstunnel's place; all pass then. Every foreign process runs under a guard
//! (killed on drop) and every wait is bounded.

mod common;

use std::path::{Path, PathBuf};

use common::tools::stunnel4;

use common::tls_peers::*;
use common::*;

const CA_CNF: &str = "\
[ca]
default_ca = test_ca

[test_ca]
dir = .
database = index.txt
serial = serial
crlnumber = crlnumber
new_certs_dir = newcerts
certificate = ca.crt
private_key = ca.key
default_md = sha256
default_days = 30
default_crl_days = 30
policy = policy_any
unique_subject = no
copy_extensions = none
x509_extensions = usr_cert

[policy_any]
organizationName = optional
commonName = supplied

[usr_cert]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth, serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[req]
distinguished_name = req_dn
prompt = no

[req_dn]
CN = unused

[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
";

/// `openssl req -new` in `root` with its `openssl.cnf`: a fresh P-256 key into `key` and a
/// request (or, with `-x509` in `extra`, a self-signed certificate) for `/O=rstunnel tests/CN=cn`
/// into `out`.
fn new_key_req(root: &Path, extra: &[&str], key: &str, out: &str, cn: &str) {
    let subj = format!("/O=rstunnel tests/CN={cn}");
    let mut args = vec!["req", "-config", "openssl.cnf", "-new", "-newkey", "ec"];
    args.extend([
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key,
    ]);
    args.extend(["-out", out, "-subj", &subj]);
    args.extend_from_slice(extra);
    ossl(root, &args);
}

/// A CA kept by `openssl ca` in `<test dir>/ca`: openssl.cnf, index.txt, serial,
/// crlnumber, newcerts/.
struct CliCa {
    root: PathBuf,
    cert: PathBuf,
}

impl CliCa {
    fn new(dir: &TestDir) -> CliCa {
        let root = dir.join("ca");
        std::fs::create_dir_all(root.join("newcerts")).unwrap();
        std::fs::write(root.join("openssl.cnf"), CA_CNF).unwrap();
        std::fs::write(root.join("index.txt"), "").unwrap();
        std::fs::write(root.join("serial"), "1000\n").unwrap();
        std::fs::write(root.join("crlnumber"), "1000\n").unwrap();
        new_key_req(
            &root,
            &["-x509", "-extensions", "v3_ca", "-days", "30"],
            "ca.key",
            "ca.crt",
            "openssl ca test CA",
        );
        let cert = root.join("ca.crt");
        CliCa { root, cert }
    }

    /// A key, a CSR and `openssl ca` signing it: `<name>.crt`, `<name>.key` and
    /// `<name>.pem` (both) in the CA's directory.
    fn issue(&self, name: &str, cn: &str) -> LeafFiles {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let crt = format!("{name}.crt");
        new_key_req(&self.root, &[], &key, &csr, cn);
        ossl(
            &self.root,
            &[
                "ca",
                "-config",
                "openssl.cnf",
                "-batch",
                "-notext",
                "-in",
                &csr,
                "-out",
                &crt,
            ],
        );
        let files = LeafFiles {
            combined: self.root.join(format!("{name}.pem")),
            cert: self.root.join(&crt),
            key: self.root.join(&key),
        };
        let mut both = std::fs::read(&files.cert).unwrap();
        both.extend(std::fs::read(&files.key).unwrap());
        std::fs::write(&files.combined, both).unwrap();
        private_file(&files.combined);
        private_file(&files.key);
        files
    }

    fn revoke(&self, leaf: &LeafFiles) {
        ossl(
            &self.root,
            &["ca", "-config", "openssl.cnf", "-revoke", &p(&leaf.cert)],
        );
    }

    /// `openssl ca -gencrl` into `crl.pem`; also `crldir/` holding it, hashed by
    /// `openssl rehash`. Returns (file, dir).
    fn gencrl(&self) -> (PathBuf, PathBuf) {
        ossl(
            &self.root,
            &["ca", "-config", "openssl.cnf", "-gencrl", "-out", "crl.pem"],
        );
        let dir = self.root.join("crldir");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(self.root.join("crl.pem"), dir.join("crl.pem")).unwrap();
        ossl(&self.root, &["rehash", &p(&dir)]);
        let hashed = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".r0"));
        assert!(
            hashed,
            "openssl rehash made no HASH.r0 link in {}",
            dir.display()
        );
        (self.root.join("crl.pem"), dir)
    }
}

/// The CLI CA with a good and a revoked client certificate, and its CRL.
struct RevocationSetup {
    ca: CliCa,
    good: LeafFiles,
    revoked: LeafFiles,
    crl_file: PathBuf,
    crl_dir: PathBuf,
}

fn revocation_setup(dir: &TestDir) -> RevocationSetup {
    let ca = CliCa::new(dir);
    let good = ca.issue("good", "good.client");
    let revoked = ca.issue("revoked", "revoked.client");
    ca.revoke(&revoked);
    let (crl_file, crl_dir) = ca.gencrl();
    let index = std::fs::read_to_string(ca.root.join("index.txt")).unwrap();
    assert!(
        index
            .lines()
            .any(|l| l.starts_with('R') && l.contains("revoked.client"))
            && index
                .lines()
                .any(|l| l.starts_with('V') && l.contains("good.client")),
        "index.txt after -revoke:\n{index}"
    );
    RevocationSetup {
        ca,
        good,
        revoked,
        crl_file,
        crl_dir,
    }
}

/// rstunnel server (verifyChain + CAfile + `crl_line`) and `openssl s_client -cert`.
fn crl_server_with_s_client(label: &str, use_dir: bool) {
    let dir = TestDir::new(label);
    let pki = Pki::new(&dir);
    let rev = revocation_setup(&dir);
    let crl_line = if use_dir {
        format!("CRLpath = {}", rev.crl_dir.display())
    } else {
        format!("CRLfile = {}", rev.crl_file.display())
    };
    let backend = Backend::line_echo_once();
    let srv = Tunnel::server(
        &dir,
        &pki,
        backend.addr(),
        &format!(
            "verifyChain = yes\nCAfile = {}\n{crl_line}\n",
            rev.ca.cert.display()
        ),
    );
    let port = srv.port("srv");
    for version in ["-tls1_3", "-tls1_2"] {
        let r = s_client_as(port, &rev.good, &[version]);
        if !echoed(&r) {
            srv.fail(&format!(
                "{crl_line}: s_client {version} with the good certificate must get through\n{}",
                r.describe()
            ));
        }
        let before = srv.log_lines().len();
        let conns = backend.connections();
        let r = s_client_as(port, &rev.revoked, &[version]);
        if echoed(&r) || backend.connections() != conns {
            srv.fail(&format!(
                "{crl_line}: s_client {version} with the revoked certificate must be refused \
                 before the backend\n{}",
                r.describe()
            ));
        }
        if wait_new_log(&srv, before, |l| l.contains("certificate revoked")).is_none() {
            srv.fail(&format!(
                "{crl_line}: the refusal of the revoked certificate ({version}) must be \
                 logged as `certificate revoked`\n--- s_client ---\n{}",
                r.describe()
            ));
        }
    }
}

#[test]
fn crlfile_refuses_revoked_s_client_certificate() {
    crl_server_with_s_client("crl-file-s-client", false);
}

#[test]
fn crlpath_refuses_revoked_s_client_certificate() {
    crl_server_with_s_client("crl-path-s-client", true);
}

/// A stunnel4 client presenting the good / revoked certificate to an rstunnel server with
/// `CRLfile` (and, second round, `CRLpath`).
#[test]
fn crl_refuses_revoked_stunnel4_client() {
    stunnel4();
    let dir = TestDir::new("crl-stunnel4-client");
    let pki = Pki::new(&dir);
    let rev = revocation_setup(&dir);
    let echo = Backend::echo();
    for crl_line in [
        format!("CRLfile = {}", rev.crl_file.display()),
        format!("CRLpath = {}", rev.crl_dir.display()),
    ] {
        let srv = Tunnel::server(
            &dir,
            &pki,
            echo.addr(),
            &format!(
                "verifyChain = yes\nCAfile = {}\n{crl_line}\n",
                rev.ca.cert.display()
            ),
        );
        let good = client(
            Program::Stunnel4,
            &dir,
            "s4-good",
            srv.addr("srv"),
            &format!("cert = {}\n", rev.good.combined.display()),
        );
        assert_echo_works(
            good.addr("cli"),
            &srv,
            &format!("{crl_line}: good stunnel4 client"),
        );
        let conns = echo.connections();
        let bad = client(
            Program::Stunnel4,
            &dir,
            "s4-revoked",
            srv.addr("srv"),
            &format!("cert = {}\n", rev.revoked.combined.display()),
        );
        let before = srv.log_lines().len();
        assert_refused(
            bad.addr("cli"),
            &srv,
            before,
            "certificate revoked",
            &format!("{crl_line}: revoked stunnel4 client"),
        );
        assert_eq!(
            echo.connections(),
            conns,
            "{crl_line}: the backend must not see the revoked client"
        );
    }
}

/// Client side: an rstunnel client with `CRLfile` refuses an `s_server` whose certificate
/// is revoked, and accepts the good one. Against a stunnel4 server as well.
#[test]
fn crlfile_client_side_refuses_revoked_server() {
    stunnel4();
    let dir = TestDir::new("crl-client-side");
    let rev = revocation_setup(&dir);
    let verify = format!(
        "verifyChain = yes\nCAfile = {}\nCRLfile = {}\n",
        rev.ca.cert.display(),
        rev.crl_file.display()
    );
    for (leaf, ok) in [(&rev.good, true), (&rev.revoked, false)] {
        let state = if ok { "good" } else { "revoked" };
        client_against_both_servers(&dir, leaf, &verify, ok, "certificate revoked", &|peer| {
            format!("{state} {peer}")
        });
    }
}
