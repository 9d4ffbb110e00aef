//! Certificates made at run time with the `openssl` crate (like ghostunnel's `RootCert`):
//! nothing is checked in, nothing expires between runs.
//!
//! [`Ca::new`] makes a self-signed CA; [`Ca::issue`] a leaf signed by it with a CN and
//! subjectAltName entries; [`Leaf::write`] writes it as PEM three ways (cert+key in one file,
//! cert alone, key alone, mode 0600). [`Pki`] is the usual set for a test.
//! Other kinds: [`intermediate_ca`] (CA:TRUE, pathlen 0, signed by a root, P-256), [`leaf`]
//! (DNS, IP and email SANs, no subjectKeyIdentifier, P-256), and any leaf [`Ca::issue_with`]
//! shapes from a [`LeafSpec`]: a given serial, an OCSP signer (extendedKeyUsage OCSPSigning),
//! an authorityInfoAccess naming an OCSP responder, a not-after other than a year ahead
//! (soon, or already past; [`Ca::expiring`] for a CA). [`Leaf::write_with_chain`] writes a
//! `cert =` file with the issuer in its chain.

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
use openssl::x509::{X509Builder, X509Extension, X509NameBuilder, X509};

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

/// Builder with subject CN, random serial, validity from now to a year ahead, or to
/// `valid_days` days from now (negative: already expired; valid from 30 days before).
fn base_builder(
    cn: &str,
    key: &PKey<Private>,
    valid_days: Option<i64>,
) -> (X509Builder, openssl::x509::X509Name) {
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
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // A year: past the 30 days within which rstunnel warns that a certificate expires
    // (tests of those warnings set `valid_days`).
    let not_after = now + valid_days.unwrap_or(365) * 86_400;
    let not_before = now.min(not_after - 30 * 86_400);
    b.set_not_before(&Asn1Time::from_unix(not_before).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_unix(not_after).unwrap())
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
        make_ca(cn, kind, None, None)
    }

    /// A self-signed CA whose not-after is `days` days from now (negative: past).
    pub fn expiring(cn: &str, kind: KeyKind, days: i64) -> Ca {
        make_ca(cn, kind, None, Some(days))
    }

    /// A leaf signed by this CA. `sans` entries that parse as an IP address become `IP:`
    /// entries, the others `DNS:`. Usable as server and as client certificate.
    pub fn issue(&self, cn: &str, sans: &[&str], kind: KeyKind) -> Leaf {
        let (ips, dns): (Vec<&str>, Vec<&str>) =
            sans.iter().partition(|s| s.parse::<IpAddr>().is_ok());
        let spec = LeafSpec {
            dns: &dns,
            ips: &ips,
            key_encipherment: true,
            subject_key_id: true,
            ..LeafSpec::default()
        };
        self.issue_with(cn, kind, &spec)
    }

    /// A leaf signed by this CA, shaped by `spec` (see [`LeafSpec`]): basicConstraints
    /// CA:FALSE, keyUsage digitalSignature (+ keyEncipherment), the extended key usage, the
    /// subjectAltName entries (when there are any), subjectKeyIdentifier if asked,
    /// authorityKeyIdentifier, and an OCSP authorityInfoAccess if asked, in that order.
    pub fn issue_with(&self, cn: &str, kind: KeyKind, spec: &LeafSpec) -> Leaf {
        let key = new_key(kind);
        let (mut b, _) = base_builder(cn, &key, spec.valid_days);
        if let Some(serial) = spec.serial {
            b.set_serial_number(&serial.to_asn1_integer().unwrap())
                .unwrap();
        }
        b.set_issuer_name(self.cert.subject_name()).unwrap();
        b.append_extension(BasicConstraints::new().critical().build().unwrap())
            .unwrap();
        let mut ku = KeyUsage::new();
        ku.critical().digital_signature();
        if spec.key_encipherment {
            ku.key_encipherment();
        }
        b.append_extension(ku.build().unwrap()).unwrap();
        let mut eku = ExtendedKeyUsage::new();
        if spec.ocsp_signing {
            eku.other("OCSPSigning");
        } else {
            eku.server_auth().client_auth();
        }
        b.append_extension(eku.build().unwrap()).unwrap();
        if !(spec.dns.is_empty() && spec.ips.is_empty() && spec.emails.is_empty()) {
            let mut san = SubjectAlternativeName::new();
            for d in spec.dns {
                san.dns(d);
            }
            for i in spec.ips {
                san.ip(i);
            }
            for e in spec.emails {
                san.email(e);
            }
            let ext = san
                .build(&b.x509v3_context(Some(&self.cert), None))
                .unwrap();
            b.append_extension(ext).unwrap();
        }
        if spec.subject_key_id {
            let ski = SubjectKeyIdentifier::new()
                .build(&b.x509v3_context(Some(&self.cert), None))
                .unwrap();
            b.append_extension(ski).unwrap();
        }
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&b.x509v3_context(Some(&self.cert), None))
            .unwrap();
        b.append_extension(aki).unwrap();
        if let Some(url) = spec.ocsp_url {
            #[allow(deprecated)] // the typed builders have no AIA; the config-string form does
            let ext = X509Extension::new_nid(
                None,
                Some(&b.x509v3_context(Some(&self.cert), None)),
                Nid::INFO_ACCESS,
                &format!("OCSP;URI:{url}"),
            )
            .unwrap();
            b.append_extension(ext).unwrap();
        }
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
    make_ca(cn, KeyKind::EcP256, Some(root), None)
}

