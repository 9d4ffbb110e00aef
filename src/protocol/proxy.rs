//! The proxy protocols: `connect` (client side, HTTP CONNECT through a proxy to
//! `protocolHost`, with Basic authentication) and `proxy` (server side, after the far
//! connection is made: a PROXY protocol v1 header naming the real client to the target).
//! Clear text on the far connection only, line by line on `line`: reads no byte past the
//! proxy's answer (the TLS records after it are the handshake's).

use super::hook::Exchange;
use super::line::{read_line, send, MAX_REPLY_LINES, TOO_MANY_LINES};

/// HTTP CONNECT (client side): `connect` is the proxy, `protocolHost` the destination.
pub(super) fn http_connect(x: &Exchange<'_>) -> Result<(), String> {
    let far = x.far()?;
    let target = x
        .settings
        .host
        .ok_or("protocol = connect needs protocolHost = host:port")?;
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(user) = x.settings.username {
        let password = x.settings.password.unwrap_or("");
        let token = openssl::base64::encode_block(format!("{user}:{password}").as_bytes());
        request.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
    }
    for header in x.settings.headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    send(far, &request)?;
    let status = read_line(far)?;
    let ok = status.starts_with("HTTP/") && status.split_whitespace().nth(1) == Some("200");
    // Headers up to the blank line belong to the proxy's answer.
    let mut headers = 0;
    while !read_line(far)?.is_empty() {
        headers += 1;
        if headers >= MAX_REPLY_LINES {
            return Err(format!("CONNECT {target}: {TOO_MANY_LINES}"));
        }
    }
    if ok {
        Ok(())
    } else {
        Err(format!("CONNECT {target}: the proxy answered: {status}"))
    }
}

/// PROXY protocol v1 (server side): tells the target who the client really is.
pub(super) fn proxy_header(x: &Exchange<'_>) -> Result<(), String> {
    let far = x.far()?;
    let header = match (x.local.peer_addr(), x.local.local_addr()) {
        (Some(src), Some(dst)) if src.is_ipv4() == dst.is_ipv4() => format!(
            "PROXY {} {} {} {} {}\r\n",
            if src.is_ipv4() { "TCP4" } else { "TCP6" },
            src.ip(),
            dst.ip(),
            src.port(),
            dst.port()
        ),
        _ => "PROXY UNKNOWN\r\n".to_string(),
    };
    send(far, &header)
}
#[cfg(test)]
mod tests {
    use super::super::line::pair;
    use super::*;
    use crate::protocol::Settings;

    #[test]
    fn http_connect_with_basic_auth() {
        let (far_ours, far_proxy) = pair();
        let (local_ours, _l) = pair();
        let proxy = std::thread::spawn(move || {
            let mut lines = Vec::new();
            loop {
                let l = read_line(&far_proxy).unwrap();
                if l.is_empty() {
                    break;
                }
                lines.push(l);
            }
            send(
                &far_proxy,
                "HTTP/1.1 200 Connection established\r\nX: y\r\n\r\n",
            )
            .unwrap();
            lines
        });
        let settings = Settings {
            host: Some("db.example:5432"),
            username: Some("u"),
            password: Some("p"),
            ..Settings::default()
        };
        http_connect(&Exchange {
            settings,
            local: &local_ours,
            far: Some(&far_ours),
        })
        .unwrap();
        let lines = proxy.join().unwrap();
        assert_eq!(lines[0], "CONNECT db.example:5432 HTTP/1.1");
        assert!(
            lines.contains(&"Proxy-Authorization: Basic dTpw".to_string()),
            "{lines:?}"
        );
    }
}
