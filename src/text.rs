//! Text from outside (Service Manager answers, state files, certificate fields) made safe to
//! print: control characters and the format characters that reorder or hide text escaped,
//! so no value can move a terminal's cursor, fake a log line, hide behind a carriage return
//! or reverse what follows it; long values cut.

/// `s` with every control character escaped (`\n`, `\u{1b}`, …), at most `max` characters
/// of it (then `…`).
pub fn printable(s: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        if c.is_control() || is_invisible_format(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Format characters that reorder or hide text (bidi overrides and isolates, zero-width
/// characters, line and paragraph separators, the byte order mark).
fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn control_characters_are_escaped_and_long_values_cut() {
        assert_eq!(printable("sb-orders!t1", 100), "sb-orders!t1");
        assert_eq!(printable("a\u{1b}[2Jb\r\nc", 100), "a\\u{1b}[2Jb\\r\\nc");
        assert_eq!(printable("abcdef", 3), "abc…");
        assert_eq!(printable("äöü", 100), "äöü");
        assert_eq!(
            printable("ab\u{202E}cd\u{2028}", 100),
            "ab\\u{202e}cd\\u{2028}"
        );
    }
}
