//! Text from outside (Service Manager answers, state files, certificate fields) made safe to
//! print: control characters escaped, so no value can move a terminal's cursor, fake a log
//! line or hide behind a carriage return; long values cut.

/// `s` with every control character escaped (`\n`, `\u{1b}`, …), at most `max` characters
/// of it (then `…`).
pub fn printable(s: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
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
    }
}
