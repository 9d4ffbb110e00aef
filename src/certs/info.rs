//! What a service's certificates are, read from the files its TLS options name: the
//! `cert` file (its first certificate is the service's own, the rest its chain; PEM, or
//! PKCS#12 with an empty password as `tls::context` reads it) and every entry of `CAfile`.
//! `CApath` is left out: OpenSSL looks certificates up there by hash during handshakes, so
//! the directory holds what the system trusts (`/etc/ssl/certs`), not what the service
//! loaded, and reading it whole at each build would be neither cheap nor meaningful.
//!
//! Read at build time, after the TLS context loaded the same files, so a file that does not
//! parse here is skipped (it changed in between; the watcher will report it). A leaf of
//! `certs`: imports only `config`'s `TlsOptions` and `tls::names`.

use std::path::{Path, PathBuf};

use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::x509::X509;

use crate::config::TlsOptions;
use crate::tls::names::name_line;

/// Where in a service's files a certificate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CertRole {
    /// The service's own certificate (the first of its `cert` file).
    Cert,
    /// The rest of its `cert` file.
    Chain,
    /// An entry of its `CAfile`.
    Ca,
}

impl CertRole {
    /// As `/status` and `/metrics` label it.
    pub fn label(self) -> &'static str {
        match self {
            CertRole::Cert => "cert",
            CertRole::Chain => "chain",
            CertRole::Ca => "ca",
        }
    }

    /// As a log line names it ("certificate", "chain certificate", "CA certificate").
    pub fn noun(self) -> &'static str {
        match self {
            CertRole::Cert => "certificate",
            CertRole::Chain => "chain certificate",
            CertRole::Ca => "CA certificate",
        }
    }
}

/// One loaded certificate of one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub service: String,
    pub role: CertRole,
    pub file: PathBuf,
    /// As log lines write names (`O=…, CN=…`).
    pub subject: String,
    pub not_after_unix: i64,
    /// As OpenSSL prints it (`Dec  5 04:53:17 2026 GMT`).
    pub not_after: String,
    /// In hex: with `not_after`, what tells a renewed certificate from the old one.
    pub serial: String,
}

/// The certificates of service `service` whose TLS options are `opts`, deduplicated (the
/// same certificate in the same file and role once).
pub fn collect(service: &str, opts: &TlsOptions) -> Vec<CertInfo> {
    let mut out: Vec<CertInfo> = Vec::new();
    let mut add = |role: CertRole, file: &Path, cert: &X509| {
        let Some(info) = describe(service, role, file, cert) else {
            return;
        };
        if !out.contains(&info) {
            out.push(info);
        }
    };
    if let Some(file) = &opts.cert {
        for (i, cert) in cert_file(file).iter().enumerate() {
            let role = if i == 0 {
                CertRole::Cert
            } else {
                CertRole::Chain
            };
            add(role, file, cert);
        }
    }
    if let Some(file) = &opts.ca_file {
        for cert in pem_file(file) {
            add(CertRole::Ca, file, &cert);
        }
    }
    out
}

fn describe(service: &str, role: CertRole, file: &Path, cert: &X509) -> Option<CertInfo> {
    let not_after = cert.not_after();
    Some(CertInfo {
        service: service.to_string(),
        role,
        file: file.to_path_buf(),
        subject: name_line(cert.subject_name()),
        not_after_unix: unix_time(not_after)?,
        not_after: not_after.to_string(),
        serial: cert
            .serial_number()
            .to_bn()
            .and_then(|bn| bn.to_hex_str().map(|s| s.to_string()))
            .unwrap_or_default(),
    })
}

/// Seconds since the epoch of an ASN.1 time.
pub fn unix_time(t: &Asn1TimeRef) -> Option<i64> {
    let epoch = Asn1Time::from_unix(0).ok()?;
    let diff = epoch.diff(t).ok()?;
    Some(i64::from(diff.days) * 86_400 + i64::from(diff.secs))
}

/// The certificates of a PEM file, in order (other blocks, such as a key, skipped).
fn pem_file(path: &Path) -> Vec<X509> {
    std::fs::read(path)
        .ok()
        .and_then(|bytes| X509::stack_from_pem(&bytes).ok())
        .unwrap_or_default()
}

/// A `cert` file: PEM, else a PKCS#12 bundle with an empty password (its certificate,
/// then its chain).
fn cert_file(path: &Path) -> Vec<X509> {
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    if let Ok(certs) = X509::stack_from_pem(&bytes) {
        if !certs.is_empty() {
            return certs;
        }
    }
    let Some(parsed) = openssl::pkcs12::Pkcs12::from_der(&bytes)
        .ok()
        .and_then(|p| p.parse2("").ok())
    else {
        return Vec::new();
    };
    parsed
        .cert
        .into_iter()
        .chain(parsed.ca.into_iter().flatten())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::x509::{X509Builder, X509NameBuilder};

    fn cert(cn: &str, not_after_unix: i64) -> (X509, PKey<openssl::pkey::Private>) {
        let key = PKey::from_ec_key(
            openssl::ec::EcKey::generate(
                &openssl::ec::EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
        let name = name.build();
        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::from_unix(0).unwrap()).unwrap();
        b.set_not_after(&Asn1Time::from_unix(not_after_unix).unwrap())
            .unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        (b.build(), key)
    }

    /// The `cert` file's first certificate is the service's own, the rest its chain (the
    /// key between them skipped); `CAfile` entries are `ca`; a repeated entry is listed
    /// once; a missing file lists nothing.
    #[test]
    fn roles_subjects_and_times_from_the_files() {
        let dir = std::env::temp_dir().join(format!("rstunnel-certinfo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (leaf, key) = cert("leaf.example", 2_000_000_000);
        let (ca, _) = cert("ca.example", 2_100_000_000);
        let mut pem = leaf.to_pem().unwrap();
        pem.extend(key.private_key_to_pem_pkcs8().unwrap());
        pem.extend(ca.to_pem().unwrap());
        let cert_file = dir.join("cert.pem");
        std::fs::write(&cert_file, &pem).unwrap();
        let ca_file = dir.join("ca.pem");
        let mut bundle = ca.to_pem().unwrap();
        bundle.extend(ca.to_pem().unwrap());
        std::fs::write(&ca_file, bundle).unwrap();
        let opts = TlsOptions {
            cert: Some(cert_file.clone()),
            ca_file: Some(ca_file.clone()),
            ..TlsOptions::default()
        };
        let got = collect("srv", &opts);
        let summary: Vec<(CertRole, &Path, &str, i64)> = got
            .iter()
            .map(|c| {
                (
                    c.role,
                    c.file.as_path(),
                    c.subject.as_str(),
                    c.not_after_unix,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    CertRole::Cert,
                    cert_file.as_path(),
                    "CN=leaf.example",
                    2_000_000_000
                ),
                (
                    CertRole::Chain,
                    cert_file.as_path(),
                    "CN=ca.example",
                    2_100_000_000
                ),
                (
                    CertRole::Ca,
                    ca_file.as_path(),
                    "CN=ca.example",
                    2_100_000_000
                ),
            ]
        );
        assert!(got
            .iter()
            .all(|c| c.service == "srv" && !c.serial.is_empty()));
        assert_eq!(got[0].not_after, "May 18 03:33:20 2033 GMT");
        let missing = TlsOptions {
            cert: Some(dir.join("nothing.pem")),
            ..opts
        };
        assert_eq!(
            collect("srv", &missing).len(),
            1,
            "only the CA file's entry"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
