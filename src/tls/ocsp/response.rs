//! Judging an OCSP response: building the request for a certificate (with a nonce if
//! asked), then checking the DER answer: successful, the nonce echoed, signed by a
//! responder the trust store accepts, a status for the certificate inside its validity
//! window. Pure checks on bytes and certificates: no I/O, no logging, no policy on what
//! an answer means for a handshake (`peer`, `staple`).

use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::ocsp::{
    OcspCertId, OcspCertIdRef, OcspCertStatus, OcspFlag, OcspRequest, OcspRequestRef, OcspResponse,
    OcspResponseStatus, OcspRevokedStatus,
};
use openssl::stack::{Stack, StackRef};
use openssl::x509::store::X509StoreRef;
use openssl::x509::{X509Ref, X509};

use super::ffi;

/// Slack for clock differences when checking a response's thisUpdate/nextUpdate (OpenSSL's
/// `ocsp` tool uses the same five minutes).
const VALIDITY_LEEWAY_SECS: u32 = 300;

/// What a responder (or a stapled response) said about one certificate.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Answer {
    Good,
    /// Revoked, with the reason and time.
    Revoked(String),
    /// No conclusive answer, and why.
    Unusable(String),
}

fn reason_name(reason: OcspRevokedStatus) -> &'static str {
    match reason {
        OcspRevokedStatus::KEY_COMPROMISE => "keyCompromise",
        OcspRevokedStatus::CA_COMPROMISE => "cACompromise",
        OcspRevokedStatus::AFFILIATION_CHANGED => "affiliationChanged",
        OcspRevokedStatus::STATUS_SUPERSEDED => "superseded",
        OcspRevokedStatus::STATUS_CESSATION_OF_OPERATION => "cessationOfOperation",
        OcspRevokedStatus::STATUS_CERTIFICATE_HOLD => "certificateHold",
        OcspRevokedStatus::REMOVE_FROM_CRL => "removeFromCRL",
        _ => "unspecified",
    }
}

fn response_status_name(status: OcspResponseStatus) -> &'static str {
    match status {
        OcspResponseStatus::MALFORMED_REQUEST => "malformedRequest",
        OcspResponseStatus::INTERNAL_ERROR => "internalError",
        OcspResponseStatus::TRY_LATER => "tryLater",
        OcspResponseStatus::SIG_REQUIRED => "sigRequired",
        OcspResponseStatus::UNAUTHORIZED => "unauthorized",
        _ => "unknown response status",
    }
}

pub(super) fn openssl_reason(e: &ErrorStack) -> String {
    e.errors()
        .iter()
        .filter_map(|e| e.reason())
        .collect::<Vec<_>>()
        .join(": ")
}

/// Checks a DER response for `id`: successful, the nonce of `request` (if given) echoed, the
/// signature by a responder `trust` accepts (with `untrusted` as extra certificates), a status
/// for `id` inside its validity window.
pub(super) fn judge(
    der: &[u8],
    id: &OcspCertIdRef,
    request: Option<&OcspRequestRef>,
    untrusted: &StackRef<X509>,
    trust: &X509StoreRef,
    flags: OcspFlag,
) -> Answer {
    let unusable = |why: String| Answer::Unusable(why);
    let response = match OcspResponse::from_der(der) {
        Ok(r) => r,
        Err(_) => return unusable("not an OCSP response".into()),
    };
    if response.status() != OcspResponseStatus::SUCCESSFUL {
        return unusable(format!(
            "responder error: {}",
            response_status_name(response.status())
        ));
    }
    let basic = match response.basic() {
        Ok(b) => b,
        Err(e) => return unusable(format!("no basic response: {}", openssl_reason(&e))),
    };
    if let Some(request) = request {
        match ffi::check_nonce(request, &basic) {
            1 => {}
            -1 => return unusable("no nonce in the response (OCSPnonce = yes)".into()),
            _ => return unusable("nonce mismatch".into()),
        }
    }
    if let Err(e) = basic.verify(untrusted, trust, flags) {
        return unusable(format!(
            "response verification failed: {}",
            openssl_reason(&e)
        ));
    }
    let Some(status) = basic.find_status(id) else {
        return unusable("no status for the certificate in the response".into());
    };
    if status.check_validity(VALIDITY_LEEWAY_SECS, None).is_err() {
        return unusable("response outside its validity period".into());
    }
    match status.status {
        OcspCertStatus::GOOD => Answer::Good,
        OcspCertStatus::REVOKED => Answer::Revoked(format!(
            "reason {}, revoked {}",
            reason_name(status.reason),
            status
                .revocation_time
                .map_or_else(|| "at an unknown time".into(), |t| format!("on {t}"))
        )),
        _ => unusable("certificate status unknown to the responder".into()),
    }
}

/// A new request for `cert` (issued by `issuer`), with a nonce if asked, and the id to find
/// its answer by.
pub(super) fn new_request(
    cert: &X509Ref,
    issuer: &X509Ref,
    nonce: bool,
) -> Result<(OcspRequest, OcspCertId), ErrorStack> {
    let mut request = OcspRequest::new()?;
    request.add_id(OcspCertId::from_cert(MessageDigest::sha1(), cert, issuer)?)?;
    if nonce {
        ffi::add_random_nonce(&mut request)?;
    }
    let id = OcspCertId::from_cert(MessageDigest::sha1(), cert, issuer)?;
    Ok((request, id))
}

pub(super) fn stack_of(certs: &[X509]) -> Result<Stack<X509>, ErrorStack> {
    let mut stack = Stack::new()?;
    for cert in certs {
        stack.push(cert.clone())?;
    }
    Ok(stack)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::x509::store::X509StoreBuilder;

    #[test]
    fn garbage_is_not_a_response() {
        let store = X509StoreBuilder::new().unwrap().build();
        let empty = Stack::<X509>::new().unwrap();
        // Any certificate id works for this: the parse fails first.
        let key = openssl::pkey::PKey::from_ec_key(
            openssl::ec::EcKey::generate(
                &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)
                    .unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        let mut b = openssl::x509::X509Builder::new().unwrap();
        b.set_pubkey(&key).unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        let cert = b.build();
        let id = OcspCertId::from_cert(MessageDigest::sha1(), &cert, &cert).unwrap();
        assert_eq!(
            judge(b"nope", &id, None, &empty, &store, OcspFlag::empty()),
            Answer::Unusable("not an OCSP response".into())
        );
        let try_later = OcspResponse::create(OcspResponseStatus::TRY_LATER, None)
            .unwrap()
            .to_der()
            .unwrap();
        assert_eq!(
            judge(&try_later, &id, None, &empty, &store, OcspFlag::empty()),
            Answer::Unusable("responder error: tryLater".into())
        );
    }
}
