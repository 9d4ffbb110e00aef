//! `protocol = NAME` (STARTTLS) between tunnels, with a backend that greets and echoes
//! (`protocol = smtp | imap | pop3 | pgsql` on both sides): rstunnel client → stunnel4
//! server, stunnel4 client → rstunnel server, rstunnel → rstunnel; and `openssl s_client
//! -starttls smtp | imap | pop3 | postgres -verify_return_error` → rstunnel server. The
//! scripted peers are in `tests/common/scripted.rs`; the client side against scripted
//! servers is `tests/protocols.rs`.
//!
//! ```text
//! test ──plain──▶ client [cli] (protocol = X) ──clear, then TLS──▶ server [srv] ──▶ greeter
//! ```

mod common;

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use common::scripted::*;
use common::*;

// ---------------------------------------------------------------------------------------
// STARTTLS between two tunnels: rstunnel and stunnel4 in either role, and openssl s_client.

/// A backend that sends `greeting` first, then echoes until EOF; reports what it echoed.
fn greeting_echo_backend(greeting: &'static str) -> Server<Result<Vec<u8>, String>> {
    Server::spawn(move |mut s| {
        s.write_all(greeting.as_bytes())
            .map_err(|e| e.to_string())?;
        echo_until_eof(&mut s).map_err(|(n, e)| format!("after {n} byte(s): {e}"))
    })
}

/// What a backend behind a server-side STARTTLS tunnel says first (the tunnel consumes
/// it: its client already had the tunnel's own greeting), and how the greeting the local
/// client gets starts; pgsql has none.
fn greetings(name: &str) -> (&'static str, &'static str) {
    match name {
        "smtp" => ("220 backend.test ESMTP\r\n", "220"),
        "imap" => ("* OK backend IMAP ready\r\n", "* OK"),
        "pop3" => ("+OK backend POP3 ready\r\n", "+OK"),
        _ => ("", ""),
    }
}

/// Client tunnel (`client_prog`, `protocol = NAME`) → server tunnel (`server_prog`, same
/// protocol) → a backend that greets and echoes. The local client's first line starts
/// with the protocol's greeting code, then 100 kB go both ways through TLS.
fn starttls_between(client_prog: Program, server_prog: Program, name: &str) {
    if client_prog == Program::Stunnel4 || server_prog == Program::Stunnel4 {
        tools::stunnel4();
    }
    let (backend_greeting, greeting_prefix) = greetings(name);
    let dir = TestDir::new(&format!("starttls-{client_prog:?}-{server_prog:?}-{name}"));
    let pki = Pki::new(&dir);
    let backend = greeting_echo_backend(backend_greeting);
    let server = Tunnel::start_program(
        server_prog,
        &dir,
        "server",
        &server_body(
            backend.addr(),
            &pki.server.combined,
            &format!("protocol = {name}\n"),
        ),
    );
    let client = Tunnel::start_program(
        client_prog,
        &dir,
        "client",
        &client_body(server.addr("srv"), &client_extra(name, &pki.ca_file, "")),
    );
    let logs = || {
        format!(
            "\n--- client log ---\n{}--- server log ---\n{}",
            client.log_text(),
            server.log_text()
        )
    };
    let mut c = connect(client.addr("cli"));
    c.set_read_timeout(Some(T)).unwrap();
    if !greeting_prefix.is_empty() {
        let l = line(&mut c).unwrap_or_else(|e| {
            panic!(
                "[{name}] no greeting line for the local client: {e}{}",
                logs()
            )
        });
        assert!(
            l.starts_with(greeting_prefix),
            "[{name}] greeting {l:?} does not start with {greeting_prefix:?}{}",
            logs()
        );
    }
    let data = payload(11, 100_000);
    let writer = {
        let mut w = c.try_clone().unwrap();
        let data = data.clone();
        std::thread::spawn(move || {
            let _ = w.write_all(&data);
            let _ = w.shutdown(Shutdown::Write);
        })
    };
    let mut back = Vec::new();
    let _ = c.read_to_end(&mut back);
    writer.join().unwrap();
    assert!(
        back == data,
        "[{name}] {} of {} byte(s) came back{}",
        back.len(),
        data.len(),
        logs()
    );
    let echoed = backend.next(T).expect("backend");
    assert!(echoed == data, "[{name}] the backend saw other data");
    for (prog, t) in [(client_prog, &client), (server_prog, &server)] {
        if prog == Program::Rstunnel {
            wait_negotiated(t, name);
        }
    }
}

