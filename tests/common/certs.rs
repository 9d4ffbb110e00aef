//! Certificates made at run time with the `openssl` crate (like ghostunnel's `RootCert`):
//! nothing is checked in, nothing expires between runs.
//!
//! [`Ca::new`] makes a self-signed CA; [`Ca::issue`] a leaf signed by it with a CN and
//! subjectAltName entries; [`Leaf::write`] writes it as PEM three ways (cert+key in one file,
//! cert alone, key alone, mode 0600). [`Pki`] is the usual set for a test.
//! Two other kinds, P-256 only: [`intermediate_ca`] (CA:TRUE, pathlen 0, signed by a root)
//! and [`leaf`] (DNS, IP and email SANs, no subjectKeyIdentifier).

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509NameBuilder, X509};

use super::TestDir;

/// Key algorithm for a CA or a leaf.
#[derive(Clone, Copy, Debug)]
pub enum KeyKind {
    EcP256,
    Rsa2048,
}

fn new_key(kind: KeyKind) -> PKey<Private> {
    match kind {
        KeyKind::EcP256 => {
            let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("P-256 group");
            PKey::from_ec_key(EcKey::generate(&group).expect("EC key")).expect("EC pkey")
        }
        KeyKind::Rsa2048 => {
            PKey::from_rsa(Rsa::generate(2048).expect("RSA key")).expect("RSA pkey")
        }
    }
}

fn random_serial() -> Asn1Integer {
    let mut bn = BigNum::new().unwrap();
    bn.rand(127, MsbOption::MAYBE_ZERO, false).unwrap();
    bn.to_asn1_integer().unwrap()
}

/// Builder with subject CN, random serial, validity from a day ago to 30 days ahead.
fn base_builder(cn: &str, key: &PKey<Private>) -> (X509Builder, openssl::x509::X509Name) {
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_nid(Nid::ORGANIZATIONNAME, "rstunnel tests")
        .unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
    let name = name.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&random_serial()).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    // A little slack for clock differences is not needed on one machine; 30 days is plenty.
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    (b, name)
}

/// A certificate authority: self-signed, `CA:TRUE`, keyCertSign.
pub struct Ca {
    pub cn: String,
    pub cert: X509,
    pub key: PKey<Private>,
}

impl Ca {
    pub fn new(cn: &str, kind: KeyKind) -> Ca {
        let key = new_key(kind);
        let (mut b, name) = base_builder(cn, &key);
        b.set_issuer_name(&name).unwrap();
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
        b.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()
                .unwrap(),
        )
        .unwrap();
        let ski = SubjectKeyIdentifier::new()
            .build(&b.x509v3_context(None, None))
            .unwrap();
        b.append_extension(ski).unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        Ca {
            cn: cn.to_string(),
            cert: b.build(),
            key,
        }
    }

    /// A leaf signed by this CA. `sans` entries that parse as an IP address become `IP:`
    /// entries, the others `DNS:`. Usable as server and as client certificate.
    pub fn issue(&self, cn: &str, sans: &[&str], kind: KeyKind) -> Leaf {
        let key = new_key(kind);
        let (mut b, _) = base_builder(cn, &key);
        b.set_issuer_name(self.cert.subject_name()).unwrap();
        b.append_extension(BasicConstraints::new().critical().build().unwrap())
            .unwrap();
        b.append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .key_encipherment()
                .build()
                .unwrap(),
        )
        .unwrap();
        b.append_extension(
            ExtendedKeyUsage::new()
                .server_auth()
                .client_auth()
                .build()
                .unwrap(),
        )
        .unwrap();
        if !sans.is_empty() {
            let mut san = SubjectAlternativeName::new();
            for s in sans {
                if s.parse::<IpAddr>().is_ok() {
                    san.ip(s);
                } else {
                    san.dns(s);
                }
            }
            let ext = san
                .build(&b.x509v3_context(Some(&self.cert), None))
                .unwrap();
            b.append_extension(ext).unwrap();
        }
        let ski = SubjectKeyIdentifier::new()
            .build(&b.x509v3_context(Some(&self.cert), None))
            .unwrap();
        b.append_extension(ski).unwrap();
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&b.x509v3_context(Some(&self.cert), None))
            .unwrap();
        b.append_extension(aki).unwrap();
        b.sign(&self.key, MessageDigest::sha256()).unwrap();
        Leaf {
            cert: b.build(),
            key,
        }
    }

    /// Writes the CA certificate (PEM) as `name` in `dir`; usable as `CAfile`.
    pub fn write_cert(&self, dir: &TestDir, name: &str) -> PathBuf {
        dir.write(name, self.cert.to_pem().unwrap())
    }
}

/// An intermediate CA signed by `root` (CA:TRUE, pathlen 0).
pub fn intermediate_ca(root: &Ca, cn: &str) -> Ca {
    let key = new_key(KeyKind::EcP256);
    let (mut b, _) = base_builder(cn, &key);
    b.set_issuer_name(root.cert.subject_name()).unwrap();
    b.append_extension(
        BasicConstraints::new()
            .critical()
            .ca()
            .pathlen(0)
            .build()
            .unwrap(),
    )
    .unwrap();
    b.append_extension(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()
            .unwrap(),
    )
    .unwrap();
    let ski = SubjectKeyIdentifier::new()
        .build(&b.x509v3_context(Some(&root.cert), None))
        .unwrap();
    b.append_extension(ski).unwrap();
    let aki = AuthorityKeyIdentifier::new()
        .keyid(true)
        .build(&b.x509v3_context(Some(&root.cert), None))
        .unwrap();
    b.append_extension(aki).unwrap();
    b.sign(&root.key, MessageDigest::sha256()).unwrap();
    Ca {
        cn: cn.to_string(),
        cert: b.build(),
        key,
    }
}

