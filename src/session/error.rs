//! Why a session ended before relaying, as typed values: `SessionError` (no target, a
//! failed handshake, a failed protocol exchange, something that could not be set up), made
//! into its one message where it is logged (`Display`). Types only; a leaf of `session/`.

/// Why a session ended before relaying. Displayed once, where it is logged.
#[derive(Debug)]
pub enum SessionError {
    /// No target address accepted the connection (already logged per address).
    ConnectFailed,
    /// The TLS handshake (`op`: SSL_accept or SSL_connect) failed.
    Handshake {
        op: &'static str,
        why: HandshakeFailure,
    },
    /// The `protocol` exchange failed (`name`), or a SOCKS client's request (no name).
    Protocol { name: Option<String>, why: String },
    /// A local resource ran out (fds, memory), or the program could not start.
    Setup(Setup),
    /// Dropped before its handshake completed, the oldest unproven session, to make room
    /// for a newer one (`unprovenMax`, the limit, was reached).
    DroppedForRoom { limit: usize },
}

/// How a TLS handshake failed.
#[derive(Debug)]
pub enum HandshakeFailure {
    /// The peer refused it (an alert, a certificate): a configuration problem.
    Refused(String),
    /// The connection broke: reset, end of stream.
    Disconnected(String),
    /// TIMEOUTbusy passed.
    TimedOut,
    Poll(std::io::Error),
}

/// What could not be set up for a session.
#[derive(Debug)]
pub enum Setup {
    Exec {
        program: String,
        error: std::io::Error,
    },
    OriginalDestination(std::io::Error),
    SslNew(openssl::error::ErrorStack),
    Sni {
        name: String,
        error: openssl::error::ErrorStack,
    },
    NonBlocking {
        op: &'static str,
        error: std::io::Error,
    },
    Ssl {
        op: &'static str,
        error: openssl::error::ErrorStack,
    },
}

impl SessionError {
    /// Whether the far side took the connection but could not hold a handshake (reset,
    /// end of stream, TIMEOUTbusy): as good as down, for `pauseWhenDown`. A refusal is a
    /// configuration problem and no sign of an outage.
    pub(super) fn far_side_gone(&self) -> bool {
        matches!(
            self,
            SessionError::Handshake {
                why: HandshakeFailure::Disconnected(_) | HandshakeFailure::TimedOut,
                ..
            }
        )
    }
}

impl std::fmt::Display for SessionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionError::ConnectFailed => write!(f, "no target accepted the connection"),
            SessionError::Handshake { op, why } => match why {
                HandshakeFailure::Refused(msg) | HandshakeFailure::Disconnected(msg) => {
                    write!(f, "{op}: {msg}")
                }
                HandshakeFailure::TimedOut => write!(f, "{op}: TIMEOUTbusy exceeded"),
                HandshakeFailure::Poll(e) => write!(f, "{op}: poll: {e}"),
            },
            SessionError::Protocol {
                name: Some(name),
                why,
            } => write!(f, "protocol {name}: {why}"),
            SessionError::Protocol { name: None, why } => write!(f, "{why}"),
            SessionError::Setup(setup) => match setup {
                Setup::Exec { program, error } => write!(f, "exec {program}: {error}"),
                Setup::OriginalDestination(e) => write!(f, "getsockopt SO_ORIGINAL_DST: {e}"),
                Setup::SslNew(e) => write!(f, "SSL_new: {e}"),
                Setup::Sni { name, error } => write!(f, "SNI {name}: {error}"),
                Setup::NonBlocking { op, error } => write!(f, "{op}: {error}"),
                Setup::Ssl { op, error } => write!(f, "{op}: {error}"),
            },
            SessionError::DroppedForRoom { limit } => write!(
                f,
                "dropped before its handshake completed, the oldest of {limit} unproven sessions (unprovenMax), to make room for a new one"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_session_reads_as_its_error() {
        assert_eq!(
            SessionError::ConnectFailed.to_string(),
            "no target accepted the connection"
        );
        let gone = || std::io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(
            SessionError::Setup(Setup::Exec {
                program: "/x".into(),
                error: gone(),
            })
            .to_string(),
            "exec /x: No such file or directory (os error 2)"
        );
        let timed_out = SessionError::Handshake {
            op: "SSL_connect",
            why: HandshakeFailure::TimedOut,
        };
        assert_eq!(timed_out.to_string(), "SSL_connect: TIMEOUTbusy exceeded");
        assert!(timed_out.far_side_gone());
        let refused = SessionError::Handshake {
            op: "SSL_connect",
            why: HandshakeFailure::Refused("alert".into()),
        };
        assert_eq!(refused.to_string(), "SSL_connect: alert");
        assert!(!refused.far_side_gone(), "a refusal is no outage");
        assert_eq!(
            SessionError::Protocol {
                name: Some("smtp".into()),
                why: "no 220".into()
            }
            .to_string(),
            "protocol smtp: no 220"
        );
        assert_eq!(
            SessionError::DroppedForRoom { limit: 5 }.to_string(),
            "dropped before its handshake completed, the oldest of 5 unproven sessions (unprovenMax), to make room for a new one"
        );
    }
}
