//! How certificates are named in log lines. A leaf of `tls/`, used by `verify` (the
//! `Certificate accepted` lines), `ocsp` and `context`.

use openssl::x509::X509NameRef;

/// `C=US, O=Org, CN=name`: every entry of a name, in order.
pub fn name_line(name: &X509NameRef) -> String {
    name.entries()
        .map(|entry| {
            let key = entry.object().nid().short_name().unwrap_or("?");
            let value = entry.data().to_string().unwrap_or_else(|_| "?".into());
            format!("{key}={value}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}
