//! Value syntax shared by many options: yes/no, numbers, seconds, log levels and
//! facilities, TLS protocol versions. Each parser returns stunnel's own error text so that
//! messages match what users already search for.

use crate::log::Level;

/// `yes`/`no`, case-insensitive; nothing else (stunnel accepts no `true`/`1`).
pub fn yes_no(value: &str) -> Result<bool, String> {
    if value.eq_ignore_ascii_case("yes") {
        Ok(true)
    } else if value.eq_ignore_ascii_case("no") {
        Ok(false)
    } else {
        Err("The argument needs to be either 'yes' or 'no'".into())
    }
}

/// A whole decimal number as C's `strtol` reads it (leading blanks, optional sign, digits),
/// with nothing after it.
pub fn integer(value: &str) -> Option<i64> {
    let digits = value.trim_start_matches(|c: char| c.is_ascii_whitespace());
    let unsigned = digits.strip_prefix(['+', '-']).unwrap_or(digits);
    if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A non-negative count of seconds; `what` names the timeout in the error (`Illegal busy timeout`).
pub fn seconds(value: &str, what: &str) -> Result<u64, String> {
    integer(value)
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| format!("Illegal {what} timeout"))
}

/// syslog levels by name, in numeric order (LOG_EMERG = 0 … LOG_DEBUG = 7).
const LEVEL_NAMES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

/// syslog facilities that stunnel accepts in `debug = FACILITY.LEVEL`.
const FACILITIES: &[(&str, libc::c_int)] = &[
    ("auth", libc::LOG_AUTH),
    ("authpriv", libc::LOG_AUTHPRIV),
    ("cron", libc::LOG_CRON),
    ("daemon", libc::LOG_DAEMON),
    ("ftp", libc::LOG_FTP),
    ("kern", libc::LOG_KERN),
    ("lpr", libc::LOG_LPR),
    ("mail", libc::LOG_MAIL),
    ("news", libc::LOG_NEWS),
    ("ntp", 12 << 3),
    ("syslog", libc::LOG_SYSLOG),
    ("user", libc::LOG_USER),
    ("uucp", libc::LOG_UUCP),
    ("local0", libc::LOG_LOCAL0),
    ("local1", libc::LOG_LOCAL1),
    ("local2", libc::LOG_LOCAL2),
    ("local3", libc::LOG_LOCAL3),
    ("local4", libc::LOG_LOCAL4),
    ("local5", libc::LOG_LOCAL5),
    ("local6", libc::LOG_LOCAL6),
    ("local7", libc::LOG_LOCAL7),
];

/// A level by name or as one digit 0–7.
pub fn level(value: &str) -> Result<Level, String> {
    let index = if value.len() == 1 && value.as_bytes()[0].is_ascii_digit() {
        Some(usize::from(value.as_bytes()[0] - b'0'))
    } else {
        LEVEL_NAMES
            .iter()
            .position(|name| name.eq_ignore_ascii_case(value))
    };
    index
        .and_then(Level::from_index)
        .ok_or_else(|| "Illegal debug level".into())
}

/// `[FACILITY.]LEVEL`. The facility is only accepted where `facility_allowed` (global part).
pub fn debug(value: &str, facility_allowed: bool) -> Result<(Option<libc::c_int>, Level), String> {
    match value.split_once('.') {
        Some((facility, lvl)) if facility_allowed => {
            let code = FACILITIES
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(facility))
                .map(|&(_, code)| code)
                .ok_or_else(|| String::from("Illegal syslog facility"))?;
            Ok((Some(code), level(lvl)?))
        }
        Some(_) => Err("Illegal debug level".into()),
        None => Ok((None, level(value)?)),
    }
}

/// A numeric `setuid`/`setgid` value (a uid or gid needs no lookup).
pub fn numeric_id(value: &str) -> Option<u32> {
    integer(value).and_then(|n| u32::try_from(n).ok())
}

/// A user by name or number (`setuid`), from the system's user database.
pub fn user_id(value: &str) -> Result<libc::uid_t, String> {
    if let Some(n) = numeric_id(value) {
        return Ok(n);
    }
    let name = std::ffi::CString::new(value).map_err(|_| String::from("Illegal UID"))?;
    // SAFETY: getpwnam_r with a valid name, a zeroed passwd struct and a buffer we own;
    // the result pointer is only read when the call succeeded.
    unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 4096];
        let mut result = std::ptr::null_mut();
        let rc = libc::getpwnam_r(
            name.as_ptr(),
            &mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        );
        if rc == 0 && !result.is_null() {
            return Ok(pw.pw_uid);
        }
    }
    Err("Illegal UID".into())
}

