//! `socket = a|l|r:OPTION=VALUE[:VALUE2]` as text: which sockets (`a` listening, `l`
//! accepted, `r` outgoing), the option (stunnel's names, with setsockopt's level and
//! number) and its value, and stunnel's defaults `a:SO_REUSEADDR=yes`, `l:TCP_NODELAY=yes`,
//! `r:TCP_NODELAY=yes`. Only the syntax: `net::sockopt` applies them to sockets.

/// Which sockets an option is for (the letter before the colon; case-sensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Accept,
    Local,
    Remote,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Int(libc::c_int),
    Linger { on: bool, seconds: libc::c_int },
    Time { seconds: i64, micros: i64 },
    Text(String),
}

/// One parsed `socket` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketOption {
    pub which: Which,
    pub name: &'static str,
    /// setsockopt's level and option number (`net::sockopt` applies them).
    pub level: libc::c_int,
    pub optname: libc::c_int,
    pub value: Value,
}

#[derive(Clone, Copy)]
enum Kind {
    Flag,
    Int,
    Linger,
    Time,
    Text,
}

/// The options stunnel knows (names are case-sensitive, as in stunnel).
const TABLE: &[(&str, libc::c_int, libc::c_int, Kind)] = &[
    ("SO_DEBUG", libc::SOL_SOCKET, libc::SO_DEBUG, Kind::Flag),
    (
        "SO_DONTROUTE",
        libc::SOL_SOCKET,
        libc::SO_DONTROUTE,
        Kind::Flag,
    ),
    (
        "SO_KEEPALIVE",
        libc::SOL_SOCKET,
        libc::SO_KEEPALIVE,
        Kind::Flag,
    ),
    ("SO_LINGER", libc::SOL_SOCKET, libc::SO_LINGER, Kind::Linger),
    (
        "SO_OOBINLINE",
        libc::SOL_SOCKET,
        libc::SO_OOBINLINE,
        Kind::Flag,
    ),
    ("SO_RCVBUF", libc::SOL_SOCKET, libc::SO_RCVBUF, Kind::Int),
    ("SO_SNDBUF", libc::SOL_SOCKET, libc::SO_SNDBUF, Kind::Int),
    (
        "SO_RCVLOWAT",
        libc::SOL_SOCKET,
        libc::SO_RCVLOWAT,
        Kind::Int,
    ),
    (
        "SO_SNDLOWAT",
        libc::SOL_SOCKET,
        libc::SO_SNDLOWAT,
        Kind::Int,
    ),
    (
        "SO_RCVTIMEO",
        libc::SOL_SOCKET,
        libc::SO_RCVTIMEO,
        Kind::Time,
    ),
    (
        "SO_SNDTIMEO",
        libc::SOL_SOCKET,
        libc::SO_SNDTIMEO,
        Kind::Time,
    ),
    (
        "SO_REUSEADDR",
        libc::SOL_SOCKET,
        libc::SO_REUSEADDR,
        Kind::Flag,
    ),
    (
        "SO_BINDTODEVICE",
        libc::SOL_SOCKET,
        libc::SO_BINDTODEVICE,
        Kind::Text,
    ),
    (
        "TCP_KEEPCNT",
        libc::IPPROTO_TCP,
        libc::TCP_KEEPCNT,
        Kind::Int,
    ),
    (
        "TCP_KEEPIDLE",
        libc::IPPROTO_TCP,
        libc::TCP_KEEPIDLE,
        Kind::Int,
    ),
    (
        "TCP_KEEPINTVL",
        libc::IPPROTO_TCP,
        libc::TCP_KEEPINTVL,
        Kind::Int,
    ),
    ("IP_TOS", libc::IPPROTO_IP, libc::IP_TOS, Kind::Int),
    ("IP_TTL", libc::IPPROTO_IP, libc::IP_TTL, Kind::Int),
    (
        "TCP_NODELAY",
        libc::IPPROTO_TCP,
        libc::TCP_NODELAY,
        Kind::Flag,
    ),
    (
        "IP_FREEBIND",
        libc::IPPROTO_IP,
        libc::IP_FREEBIND,
        Kind::Flag,
    ),
    (
        "IPV6_V6ONLY",
        libc::IPPROTO_IPV6,
        libc::IPV6_V6ONLY,
        Kind::Flag,
    ),
];

