//! Stage 1 of the configuration: bytes of one file → `RawLine`s.
//!
//! Owns the line rules of stunnel.conf: CRs dropped anywhere, a UTF-8 BOM at the start of
//! the file skipped, 16383-byte line limit, trimming, `;`/`#` comment lines, `[section]`
//! headers taken verbatim, `name = value` split at the first `=`. It knows nothing about
//! option names or sections' meaning, and reads no files itself.

use std::sync::Arc;

/// stunnel reads lines with a 16 KiB buffer: a longer line is cut after this many bytes and
/// the rest is read as the next line.
pub const MAX_LINE_BYTES: usize = 16383;

/// One meaningful line of a configuration file (comments and blank lines are not kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawLine {
    /// The file the line came from, as it is named in error messages.
    pub file: Arc<str>,
    /// 1-based line number within `file`.
    pub number: usize,
    /// The line as written, without CR and LF, leading blanks kept (quoted in errors).
    pub text: String,
    pub kind: LineKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineKind {
    /// `[name]`: the name between the brackets, verbatim (blanks kept, may be empty).
    Section(String),
    /// `name = value`: name with trailing blanks trimmed, value with leading blanks trimmed.
    Option { name: String, value: String },
    /// Neither a comment, a header nor an assignment: stunnel's "No '=' found".
    NoEquals,
}

/// C's `isspace` in the "C" locale, which is what stunnel trims with.
fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// Splits `bytes` (the whole content of `file`) into meaningful lines.
pub fn lex(file: &Arc<str>, bytes: &[u8]) -> Vec<RawLine> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut lines = Vec::new();
    for (index, physical) in split_lines(bytes).enumerate() {
        let number = index + 1;
        let text: String = String::from_utf8_lossy(physical)
            .chars()
            .filter(|&c| c != '\r')
            .collect();
        if let Some(kind) = classify(&text) {
            lines.push(RawLine {
                file: Arc::clone(file),
                number,
                text,
                kind,
            });
        }
    }
    lines
}

/// Yields lines as stunnel's `fgets` loop sees them: split at `\n`, and every
/// `MAX_LINE_BYTES` bytes within a longer line. A final line without `\n` counts.
fn split_lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (line, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(nl) if nl < MAX_LINE_BYTES => (&rest[..nl], &rest[nl + 1..]),
            _ if rest.len() > MAX_LINE_BYTES => (&rest[..MAX_LINE_BYTES], &rest[MAX_LINE_BYTES..]),
            _ => (rest, &rest[rest.len()..]),
        };
        rest = next;
        Some(line)
    })
}

/// What a CR-free line is, or `None` for blank and comment lines.
pub fn classify(text: &str) -> Option<LineKind> {
    let trimmed = text.trim_matches(is_c_space);
    if trimmed.is_empty() || trimmed.starts_with(';') || trimmed.starts_with('#') {
        return None;
    }
    if trimmed.len() >= 2 && trimmed.starts_with('[') && trimmed.ends_with(']') {
        return Some(LineKind::Section(trimmed[1..trimmed.len() - 1].to_string()));
    }
    match trimmed.split_once('=') {
        Some((name, value)) => Some(LineKind::Option {
            name: name.trim_end_matches(is_c_space).to_string(),
            value: value.trim_start_matches(is_c_space).to_string(),
        }),
        None => Some(LineKind::NoEquals),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lex_str(s: &str) -> Vec<RawLine> {
        lex(&Arc::from("t.conf"), s.as_bytes())
    }

    fn opt(name: &str, value: &str) -> LineKind {
        LineKind::Option {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn comments_with_semicolon_and_hash_after_blanks_are_skipped() {
        let lines = lex_str("; debian\n# red hat\n   ; indented\n\t# tab\n\n   \nclient = yes\n");
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].number, 7);
        assert_eq!(lines[0].kind, opt("client", "yes"));
    }

    #[test]
    fn no_inline_comments() {
        let lines = lex_str("client = yes ; c\n");
        assert_eq!(lines[0].kind, opt("client", "yes ; c"));
        assert_eq!(lex_str("[x] ; c\n")[0].kind, LineKind::NoEquals);
    }

    #[test]
    fn crlf_and_stray_cr_are_dropped_everywhere() {
        let lines = lex_str("client = y\res\r\n[a\rb]\r\n");
        assert_eq!(lines[0].kind, opt("client", "yes"));
        assert_eq!(lines[0].text, "client = yes");
        assert_eq!(lines[1].kind, LineKind::Section("ab".into()));
    }

    #[test]
    fn bom_is_skipped_only_at_start() {
        let lines = lex_str("\u{FEFF}client = yes\n");
        assert_eq!(lines[0].kind, opt("client", "yes"));
        let lines = lex_str("a = b\n\u{FEFF}c = d\n");
        assert_eq!(lines[1].kind, opt("\u{FEFF}c", "d"));
    }

    #[test]
    fn section_names_are_verbatim() {
        assert_eq!(
            lex_str("[ a b ]")[0].kind,
            LineKind::Section(" a b ".into())
        );
        assert_eq!(lex_str("  [x]  ")[0].kind, LineKind::Section("x".into()));
        assert_eq!(lex_str("[]")[0].kind, LineKind::Section(String::new()));
        assert_eq!(
            lex_str("[Mixed.Case:1]")[0].kind,
            LineKind::Section("Mixed.Case:1".into())
        );
    }

    #[test]
    fn split_at_first_equals_and_trim() {
        assert_eq!(lex_str("  a  =  b = c  ")[0].kind, opt("a", "b = c"));
        assert_eq!(lex_str("pid =")[0].kind, opt("pid", ""));
        assert_eq!(lex_str("accept=1")[0].kind, opt("accept", "1"));
    }

    #[test]
    fn raw_text_keeps_leading_blanks_for_error_messages() {
        let lines = lex_str("   client = maybe\n");
        assert_eq!(lines[0].text, "   client = maybe");
    }

    #[test]
    fn line_without_equals_is_reported_with_its_number() {
        let lines = lex_str("a = b\n\nnonsense\n");
        assert_eq!(lines[1].kind, LineKind::NoEquals);
        assert_eq!(lines[1].number, 3);
    }

    #[test]
    fn last_line_needs_no_newline() {
        let lines = lex_str("a = b\nc = d");
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1].kind, opt("c", "d"));
    }

    #[test]
    fn overlong_lines_are_split_like_fgets() {
        let long = format!("a = {}\nb = c\n", "x".repeat(MAX_LINE_BYTES));
        let lines = lex_str(&long);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1].number, 2);
        assert_eq!(lines[1].kind, LineKind::NoEquals);
        assert_eq!(lines[2].number, 3);
    }
}