#[test]
fn smtp_rstunnel_client_to_stunnel4_server() {
    starttls_between(Program::Rstunnel, Program::Stunnel4, "smtp");
}

#[test]
fn imap_rstunnel_client_to_stunnel4_server() {
    starttls_between(Program::Rstunnel, Program::Stunnel4, "imap");
}

#[test]
fn pop3_rstunnel_client_to_stunnel4_server() {
    starttls_between(Program::Rstunnel, Program::Stunnel4, "pop3");
}

#[test]
fn pgsql_rstunnel_client_to_stunnel4_server() {
    starttls_between(Program::Rstunnel, Program::Stunnel4, "pgsql");
}

#[test]
fn smtp_stunnel4_client_to_rstunnel_server() {
    starttls_between(Program::Stunnel4, Program::Rstunnel, "smtp");
}

#[test]
fn imap_stunnel4_client_to_rstunnel_server() {
    starttls_between(Program::Stunnel4, Program::Rstunnel, "imap");
}

#[test]
fn pop3_stunnel4_client_to_rstunnel_server() {
    starttls_between(Program::Stunnel4, Program::Rstunnel, "pop3");
}

#[test]
fn pgsql_stunnel4_client_to_rstunnel_server() {
    starttls_between(Program::Stunnel4, Program::Rstunnel, "pgsql");
}

#[test]
fn smtp_rstunnel_client_to_rstunnel_server() {
    starttls_between(Program::Rstunnel, Program::Rstunnel, "smtp");
}

#[test]
fn imap_rstunnel_client_to_rstunnel_server() {
    starttls_between(Program::Rstunnel, Program::Rstunnel, "imap");
}

#[test]
fn pop3_rstunnel_client_to_rstunnel_server() {
    starttls_between(Program::Rstunnel, Program::Rstunnel, "pop3");
}

#[test]
fn pgsql_rstunnel_client_to_rstunnel_server() {
    starttls_between(Program::Rstunnel, Program::Rstunnel, "pgsql");
}

/// `openssl s_client -starttls X` → rstunnel server `protocol = X` → a backend that greets,
/// answers one line with `echo: LINE` and closes. s_client checks the certificate
/// (`-verify_return_error`) and prints the answer.
fn s_client_to_rstunnel_server(name: &str, starttls: &str) {
    let (backend_greeting, _) = greetings(name);
    let dir = TestDir::new(&format!("s-client-{name}"));
    let pki = Pki::new(&dir);
    let backend = Server::spawn(move |mut s| -> Result<String, String> {
        s.write_all(backend_greeting.as_bytes())
            .map_err(|e| e.to_string())?;
        let l = line(&mut s).map_err(|e| e.to_string())?;
        s.write_all(format!("echo: {l}\r\n").as_bytes())
            .map_err(|e| e.to_string())?;
        let _ = s.shutdown(Shutdown::Write);
        let _ = drain(&mut s);
        Ok(l)
    });
    let server = Tunnel::server(&dir, &pki, backend.addr(), &format!("protocol = {name}\n"));
    let args = [
        OsStr::new("-starttls"),
        OsStr::new(starttls),
        OsStr::new("-CAfile"),
        pki.ca_file.as_os_str(),
        OsStr::new("-verify_return_error"),
        OsStr::new("-quiet"),
    ];
    let r = openssl_cli::s_client(
        server.port("srv"),
        &args,
        b"hello from s_client\n",
        Duration::from_secs(20),
    );
    let got = backend.next(T);
    assert_eq!(
        got.as_deref(),
        Ok("hello from s_client"),
        "[{name}] the backend did not get s_client's line\n{}\n--- server log ---\n{}",
        r.describe(),
        server.log_text()
    );
    assert!(
        r.stdout.contains("echo: hello from s_client"),
        "[{name}] s_client did not print the backend's answer\n{}\n--- server log ---\n{}",
        r.describe(),
        server.log_text()
    );
    wait_negotiated(&server, name);
}

#[test]
fn smtp_openssl_s_client_to_rstunnel_server() {
    s_client_to_rstunnel_server("smtp", "smtp");
}

#[test]
fn imap_openssl_s_client_to_rstunnel_server() {
    s_client_to_rstunnel_server("imap", "imap");
}

#[test]
fn pop3_openssl_s_client_to_rstunnel_server() {
    s_client_to_rstunnel_server("pop3", "pop3");
}

#[test]
fn pgsql_openssl_s_client_to_rstunnel_server() {
    s_client_to_rstunnel_server("pgsql", "postgres");
}