const ILLEGAL: &str = "Illegal socket option";

fn int(text: &str) -> Result<libc::c_int, String> {
    super::values::integer(text)
        .and_then(|n| libc::c_int::try_from(n).ok())
        .ok_or_else(|| ILLEGAL.to_string())
}

fn flag(text: &str) -> Result<libc::c_int, String> {
    match text {
        "1" => Ok(1),
        "0" => Ok(0),
        _ if text.eq_ignore_ascii_case("yes") => Ok(1),
        _ if text.eq_ignore_ascii_case("no") => Ok(0),
        _ => Err(ILLEGAL.into()),
    }
}

/// Parses one `socket` value, e.g. `r:TCP_KEEPIDLE=60` or `l:SO_LINGER=1:0`.
pub fn parse(text: &str) -> Result<SocketOption, String> {
    let (letter, rest) = text.split_once(':').ok_or(ILLEGAL)?;
    let which = match letter {
        "a" => Which::Accept,
        "l" => Which::Local,
        "r" => Which::Remote,
        _ => return Err(ILLEGAL.into()),
    };
    let (name, value) = rest.split_once('=').ok_or(ILLEGAL)?;
    let &(name, level, optname, kind) = TABLE.iter().find(|(n, ..)| *n == name).ok_or(ILLEGAL)?;
    let value = match kind {
        Kind::Flag => Value::Int(flag(value)?),
        Kind::Int => Value::Int(int(value)?),
        Kind::Linger => {
            let (on, seconds) = value.split_once(':').unwrap_or((value, "0"));
            Value::Linger {
                on: flag(on)? != 0,
                seconds: int(seconds)?,
            }
        }
        Kind::Time => {
            let (seconds, micros) = value.split_once(':').unwrap_or((value, "0"));
            Value::Time {
                seconds: int(seconds)?.into(),
                micros: int(micros)?.into(),
            }
        }
        Kind::Text => Value::Text(value.to_string()),
    };
    Ok(SocketOption {
        which,
        name,
        level,
        optname,
        value,
    })
}

/// stunnel's defaults, which `socket` lines override.
pub fn defaults() -> Vec<SocketOption> {
    [
        "a:SO_REUSEADDR=yes",
        "l:TCP_NODELAY=yes",
        "r:TCP_NODELAY=yes",
    ]
    .iter()
    .filter_map(|text| parse(text).ok())
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_in_the_wild() {
        let o = parse("l:TCP_NODELAY=1").unwrap();
        assert_eq!(
            (o.which, o.name, &o.value),
            (Which::Local, "TCP_NODELAY", &Value::Int(1))
        );
        assert_eq!(parse("a:SO_REUSEADDR=no").unwrap().value, Value::Int(0));
        assert_eq!(
            parse("r:SO_LINGER=1:0").unwrap().value,
            Value::Linger {
                on: true,
                seconds: 0
            }
        );
        assert_eq!(parse("r:TCP_KEEPIDLE=60").unwrap().value, Value::Int(60));
        assert_eq!(
            parse("l:SO_RCVTIMEO=5:500").unwrap().value,
            Value::Time {
                seconds: 5,
                micros: 500
            }
        );
        assert_eq!(
            parse("r:SO_BINDTODEVICE=eth0").unwrap().value,
            Value::Text("eth0".into())
        );
    }

    #[test]
    fn rejects_unknown_letters_names_and_values() {
        for bad in [
            "x:TCP_NODELAY=1",
            "L:TCP_NODELAY=1",
            "l:tcp_nodelay=1",
            "l:TCP_NODELAY=maybe",
            "l:TCP_NODELAY",
            "TCP_NODELAY=1",
            "r:TCP_KEEPIDLE=1m",
        ] {
            assert_eq!(parse(bad), Err(ILLEGAL.to_string()), "{bad}");
        }
    }
}
