//! rstunnel: a drop-in replacement for stunnel. The library holds every part; `main.rs`
//! only turns the command line into a call to `cli::run`.

#[macro_use]
pub mod log;
pub mod accept;
pub mod accounting;
pub mod certs;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod exec;
pub mod health;
pub mod listeners;
pub mod memory;
pub mod metrics;
pub mod net;
pub mod openssl_names;
pub mod probe;
pub mod protocol;
pub mod relay;
pub mod repeats;
pub mod resume;
pub mod runtime;
pub mod sandbox;
pub mod service;
pub mod session;
pub mod status;
pub mod tls;
pub mod wake;
