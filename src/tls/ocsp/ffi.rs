//! The raw OpenSSL calls OCSP needs that the `openssl` crate does not wrap, each behind a
//! safe function with its SAFETY reasoning: the request nonce, the nonce check, the
//! client's status request, a verify result from a code, a GeneralizedTime as an ASN1_TIME.
//! Only FFI: no policy, no I/O.

use foreign_types::ForeignTypeRef;
use libc::{c_int, c_uchar};
use openssl::asn1::{Asn1GeneralizedTimeRef, Asn1TimeRef};
use openssl::error::ErrorStack;
use openssl::ocsp::{OcspBasicResponseRef, OcspRequestRef};
use openssl::ssl::SslContextBuilder;
use openssl::x509::X509VerifyResult;
use openssl_sys as ffi;

// Not wrapped by openssl-sys; present in every OpenSSL this crate builds against.
extern "C" {
    fn OCSP_request_add1_nonce(req: *mut ffi::OCSP_REQUEST, val: *mut c_uchar, len: c_int)
        -> c_int;
    fn OCSP_check_nonce(req: *mut ffi::OCSP_REQUEST, bs: *mut ffi::OCSP_BASICRESP) -> c_int;
}

/// Adds a random 16-byte nonce to `request`.
pub(super) fn add_random_nonce(request: &mut OcspRequestRef) -> Result<(), ErrorStack> {
    // SAFETY: a live request; a null value with a non-positive length makes OpenSSL
    // generate a random 16-byte nonce.
    if unsafe { OCSP_request_add1_nonce(request.as_ptr(), std::ptr::null_mut(), -1) } != 1 {
        return Err(ErrorStack::get());
    }
    Ok(())
}

/// OCSP_check_nonce: 1 the response echoes the request's nonce, -1 it has none, anything
/// else a mismatch.
pub(super) fn check_nonce(request: &OcspRequestRef, basic: &OcspBasicResponseRef) -> c_int {
    // SAFETY: both pointers are live objects owned by the caller and `basic`; the call
    // only reads them.
    unsafe { OCSP_check_nonce(request.as_ptr(), basic.as_ptr()) }
}

/// Makes connections from `ctx` send status_request (asks the server to staple).
pub(super) fn request_status(ctx: &mut SslContextBuilder) -> Result<(), ErrorStack> {
    // SAFETY: SSL_CTX_set_tlsext_status_type (a macro over SSL_CTX_ctrl) on a live
    // context; connections made from it then send status_request.
    let set = unsafe {
        ffi::SSL_CTX_ctrl(
            ctx.as_ptr(),
            ffi::SSL_CTRL_SET_TLSEXT_STATUS_REQ_TYPE,
            ffi::TLSEXT_STATUSTYPE_ocsp as libc::c_long,
            std::ptr::null_mut(),
        )
    };
    if set != 1 {
        return Err(ErrorStack::get());
    }
    Ok(())
}

pub(super) fn verify_error(code: c_int) -> X509VerifyResult {
    // SAFETY: a verify result is a plain code; OpenSSL prints unknown ones as such.
    unsafe { X509VerifyResult::from_raw(code) }
}

/// A response's nextUpdate as the ASN1_TIME that `Asn1Time::diff` takes.
pub(super) fn as_time(next: &Asn1GeneralizedTimeRef) -> &Asn1TimeRef {
    // SAFETY: ASN1_GENERALIZEDTIME and ASN1_TIME are the same C type
    // (asn1_string_st); ASN1_TIME_diff accepts either form.
    unsafe { Asn1TimeRef::from_ptr(next.as_ptr().cast()) }
}