/// A leaf (server and client use) signed by `ca` with DNS, IP and email SANs.
pub fn leaf(ca: &Ca, cn: &str, dns: &[&str], ips: &[&str], emails: &[&str]) -> Leaf {
    let key = new_key(KeyKind::EcP256);
    let (mut b, _) = base_builder(cn, &key);
    b.set_issuer_name(ca.cert.subject_name()).unwrap();
    b.append_extension(BasicConstraints::new().critical().build().unwrap())
        .unwrap();
    b.append_extension(
        KeyUsage::new()
            .critical()
            .digital_signature()
            .build()
            .unwrap(),
    )
    .unwrap();
    b.append_extension(
        ExtendedKeyUsage::new()
            .server_auth()
            .client_auth()
            .build()
            .unwrap(),
    )
    .unwrap();
    let mut san = SubjectAlternativeName::new();
    for d in dns {
        san.dns(d);
    }
    for i in ips {
        san.ip(i);
    }
    for e in emails {
        san.email(e);
    }
    let ext = san.build(&b.x509v3_context(Some(&ca.cert), None)).unwrap();
    b.append_extension(ext).unwrap();
    let aki = AuthorityKeyIdentifier::new()
        .keyid(true)
        .build(&b.x509v3_context(Some(&ca.cert), None))
        .unwrap();
    b.append_extension(aki).unwrap();
    b.sign(&ca.key, MessageDigest::sha256()).unwrap();
    Leaf {
        cert: b.build(),
        key,
    }
}

/// A leaf certificate and its private key.
pub struct Leaf {
    pub cert: X509,
    pub key: PKey<Private>,
}

/// Where [`Leaf::write`] put a leaf.
#[derive(Clone, Debug)]
pub struct LeafFiles {
    /// Certificate then key, in one file (stunnel's `cert =` alone).
    pub combined: PathBuf,
    /// Certificate only (with `key =`).
    pub cert: PathBuf,
    /// PKCS#8 private key only.
    pub key: PathBuf,
}

impl Leaf {
    /// Writes `<name>.pem` (cert+key), `<name>.crt` and `<name>.key` into `dir`. Files holding
    /// the key get mode 0600 (stunnel warns about "other" bits on key files).
    pub fn write(&self, dir: &TestDir, name: &str) -> LeafFiles {
        let cert_pem = self.cert.to_pem().unwrap();
        let key_pem = self.key.private_key_to_pem_pkcs8().unwrap();
        let mut both = cert_pem.clone();
        both.extend_from_slice(&key_pem);
        let files = LeafFiles {
            combined: dir.write(&format!("{name}.pem"), both),
            cert: dir.write(&format!("{name}.crt"), cert_pem),
            key: dir.write(&format!("{name}.key"), key_pem),
        };
        for p in [&files.combined, &files.key] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        files
    }
}

/// Host names the standard server certificate is valid for.
pub const SERVER_NAMES: &[&str] = &["localhost", "right.name", "127.0.0.1"];

/// The usual set of certificates for one test, written into its [`TestDir`]:
///
/// * `ca_file`: the trusted CA (`ca.crt`); `wrong_ca_file`: an unrelated CA (`wrong-ca.crt`).
/// * `server`: signed by the CA, CN `right.name`, SANs [`SERVER_NAMES`].
/// * `client`: signed by the CA, CN `client.right.name`.
/// * `wrong_client` / `wrong_server`: same names, signed by the wrong CA.
pub struct Pki {
    pub ca: Ca,
    pub wrong_ca: Ca,
    pub ca_file: PathBuf,
    pub wrong_ca_file: PathBuf,
    pub server: LeafFiles,
    pub client: LeafFiles,
    pub wrong_client: LeafFiles,
    pub wrong_server: LeafFiles,
}

impl Pki {
    pub fn new(dir: &TestDir) -> Pki {
        Pki::with_kind(dir, KeyKind::EcP256)
    }

    pub fn with_kind(dir: &TestDir, kind: KeyKind) -> Pki {
        let ca = Ca::new("rstunnel test CA", kind);
        let wrong_ca = Ca::new("rstunnel wrong CA", kind);
        let ca_file = ca.write_cert(dir, "ca.crt");
        let wrong_ca_file = wrong_ca.write_cert(dir, "wrong-ca.crt");
        let server = ca
            .issue("right.name", SERVER_NAMES, kind)
            .write(dir, "server");
        let client = ca
            .issue("client.right.name", &["client.right.name"], kind)
            .write(dir, "client");
        let wrong_client = wrong_ca
            .issue("client.right.name", &["client.right.name"], kind)
            .write(dir, "wrong-client");
        let wrong_server = wrong_ca
            .issue("right.name", SERVER_NAMES, kind)
            .write(dir, "wrong-server");
        Pki {
            ca,
            wrong_ca,
            ca_file,
            wrong_ca_file,
            server,
            client,
            wrong_client,
            wrong_server,
        }
    }
}
