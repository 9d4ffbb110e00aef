//! The binary StartTLS requests: PostgreSQL's SSLRequest (`pgsql`, both sides: the client
//! asks, the server answers `S`) and LDAP's StartTLS extended operation (`ldap`, client
//! side). Reads exactly the answer's bytes, so no TLS byte is consumed here.

use std::io::{Read, Write};

use super::hook::Exchange;
use crate::net::Stream;

/// PostgreSQL: the 8-byte SSLRequest; the server answers `S` to go on with TLS.
pub(super) fn pgsql_client(x: &Exchange<'_>) -> Result<(), String> {
    let far = x.far()?;
    const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    (&*far)
        .write_all(&SSL_REQUEST)
        .map_err(|e| format!("pgsql SSLRequest: {e}"))?;
    let mut answer = [0u8; 1];
    (&*far)
        .read_exact(&mut answer)
        .map_err(|e| format!("pgsql SSLRequest: {e}"))?;
    match answer[0] {
        b'S' => Ok(()),
        other => Err(format!(
            "pgsql: the server refused TLS (answered {:?})",
            other as char
        )),
    }
}

/// The OID of LDAP's StartTLS extended operation (RFC 4511, 4513).
const LDAP_STARTTLS_OID: &[u8] = b"1.3.6.1.4.1.1466.20037";

/// LDAP: an ExtendedRequest for StartTLS (message id 1); the ExtendedResponse's
/// resultCode must be success (0).
pub(super) fn ldap_client(x: &Exchange<'_>) -> Result<(), String> {
    let far = x.far()?;
    let oid_len = LDAP_STARTTLS_OID.len() as u8; // 22
    let mut request = vec![
        0x30,
        5 + 2 + oid_len,
        0x02,
        0x01,
        0x01,
        0x77,
        2 + oid_len,
        0x80,
        oid_len,
    ];
    request.extend_from_slice(LDAP_STARTTLS_OID);
    (&*far)
        .write_all(&request)
        .map_err(|e| format!("LDAP StartTLS: {e}"))?;
    let response = read_ber_message(far)?;
    // SEQUENCE { INTEGER msgid, [APPLICATION 24] { ENUMERATED resultCode, … } }
    let code = response
        .windows(3)
        .position(|w| w[0] == 0x0a && w[1] == 0x01)
        .and_then(|i| response.get(i + 2).copied())
        .ok_or("LDAP StartTLS: no resultCode in the response")?;
    if code == 0 {
        Ok(())
    } else {
        Err(format!(
            "LDAP StartTLS: the server answered resultCode {code}"
        ))
    }
}

/// Reads one BER-encoded LDAP message (tag, length, content), at most 64 KiB.
fn read_ber_message(stream: &Stream) -> Result<Vec<u8>, String> {
    let read = |buf: &mut [u8]| (&*stream).read_exact(buf).map_err(|e| format!("LDAP: {e}"));
    let mut head = [0u8; 2];
    read(&mut head)?;
    if head[0] != 0x30 {
        return Err("LDAP: the response is not a message".into());
    }
    let len = if head[1] & 0x80 == 0 {
        usize::from(head[1])
    } else {
        let count = usize::from(head[1] & 0x7f);
        if count == 0 || count > 2 {
            return Err("LDAP: response length out of range".into());
        }
        let mut bytes = [0u8; 2];
        read(&mut bytes[..count])?;
        bytes[..count]
            .iter()
            .fold(0usize, |n, b| (n << 8) | usize::from(*b))
    };
    let mut body = vec![0u8; len];
    read(&mut body)?;
    Ok(body)
}

/// PostgreSQL server side: the client's SSLRequest is answered `S`; what follows is TLS.
pub(super) fn pgsql_server(x: &Exchange<'_>) -> Result<(), String> {
    const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    let mut request = [0u8; 8];
    (&*x.local)
        .read_exact(&mut request)
        .map_err(|e| format!("pgsql: {e}"))?;
    if request != SSL_REQUEST {
        return Err("pgsql: the client did not ask for TLS (no SSLRequest)".into());
    }
    (&*x.local)
        .write_all(b"S")
        .map_err(|e| format!("pgsql: {e}"))
}
#[cfg(test)]
mod tests {
    use super::super::line::pair;
    use super::*;
    use crate::protocol::Settings;

    #[test]
    fn ldap_starttls_request_and_success() {
        let (far_ours, far_server) = pair();
        let (local_ours, _l) = pair();
        let server = std::thread::spawn(move || {
            let mut req = [0u8; 31];
            (&far_server).read_exact(&mut req).unwrap();
            assert_eq!(&req[..9], &[0x30, 29, 0x02, 0x01, 0x01, 0x77, 24, 0x80, 22]);
            assert_eq!(&req[9..], LDAP_STARTTLS_OID);
            // ExtendedResponse: success, empty matchedDN and message.
            (&far_server)
                .write_all(&[
                    0x30, 0x0c, 0x02, 0x01, 0x01, 0x78, 0x07, 0x0a, 0x01, 0x00, 0x04, 0x00, 0x04,
                    0x00,
                ])
                .unwrap();
        });
        let settings = Settings::default();
        ldap_client(&Exchange {
            settings,
            local: &local_ours,
            far: Some(&far_ours),
        })
        .unwrap();
        server.join().unwrap();
    }
}
