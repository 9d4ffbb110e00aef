//! `exec` / `execArgs`: a local program as one side of a session. The program gets one end
//! of a socketpair as stdin and stdout — or, with `pty = yes`, a pseudo-terminal as its
//! controlling terminal — (stderr stays the process's: the terminal in the foreground,
//! /dev/null as a daemon) and the environment stunnel sets: REMOTE_HOST, REMOTE_PORT,
//! SSL_CLIENT_DN, SSL_CLIENT_I_DN. Spawns and reaps; never relays.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use crate::net::Stream;

/// What `exec` reads of a service's configuration (a narrow view of it; the caller fills
/// it from `exec`, `execArgs` and `pty`).
#[derive(Debug, Clone, Copy)]
pub struct Program<'a> {
    pub path: &'a std::path::Path,
    /// argv, argv[0] first; empty: argv[0] is the path.
    pub args: &'a [String],
    pub pty: bool,
}

/// What the program is told about its peer.
#[derive(Debug, Default, Clone)]
pub struct PeerInfo {
    pub host: Option<String>,
    pub port: Option<String>,
    /// The verified peer certificate's subject and issuer (server side, client certs).
    pub subject: Option<String>,
    pub issuer: Option<String>,
}

impl PeerInfo {
    /// From a peer as logs show it: `IP:PORT` (IPv6 without brackets; split at the last colon).
    pub fn from_peer(peer: &str) -> PeerInfo {
        match peer.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !port.is_empty() => {
                PeerInfo {
                    host: Some(host.to_string()),
                    port: Some(port.to_string()),
                    ..PeerInfo::default()
                }
            }
            _ => PeerInfo::default(),
        }
    }
}

/// Starts `exec` with `execArgs` (split on blanks; the first is argv[0], as in stunnel;
/// without execArgs argv[0] is the program path). Returns our end of its stdio. The child
/// is reaped by a small thread when it exits, so no zombie is left.
pub fn spawn(program: &Program<'_>, peer: &PeerInfo) -> io::Result<Stream> {
    let (ours, theirs, theirs_out) = if program.pty {
        let (master, slave) = open_pty()?;
        let master_out = master.try_clone()?;
        let slave_out = slave.try_clone()?;
        (Stream::from_pair(master, master_out), slave, slave_out)
    } else {
        let (ours, theirs) = UnixStream::pair()?;
        let theirs_out = theirs.try_clone()?;
        (
            Stream::from_unix(ours),
            OwnedFd::from(theirs),
            OwnedFd::from(theirs_out),
        )
    };
    let mut command = Command::new(program.path);
    if program.pty {
        // SAFETY: between fork and exec only async-signal-safe calls: setsid() makes the
        // child a session leader, TIOCSCTTY makes its stdin (the pty slave) the
        // controlling terminal.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut args = program.args.iter();
    if let Some(arg0) = args.next() {
        command.arg0(arg0);
    }
    command.args(args);
    command
        .stdin(Stdio::from(theirs))
        .stdout(Stdio::from(theirs_out));
    for (name, value) in [
        ("REMOTE_HOST", &peer.host),
        ("REMOTE_PORT", &peer.port),
        ("SSL_CLIENT_DN", &peer.subject),
        ("SSL_CLIENT_I_DN", &peer.issuer),
    ] {
        if let Some(value) = value {
            command.env(name, value);
        }
    }
    let mut child = command.spawn()?;
    let pid = child.id();
    log_info!("Local mode child started (PID={pid})");
    // The session does not wait for the program: a reaper does, off the session's path.
    let reaper = std::thread::Builder::new()
        .name("reaper".into())
        .stack_size(32 * 1024)
        .spawn(move || match child.wait() {
            Ok(status) => log_info!("Child process {pid} finished with {status}"),
            Err(e) => log_warning!("Child process {pid}: {e}"),
        });
    if let Err(e) = reaper {
        log_warning!("Child process {pid} will not be reaped: {e}");
    }
    Ok(ours)
}

/// A new pseudo-terminal: (master, slave), both close-on-exec (the slave is handed to the
/// program as its stdio, which clears that flag there).
fn open_pty() -> io::Result<(OwnedFd, OwnedFd)> {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two descriptors into the integers we pass; the name, termios
    // and window size arguments may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both are new descriptors owned by nobody else.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    for fd in [&master, &slave] {
        // SAFETY: fcntl on a descriptor we own.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok((master, slave))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn peer_info_from_log_form() {
        let p = PeerInfo::from_peer("::1:4433");
        assert_eq!(
            (p.host.as_deref(), p.port.as_deref()),
            (Some("::1"), Some("4433"))
        );
        let p = PeerInfo::from_peer("Unix socket");
        assert!(p.host.is_none());
    }

    #[test]
    fn the_program_talks_on_its_stdio_and_sees_the_environment() {
        let args = [
            "sh".to_string(),
            "-c".into(),
            "echo \"$REMOTE_HOST $REMOTE_PORT\"; cat".into(),
        ];
        let program = Program {
            path: std::path::Path::new("/bin/sh"),
            args: &args,
            pty: false,
        };
        let stream = spawn(&program, &PeerInfo::from_peer("192.0.2.7:555")).unwrap();
        (&stream).write_all(b"through cat\n").unwrap();
        stream.shutdown_write();
        let mut out = String::new();
        (&stream).read_to_string(&mut out).unwrap();
        assert_eq!(out, "192.0.2.7 555\nthrough cat\n");
    }
}
