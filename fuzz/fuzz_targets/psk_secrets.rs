//! Fuzz target `psk_secrets`: the text of a `PSKsecrets` file (IDENTITY:KEY lines, hex or
//! ASCII keys, length limits), then the lookups a handshake makes on the table: by the
//! identity a client sends (the input's first line), and the client's own entry.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rstunnel::tls::psk::PskTable;

fuzz_target!(|data: &[u8]| {
    rstunnel_fuzz::init();
    let text = String::from_utf8_lossy(data);
    match PskTable::parse("/etc/stunnel/psk.txt", &text) {
        Ok(table) => {
            let first = text.lines().next().unwrap_or("");
            let identity = first.split(':').next().unwrap_or("");
            let _ = table.key_for(identity.as_bytes());
            let _ = table.key_for(data);
            let _ = table.client_entry(None);
            let _ = table.client_entry(Some(identity));
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
});
