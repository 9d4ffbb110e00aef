//! `OCSP = URL` and the responder addresses certificates name (AIA): `ResponderUrl`, the
//! syntax `http[s]://host[:port][/path]` with stunnel's `Invalid OCSP URL`. Only the text:
//! `tls::ocsp` connects to it.

use std::fmt;

/// A responder address, `http[s]://host[:port][/path]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponderUrl {
    /// `https://`: accepted, but this module does not speak TLS to responders.
    pub https: bool,
    /// Without the brackets of an IPv6 literal.
    pub host: String,
    pub port: u16,
    /// Starts with `/`.
    pub path: String,
    text: String,
}

impl ResponderUrl {
    /// Parses `url`; the error is stunnel's `Invalid OCSP URL`.
    pub fn parse(url: &str) -> Result<ResponderUrl, String> {
        let invalid = || String::from("Invalid OCSP URL");
        let scheme_end = url.find("://").ok_or_else(invalid)?;
        let https = match &url[..scheme_end] {
            s if s.eq_ignore_ascii_case("http") => false,
            s if s.eq_ignore_ascii_case("https") => true,
            _ => return Err(invalid()),
        };
        let rest = &url[scheme_end + 3..];
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']').ok_or_else(invalid)?;
                match after {
                    "" => (host, None),
                    p => (host, Some(p.strip_prefix(':').ok_or_else(invalid)?)),
                }
            }
            None => match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        if host.is_empty() || host.contains(['@', ' ', '[', ']']) {
            return Err(invalid());
        }
        let port = match port {
            None if https => 443,
            None => 80,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(invalid)?,
        };
        Ok(ResponderUrl {
            https,
            host: host.to_string(),
            port,
            path,
            text: url.to_string(),
        })
    }

    /// The `Host:` header value.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match (self.https, self.port) {
            (false, 80) | (true, 443) => host,
            (_, port) => format!("{host}:{port}"),
        }
    }
}

impl fmt::Display for ResponderUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = ResponderUrl::parse("http://ocsp.example.org/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("ocsp.example.org", 80, "/")
        );
        assert!(!u.https);
        assert_eq!(u.host_header(), "ocsp.example.org");
        let u = ResponderUrl::parse("HTTP://127.0.0.1:2560").unwrap();
        assert_eq!((u.port, u.path.as_str()), (2560, "/"));
        assert_eq!(u.host_header(), "127.0.0.1:2560");
        let u = ResponderUrl::parse("http://[::1]:81/a/b?c").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("::1", 81, "/a/b?c")
        );
        assert_eq!(u.host_header(), "[::1]:81");
        let u = ResponderUrl::parse("https://r.example").unwrap();
        assert!(u.https);
        assert_eq!(u.port, 443);
        assert_eq!(u.to_string(), "https://r.example");
        let u = ResponderUrl::parse("http://h?x").unwrap();
        assert_eq!((u.host.as_str(), u.path.as_str()), ("h", "/?x"));
        for bad in [
            "",
            "ocsp.example.org",
            "ldap://x",
            "http://",
            "http://:80/",
            "http://h:0/",
            "http://h:99999/",
            "http://h:x/",
            "http://[::1/",
            "http://[::1]x/",
            "http://u@h/",
        ] {
            assert_eq!(
                ResponderUrl::parse(bad),
                Err("Invalid OCSP URL".into()),
                "{bad}"
            );
        }
    }
}
