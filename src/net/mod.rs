//! Sockets: address syntax and resolution (`addr`), listening (`listen`), outgoing
//! connections with a deadline (`connect`), and `Stream`, the one socket type the session
//! and relay see. Knows nothing about TLS.

pub mod addr;
pub mod connect;
pub mod listen;
pub mod sockopt;
mod stream;

pub use addr::{display_addr, Endpoint};
pub use stream::Stream;
