//! How a session ended (`End`: relayed, or failed before relaying) and its closing lines:
//! stunnel's `Connection closed|reset` line and rstunnel's `Session summary` line, made once
//! from the `End`. A leaf of `session/`.

use super::error::SessionError;
use crate::accounting::SessionGuard;
use crate::relay::{Outcome, Summary};
use crate::service::ServiceCtx;

/// How a session ended, for its closing lines.
pub(super) enum End {
    /// It relayed, then closed or was cut (`relay::Outcome`).
    Relayed(Summary),
    /// It ended before relaying (no target, a failed handshake, a local shortage).
    Failed(SessionError),
}

/// What ends a session, whichever way it went: the closing lines, then the slot released.
pub(super) type Finish = Box<dyn FnOnce(End) + Send>;

/// The closing lines of a session, in stunnel's words, and rstunnel's one-line summary.
pub(super) fn log_session_end(svc: &ServiceCtx, guard: &SessionGuard, end: &End) {
    let live = guard.session();
    let (sent_to_tls, sent_to_socket) = match end {
        End::Relayed(s) => (s.sent_to_tls, s.sent_to_socket),
        End::Failed(_) => (0, 0),
    };
    let cut = match end {
        End::Relayed(Summary {
            outcome: Outcome::Closed,
            ..
        }) => None,
        End::Relayed(Summary {
            outcome: Outcome::Cut(cut),
            ..
        }) => Some(cut.to_string()),
        End::Failed(e) => Some(e.to_string()),
    };
    // As stunnel words it: "reset" when the session ended with a TCP reset, which only
    // `reset = yes` (the default) sends; a failed session is "closed" otherwise.
    let how = if cut.is_some() && svc.opts.reset {
        "reset"
    } else {
        "closed"
    };
    // A session that ended cleanly having moved nothing either way is what a far side's
    // probe looks like here (`pauseWhenDown` on the tunnel in front, every few seconds
    // while it is paused): logged at debug, so that probes do not fill the log.
    let empty = cut.is_none() && sent_to_tls == 0 && sent_to_socket == 0;
    let level = if empty {
        crate::log::Level::Debug
    } else {
        crate::log::Level::Notice
    };
    log_at!(
        level,
        "Connection {how}: {sent_to_tls} byte(s) sent to TLS, {sent_to_socket} byte(s) sent to socket"
    );
    let reason = cut.map(|r| format!(" ({r})")).unwrap_or_default();
    log_at!(
        if empty {
            crate::log::Level::Debug
        } else {
            crate::log::Level::Info
        },
        "Session summary: service [{}], peer {}, {sent_to_tls} byte(s) to TLS, {sent_to_socket} byte(s) to socket, {:.3} s, {how}{reason}",
        svc.opts.name,
        live.peer,
        live.started.elapsed().as_secs_f64()
    );
}
