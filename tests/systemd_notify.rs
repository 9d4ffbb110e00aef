//! Under systemd's `Type=notify` (`NOTIFY_SOCKET` set) rstunnel never forks, even with
//! `foreground = no`, and reports READY=1, RELOADING=1 then READY=1 on SIGHUP, and
//! STOPPING=1 on SIGTERM, from the process systemd started.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::daemon::rstunnel_bin;
use common::*;

/// Kills the child if the test fails half way.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn next_state(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 256];
    let n = socket
        .recv(&mut buf)
        .expect("rstunnel sent no notification within 10 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn notify_states_from_the_started_process_without_forking() {
    let dir = TestDir::new("notify");
    let pki = Pki::new(&dir);
    let echo = Backend::echo();
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // foreground = no: without NOTIFY_SOCKET this would fork and the parent would exit.
    let conf = dir.write(
        "notify.conf",
        format!(
            "foreground = no\nsyslog = no\noutput = {}\n{}",
            dir.join("log").display(),
            server_body(echo.addr(), &pki.server.combined, "")
        ),
    );
    let mut child = Child(
        Command::new(rstunnel_bin())
            .arg(&conf)
            .env("NOTIFY_SOCKET", &socket_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert_eq!(next_state(&socket), "READY=1");
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "the started process must keep running (no fork under Type=notify)"
    );
    let pid = child.0.id() as libc::pid_t;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    assert_eq!(next_state(&socket), "RELOADING=1");
    assert_eq!(next_state(&socket), "READY=1");
    unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(next_state(&socket), "STOPPING=1");
    let status = child.0.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let log = std::fs::read_to_string(dir.join("log")).unwrap();
    assert!(log.contains("Configuration reloaded"), "{log}");
    assert!(log.contains("Terminated"), "{log}");
}
