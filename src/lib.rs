//! rstunnel: a drop-in replacement for stunnel. The library holds every part; `main.rs`
//! only turns the command line into a call to `cli::run`.

#[macro_use]
pub mod log;
pub mod config;
pub mod tls;
