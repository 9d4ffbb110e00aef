//! Value syntax shared by many options: yes/no, numbers, seconds, log levels and
//! facilities, TLS protocol versions. Each parser says what was wrong as a `ValueError`,
//! displayed in stunnel's own words so that messages match what users already search for.

use super::error::ValueError;
use crate::log::Level;

/// The words of a yes/no option, in stunnel's order.
pub const YES_NO: &[&str] = &["yes", "no"];

/// `yes`/`no`, case-insensitive; nothing else (stunnel accepts no `true`/`1`).
pub fn yes_no(value: &str) -> Result<bool, ValueError> {
    if value.eq_ignore_ascii_case("yes") {
        Ok(true)
    } else if value.eq_ignore_ascii_case("no") {
        Ok(false)
    } else {
        Err(ValueError::NotOneOf(YES_NO))
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
pub fn seconds(value: &str, what: &'static str) -> Result<u64, ValueError> {
    integer(value)
        .and_then(|n| u64::try_from(n).ok())
        .ok_or(ValueError::Timeout(what))
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
pub fn level(value: &str) -> Result<Level, ValueError> {
    let index = if value.len() == 1 && value.as_bytes()[0].is_ascii_digit() {
        Some(usize::from(value.as_bytes()[0] - b'0'))
    } else {
        LEVEL_NAMES
            .iter()
            .position(|name| name.eq_ignore_ascii_case(value))
    };
    index
        .and_then(Level::from_index)
        .ok_or(ValueError::Illegal("debug level"))
}

/// `[FACILITY.]LEVEL`. The facility is only accepted where `facility_allowed` (global part).
pub fn debug(
    value: &str,
    facility_allowed: bool,
) -> Result<(Option<libc::c_int>, Level), ValueError> {
    match value.split_once('.') {
        Some((facility, lvl)) if facility_allowed => {
            let code = FACILITIES
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(facility))
                .map(|&(_, code)| code)
                .ok_or(ValueError::Illegal("syslog facility"))?;
            Ok((Some(code), level(lvl)?))
        }
        Some(_) => Err(ValueError::Illegal("debug level")),
        None => Ok((None, level(value)?)),
    }
}

/// A numeric `setuid`/`setgid` value (a uid or gid needs no lookup).
pub fn numeric_id(value: &str) -> Option<u32> {
    integer(value).and_then(|n| u32::try_from(n).ok())
}

/// A user by name or number (`setuid`), from the system's user database.
pub fn user_id(value: &str) -> Result<libc::uid_t, ValueError> {
    let illegal = ValueError::Illegal("UID");
    if let Some(n) = numeric_id(value) {
        return Ok(n);
    }
    let Ok(name) = std::ffi::CString::new(value) else {
        return Err(illegal);
    };
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
    Err(illegal)
}

/// A group by name or number (`setgid`), from the system's group database.
pub fn group_id(value: &str) -> Result<libc::gid_t, ValueError> {
    let illegal = ValueError::Illegal("GID");
    if let Some(n) = numeric_id(value) {
        return Ok(n);
    }
    let Ok(name) = std::ffi::CString::new(value) else {
        return Err(illegal);
    };
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
    Err(illegal)
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
pub fn tls_version(value: &str) -> Result<Option<TlsVersion>, ValueError> {
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
        .ok_or(ValueError::Invalid("protocol version"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A result with its error as the user reads it.
    fn text<T>(result: Result<T, ValueError>) -> Result<T, String> {
        result.map_err(|e| e.to_string())
    }

    #[test]
    fn yes_no_is_case_insensitive_and_strict() {
        assert_eq!(text(yes_no("YES")), Ok(true));
        assert_eq!(text(yes_no("No")), Ok(false));
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
        assert_eq!(text(seconds("60", "close")), Ok(60));
        assert_eq!(
            text(seconds("x", "idle")),
            Err("Illegal idle timeout".into())
        );
        assert_eq!(
            text(seconds("-1", "busy")),
            Err("Illegal busy timeout".into())
        );
    }

    #[test]
    fn levels_by_name_or_digit() {
        assert_eq!(text(level("7")), Ok(Level::Debug));
        assert_eq!(text(level("Notice")), Ok(Level::Notice));
        assert_eq!(text(level("warning")), Ok(Level::Warning));
        for bad in ["warn", "8", "77", ""] {
            assert_eq!(text(level(bad)), Err("Illegal debug level".into()), "{bad}");
        }
    }

    #[test]
    fn facility_only_in_global_part() {
        assert_eq!(
            text(debug("local0.info", true)),
            Ok((Some(libc::LOG_LOCAL0), Level::Info))
        );
        assert_eq!(
            text(debug("LOCAL0.info", false)),
            Err("Illegal debug level".into())
        );
        assert_eq!(
            text(debug("nope.info", true)),
            Err("Illegal syslog facility".into())
        );
        assert_eq!(text(debug("5", false)), Ok((None, Level::Notice)));
    }

    #[test]
    fn users_and_groups_by_name_or_number() {
        assert_eq!(text(user_id("root")), Ok(0));
        assert_eq!(text(user_id("65534")), Ok(65534));
        assert_eq!(
            text(user_id("no-such-user-rstunnel")),
            Err("Illegal UID".into())
        );
        assert_eq!(text(group_id("root")), Ok(0));
        assert_eq!(text(group_id("@DEFAULT_GROUP@")), Err("Illegal GID".into()));
    }

    #[test]
    fn tls_versions() {
        assert_eq!(text(tls_version("All")), Ok(None));
        assert_eq!(text(tls_version("tlsv1.2")), Ok(Some(TlsVersion::Tls1_2)));
        assert_eq!(text(tls_version("TLSv1")), Ok(Some(TlsVersion::Tls1)));
        assert!(tls_version("TLSv1_2").is_err());
    }
}
