//! Pre-shared keys: `PSKsecrets = FILE` (lines `IDENTITY:KEY`) and `PSKidentity`, for
//! TLS 1.2 PSK suites and TLS 1.3 external PSKs through OpenSSL's PSK callbacks, as
//! stunnel does. A key is hex when the whole value is valid hex, ASCII otherwise, and
//! must be at least 16 bytes. Reads the secrets file; holds the keys; nothing else.

use std::path::Path;

use super::error::TlsSetupError;
use super::files::warn_if_world_readable;

/// OpenSSL's limit on an identity (PSK_MAX_IDENTITY_LEN).
pub const MAX_IDENTITY_LEN: usize = 128;
/// Shorter keys are refused: they can be brute-forced.
pub const MIN_KEY_LEN: usize = 16;

pub struct PskTable {
    entries: Vec<(Vec<u8>, Vec<u8>)>,
}

fn decode_key(text: &str) -> Vec<u8> {
    let hex =
        text.len() % 2 == 0 && !text.is_empty() && text.bytes().all(|b| b.is_ascii_hexdigit());
    if hex {
        (0..text.len())
            .step_by(2)
            .filter_map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
            .collect()
    } else {
        text.as_bytes().to_vec()
    }
}

impl PskTable {
    /// Parses the text of a secrets file; `name` is used in error messages.
    pub fn parse(name: &str, text: &str) -> Result<PskTable, TlsSetupError> {
        let mut entries = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            let error = |what: &str| {
                TlsSetupError::plain(format!("PSKsecrets {name}:{}: {what}", index + 1))
            };
            let (identity, key) = line
                .split_once(':')
                .ok_or_else(|| error("no ':' between identity and key"))?;
            if identity.is_empty() {
                return Err(error("empty identity"));
            }
            if identity.len() > MAX_IDENTITY_LEN {
                return Err(error("identity longer than 128 bytes"));
            }
            let key = decode_key(key);
            if key.len() < MIN_KEY_LEN {
                return Err(error("key too short (at least 16 bytes are needed)"));
            }
            entries.push((identity.as_bytes().to_vec(), key));
        }
        if entries.is_empty() {
            return Err(TlsSetupError::plain(format!("PSKsecrets {name}: no keys")));
        }
        Ok(PskTable { entries })
    }

    /// Reads a secrets file, warning when others may read it.
    pub fn load(path: &Path) -> Result<PskTable, TlsSetupError> {
        warn_if_world_readable(path);
        let text = std::fs::read_to_string(path)
            .map_err(|e| TlsSetupError::plain(format!("PSKsecrets = {}: {e}", path.display())))?;
        PskTable::parse(&path.display().to_string(), &text)
    }

    pub fn key_for(&self, identity: &[u8]) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|(id, _)| id.as_slice() == identity)
            .map(|(_, key)| key.as_slice())
    }

    /// The client's identity: `PSKidentity`, or the first one in the file.
    pub fn client_entry(&self, wanted: Option<&str>) -> Option<(Vec<u8>, Vec<u8>)> {
        match wanted {
            Some(id) => self
                .key_for(id.as_bytes())
                .map(|key| (id.as_bytes().to_vec(), key.to_vec())),
            None => self.entries.first().cloned(),
        }
    }
}

/// Copies `src` into the callback's buffer; `None` if it does not fit.
pub fn copy_into(dst: &mut [u8], src: &[u8]) -> Option<usize> {
    let room = dst.get_mut(..src.len())?;
    room.copy_from_slice(src);
    Some(src.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_ascii_keys() {
        let t = PskTable::parse(
            "f",
            "a:000102030405060708090a0b0c0d0e0f\nb:this is a long ascii key\n\n",
        )
        .unwrap();
        assert_eq!(
            t.key_for(b"a").unwrap(),
            (0u8..16).collect::<Vec<_>>().as_slice()
        );
        assert_eq!(t.key_for(b"b").unwrap(), b"this is a long ascii key");
        assert!(t.key_for(b"c").is_none());
        assert_eq!(t.client_entry(None).unwrap().0, b"a");
        assert_eq!(
            t.client_entry(Some("b")).unwrap().1,
            b"this is a long ascii key"
        );
        assert!(t.client_entry(Some("zz")).is_none());
    }

    #[test]
    fn the_key_may_contain_colons_and_odd_hex_is_ascii() {
        let t = PskTable::parse("f", "id:abc:defghijklmnopqrst\nid2:0123456789abcdef0\n").unwrap();
        assert_eq!(t.key_for(b"id").unwrap(), b"abc:defghijklmnopqrst");
        assert_eq!(t.key_for(b"id2").unwrap(), b"0123456789abcdef0");
    }

    #[test]
    fn bad_lines_are_refused_with_their_number() {
        let e = PskTable::parse("f", "a:0123456789abcdef0123456789abcdef\nb:short\n")
            .err()
            .unwrap();
        assert!(e.to_string().contains("f:2: key too short"), "{e}");
        let e = PskTable::parse("f", "nocolon\n").err().unwrap();
        assert!(e.to_string().contains("f:1:"), "{e}");
        assert!(PskTable::parse("f", "\n").is_err());
        let long = format!("{}:0123456789abcdef0123456789abcdef", "x".repeat(129));
        assert!(PskTable::parse("f", &long).is_err());
    }

    #[test]
    fn copy_respects_the_buffer() {
        let mut buf = [0u8; 4];
        assert_eq!(copy_into(&mut buf, b"abc"), Some(3));
        assert_eq!(copy_into(&mut buf, b"abcde"), None);
    }
}
