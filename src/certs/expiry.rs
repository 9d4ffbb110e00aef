//! When to warn that a loaded certificate expires (docs/ARCHITECTURE.md, Certificates):
//! 30, 7 and 1 days before its not-after, and once it has passed. Plain data with the
//! clock passed in, so the rules are tested without waiting.
//!
//! `Tracker` remembers, per certificate (service, role, file, subject), the most severe
//! stage already said, so the hourly check speaks only when a certificate crosses the next
//! threshold; a renewed certificate (another serial or not-after in the same place) starts
//! again from nothing. `announce` (startup, each reload) says every certificate's stage
//! again, whatever was said before. Does not log: it returns the warnings.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use super::info::{CertInfo, CertRole};

const DAY: i64 = 86_400;

/// How close a certificate is to its not-after, least severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// More than 30 days left.
    Valid,
    Within30Days,
    Within7Days,
    Within1Day,
    Expired,
}

impl Stage {
    /// The stage of a certificate whose not-after is `not_after`, at `now` (both seconds
    /// since the epoch).
    pub fn at(now: i64, not_after: i64) -> Stage {
        let left = not_after - now;
        if left <= 0 {
            Stage::Expired
        } else if left <= DAY {
            Stage::Within1Day
        } else if left <= 7 * DAY {
            Stage::Within7Days
        } else if left <= 30 * DAY {
            Stage::Within30Days
        } else {
            Stage::Valid
        }
    }

    fn threshold(self) -> &'static str {
        match self {
            Stage::Valid => "",
            Stage::Within30Days => "30 days",
            Stage::Within7Days => "7 days",
            Stage::Within1Day => "1 day",
            Stage::Expired => "",
        }
    }
}

/// One warning about one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub service: String,
    pub role: CertRole,
    pub subject: String,
    pub file: PathBuf,
    pub stage: Stage,
    /// Seconds left until the not-after (0 or less once expired).
    pub left: i64,
    /// The not-after as OpenSSL prints it.
    pub not_after: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Service [{}]: {} {} in {} ",
            self.service,
            self.role.noun(),
            self.subject,
            self.file.display()
        )?;
        if self.stage == Stage::Expired {
            return write!(f, "expired on {}", self.not_after);
        }
        write!(
            f,
            "expires within {}: in {}, on {}",
            self.stage.threshold(),
            time_left(self.left),
            self.not_after
        )
    }
}

/// "5 days" (from two days on, to the nearest day), "23 hours" (to the nearest hour), "less
/// than an hour".
fn time_left(secs: i64) -> String {
    let plural = |n: i64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    if secs >= 2 * DAY {
        plural((secs + DAY / 2) / DAY, "day")
    } else if secs >= 3600 {
        plural((secs + 1800) / 3600, "hour")
    } else {
        "less than an hour".into()
    }
}

/// Which certificate: renewals replace it in the same place.
type Place = (String, CertRole, PathBuf, String);

/// What was said about the certificate in one place.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Said {
    serial: String,
    not_after: i64,
    stage: Stage,
}

/// What has been said; see the module header.
#[derive(Debug, Default)]
pub struct Tracker {
    said: HashMap<Place, Said>,
}