/// A CA: self-signed when `issuer` is `None`; else signed by `issuer`, with pathlen 0 and
/// an authorityKeyIdentifier. basicConstraints CA:TRUE and keyUsage keyCertSign + cRLSign
/// (both critical) and a subjectKeyIdentifier either way.
fn make_ca(cn: &str, kind: KeyKind, issuer: Option<&Ca>, valid_days: Option<i64>) -> Ca {
    let key = new_key(kind);
    let (mut b, name) = base_builder(cn, &key, valid_days);
    let issuer_cert = issuer.map(|i| &i.cert);
    b.set_issuer_name(issuer_cert.map_or(&*name, |c| c.subject_name()))
        .unwrap();
    let mut bc = BasicConstraints::new();
    bc.critical().ca();
    if issuer.is_some() {
        bc.pathlen(0);
    }
    b.append_extension(bc.build().unwrap()).unwrap();
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
        .build(&b.x509v3_context(issuer_cert.map(|c| &**c), None))
        .unwrap();
    b.append_extension(ski).unwrap();
    if let Some(c) = issuer_cert {
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&b.x509v3_context(Some(c), None))
            .unwrap();
        b.append_extension(aki).unwrap();
    }
    b.sign(issuer.map_or(&key, |i| &i.key), MessageDigest::sha256())
        .unwrap();
    Ca {
        cn: cn.to_string(),
        cert: b.build(),
        key,
    }
}

/// A leaf (server and client use) signed by `ca` with DNS, IP and email SANs.
pub fn leaf(ca: &Ca, cn: &str, dns: &[&str], ips: &[&str], emails: &[&str]) -> Leaf {
    let spec = LeafSpec {
        dns,
        ips,
        emails,
        ..LeafSpec::default()
    };
    ca.issue_with(cn, KeyKind::EcP256, &spec)
}

/// What a leaf made by [`Ca::issue_with`] carries besides its CN. The default: a random
/// serial, serverAuth + clientAuth, no subjectAltName, keyUsage digitalSignature alone, no
/// subjectKeyIdentifier, no authorityInfoAccess.
#[derive(Default)]
pub struct LeafSpec<'a> {
    pub dns: &'a [&'a str],
    pub ips: &'a [&'a str],
    pub emails: &'a [&'a str],
    /// keyUsage keyEncipherment besides digitalSignature (RSA key exchange).
    pub key_encipherment: bool,
    pub subject_key_id: bool,
    /// extendedKeyUsage OCSPSigning instead of serverAuth + clientAuth: an OCSP responder's
    /// delegated signing certificate.
    pub ocsp_signing: bool,
    /// This serial instead of a random one (an OCSP responder's index names it first).
    pub serial: Option<&'a BigNum>,
    /// An authorityInfoAccess extension naming this OCSP responder URL (what a server
    /// staples from).
    pub ocsp_url: Option<&'a str>,
    /// Not-after this many days from now (negative: already expired) instead of a year.
    pub valid_days: Option<i64>,
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

impl Leaf {
    /// Writes `<name>.pem`: certificate, then `issuer`'s certificate, then the key (mode
    /// 0600): a `cert =` file whose chain holds the issuer, which OCSP stapling needs.
    pub fn write_with_chain(&self, dir: &TestDir, name: &str, issuer: &Ca) -> PathBuf {
        let mut pem = self.cert.to_pem().unwrap();
        pem.extend_from_slice(&issuer.cert.to_pem().unwrap());
        pem.extend_from_slice(&self.key.private_key_to_pem_pkcs8().unwrap());
        let path = dir.write(&format!("{name}.pem"), pem);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
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