/// A group by name or number (`setgid`), from the system's group database.
pub fn group_id(value: &str) -> Result<libc::gid_t, String> {
    if let Some(n) = numeric_id(value) {
        return Ok(n);
    }
    let name = std::ffi::CString::new(value).map_err(|_| String::from("Illegal GID"))?;
    // SAFETY: as in `user_id`, with getgrnam_r.
    unsafe {
        let mut gr: libc::group = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 16384];
        let mut result = std::ptr::null_mut();
        let rc = libc::getgrnam_r(
            name.as_ptr(),
            &mut gr,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        );
        if rc == 0 && !result.is_null() {
            return Ok(gr.gr_gid);
        }
    }
    Err("Illegal GID".into())
}

/// A TLS protocol version as stunnel names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Ssl3,
    Tls1,
    Tls1_1,
    Tls1_2,
    Tls1_3,
}

impl TlsVersion {
    pub fn name(self) -> &'static str {
        match self {
            TlsVersion::Ssl3 => "SSLv3",
            TlsVersion::Tls1 => "TLSv1",
            TlsVersion::Tls1_1 => "TLSv1.1",
            TlsVersion::Tls1_2 => "TLSv1.2",
            TlsVersion::Tls1_3 => "TLSv1.3",
        }
    }
}

/// `all` (no limit, `None`) or one version name, case-insensitive.
pub fn tls_version(value: &str) -> Result<Option<TlsVersion>, String> {
    const ALL: [TlsVersion; 5] = [
        TlsVersion::Ssl3,
        TlsVersion::Tls1,
        TlsVersion::Tls1_1,
        TlsVersion::Tls1_2,
        TlsVersion::Tls1_3,
    ];
    if value.eq_ignore_ascii_case("all") {
        return Ok(None);
    }
    ALL.iter()
        .find(|v| v.name().eq_ignore_ascii_case(value))
        .map(|&v| Some(v))
        .ok_or_else(|| "Invalid protocol version".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yes_no_is_case_insensitive_and_strict() {
        assert_eq!(yes_no("YES"), Ok(true));
        assert_eq!(yes_no("No"), Ok(false));
        for bad in ["true", "1", "yes ; c", ""] {
            assert!(yes_no(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn integers_follow_strtol_without_trailing_junk() {
        assert_eq!(integer("42"), Some(42));
        assert_eq!(integer("+7"), Some(7));
        assert_eq!(integer("-3"), Some(-3));
        assert_eq!(integer("1s"), None);
        assert_eq!(integer(""), None);
        assert_eq!(integer("-"), None);
        assert_eq!(seconds("60", "close"), Ok(60));
        assert_eq!(seconds("x", "idle"), Err("Illegal idle timeout".into()));
        assert_eq!(seconds("-1", "busy"), Err("Illegal busy timeout".into()));
    }

    #[test]
    fn levels_by_name_or_digit() {
        assert_eq!(level("7"), Ok(Level::Debug));
        assert_eq!(level("Notice"), Ok(Level::Notice));
        assert_eq!(level("warning"), Ok(Level::Warning));
        for bad in ["warn", "8", "77", ""] {
            assert_eq!(level(bad), Err("Illegal debug level".into()), "{bad}");
        }
    }

    #[test]
    fn facility_only_in_global_part() {
        assert_eq!(
            debug("local0.info", true),
            Ok((Some(libc::LOG_LOCAL0), Level::Info))
        );
        assert_eq!(
            debug("LOCAL0.info", false),
            Err("Illegal debug level".into())
        );
        assert_eq!(
            debug("nope.info", true),
            Err("Illegal syslog facility".into())
        );
        assert_eq!(debug("5", false), Ok((None, Level::Notice)));
    }

    #[test]
    fn users_and_groups_by_name_or_number() {
        assert_eq!(user_id("root"), Ok(0));
        assert_eq!(user_id("65534"), Ok(65534));
        assert_eq!(user_id("no-such-user-rstunnel"), Err("Illegal UID".into()));
        assert_eq!(group_id("root"), Ok(0));
        assert_eq!(group_id("@DEFAULT_GROUP@"), Err("Illegal GID".into()));
    }

    #[test]
    fn tls_versions() {
        assert_eq!(tls_version("All"), Ok(None));
        assert_eq!(tls_version("tlsv1.2"), Ok(Some(TlsVersion::Tls1_2)));
        assert_eq!(tls_version("TLSv1"), Ok(Some(TlsVersion::Tls1)));
        assert!(tls_version("TLSv1_2").is_err());
    }
}