impl Tracker {
    /// At startup and after each reload: a warning for every certificate of `certs` that
    /// is within a threshold or expired, said or not before.
    pub fn announce<'a>(
        &mut self,
        now: i64,
        certs: impl IntoIterator<Item = &'a CertInfo>,
    ) -> Vec<Warning> {
        self.said.clear();
        self.check(now, certs)
    }

    /// The periodic check: a warning for each certificate that crossed a threshold since
    /// it was last looked at (or is new here and within one). Certificates no longer in
    /// `certs` are forgotten.
    pub fn check<'a>(
        &mut self,
        now: i64,
        certs: impl IntoIterator<Item = &'a CertInfo>,
    ) -> Vec<Warning> {
        let mut warnings = Vec::new();
        let mut seen: HashMap<Place, Said> = HashMap::new();
        for cert in certs {
            let place = (
                cert.service.clone(),
                cert.role,
                cert.file.clone(),
                cert.subject.clone(),
            );
            let stage = Stage::at(now, cert.not_after_unix);
            // A renewal (another serial or not-after) starts from nothing.
            let before = self
                .said
                .get(&place)
                .filter(|s| s.serial == cert.serial && s.not_after == cert.not_after_unix)
                .map_or(Stage::Valid, |s| s.stage);
            if stage > before && !seen.contains_key(&place) {
                warnings.push(Warning {
                    service: cert.service.clone(),
                    role: cert.role,
                    subject: cert.subject.clone(),
                    file: cert.file.clone(),
                    stage,
                    left: cert.not_after_unix - now,
                    not_after: cert.not_after.clone(),
                });
            }
            seen.insert(
                place,
                Said {
                    serial: cert.serial.clone(),
                    not_after: cert.not_after_unix,
                    stage: stage.max(before),
                },
            );
        }
        self.said = seen;
        warnings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn cert(not_after: i64, serial: &str) -> CertInfo {
        CertInfo {
            service: "srv".into(),
            role: CertRole::Cert,
            file: "/etc/certs/srv.pem".into(),
            subject: "CN=srv.example".into(),
            not_after_unix: not_after,
            not_after: "(date)".into(),
            serial: serial.into(),
        }
    }

    fn stages(w: &[Warning]) -> Vec<Stage> {
        w.iter().map(|w| w.stage).collect()
    }

    #[test]
    fn the_thresholds() {
        let at = |left: i64| Stage::at(NOW, NOW + left);
        assert_eq!(at(31 * DAY), Stage::Valid);
        assert_eq!(at(30 * DAY), Stage::Within30Days);
        assert_eq!(at(7 * DAY + 1), Stage::Within30Days);
        assert_eq!(at(7 * DAY), Stage::Within7Days);
        assert_eq!(at(DAY), Stage::Within1Day);
        assert_eq!(at(1), Stage::Within1Day);
        assert_eq!(at(0), Stage::Expired);
        assert_eq!(at(-DAY), Stage::Expired);
    }

    /// Checked hourly from 40 days before to 2 days after: one warning at each threshold
    /// (30, 7, 1, expired), never a repeat.
    #[test]
    fn each_threshold_is_said_once_as_it_is_crossed() {
        let c = cert(NOW + 40 * DAY, "01");
        let mut t = Tracker::default();
        assert!(t.announce(NOW, [&c]).is_empty(), "40 days left: nothing");
        let mut said = Vec::new();
        for hour in 1..=(42 * 24) {
            let now = NOW + hour * 3600;
            for w in t.check(now, [&c]) {
                said.push((w.stage, (c.not_after_unix - now) / 3600));
            }
        }
        assert_eq!(
            said,
            [
                (Stage::Within30Days, 30 * 24),
                (Stage::Within7Days, 7 * 24),
                (Stage::Within1Day, 24),
                (Stage::Expired, 0),
            ]
        );
    }

    /// Startup and reloads say every certificate's stage again; the hourly check does
    /// not repeat it.
    #[test]
    fn announce_says_it_again_check_does_not() {
        let c = cert(NOW + 5 * DAY, "01");
        let mut t = Tracker::default();
        assert_eq!(stages(&t.announce(NOW, [&c])), [Stage::Within7Days]);
        assert!(t.check(NOW + 3600, [&c]).is_empty());
        assert_eq!(stages(&t.announce(NOW + 7200, [&c])), [Stage::Within7Days]);
        assert!(t.check(NOW + 3 * 3600, [&c]).is_empty());
    }

    /// A renewed certificate in the same place starts fresh: nothing while it has long to
    /// go, and its own thresholds later; the same certificate in another service is its own.
    #[test]
    fn a_renewal_starts_fresh() {
        let old = cert(NOW + 12 * 3600, "01");
        let mut t = Tracker::default();
        assert_eq!(stages(&t.announce(NOW, [&old])), [Stage::Within1Day]);
        let renewed = cert(NOW + 60 * DAY, "02");
        assert!(t.check(NOW + 3600, [&renewed]).is_empty());
        assert_eq!(
            stages(&t.check(NOW + 31 * DAY, [&renewed])),
            [Stage::Within30Days]
        );
        // Same not-after, another serial (a reissue): also fresh.
        let reissued = cert(NOW + 60 * DAY, "03");
        assert_eq!(
            stages(&t.check(NOW + 31 * DAY, [&reissued])),
            [Stage::Within30Days]
        );
        let mut other = reissued.clone();
        other.service = "other".into();
        assert_eq!(
            stages(&t.check(NOW + 31 * DAY, [&reissued, &other])),
            [Stage::Within30Days],
            "only the other service's is new"
        );
    }

    #[test]
    fn the_lines() {
        let mut c = cert(NOW + DAY - 3600, "01");
        c.not_after = "Jan 15 08:00:00 2027 GMT".into();
        let w = Tracker::default().announce(NOW, [&c]);
        assert_eq!(
            w[0].to_string(),
            "Service [srv]: certificate CN=srv.example in /etc/certs/srv.pem expires within 1 day: in 23 hours, on Jan 15 08:00:00 2027 GMT"
        );
        c.role = CertRole::Ca;
        c.not_after_unix = NOW + 5 * DAY + 60;
        let w = Tracker::default().announce(NOW, [&c]);
        assert_eq!(
            w[0].to_string(),
            "Service [srv]: CA certificate CN=srv.example in /etc/certs/srv.pem expires within 7 days: in 5 days, on Jan 15 08:00:00 2027 GMT"
        );
        c.role = CertRole::Cert;
        c.not_after_unix = NOW - 60;
        let w = Tracker::default().announce(NOW, [&c]);
        assert_eq!(
            w[0].to_string(),
            "Service [srv]: certificate CN=srv.example in /etc/certs/srv.pem expired on Jan 15 08:00:00 2027 GMT"
        );
    }
}
