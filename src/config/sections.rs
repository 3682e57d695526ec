//! Splits configuration text into its `[[credential]]` sections so that each is parsed on
//! its own. A parsed TOML document holds about 35 bytes for each byte of its text, and a
//! fleet's file is almost all credentials: parsed one section at a time, 10,000 credentials
//! never hold more than one section's document.
//!
//! The rest (top-level keys and every other table) keeps its place line for line: the
//! credential sections are blanked to their newlines, so an error in the rest names the
//! line and column it has in the file, and a section's errors are moved down by the line it
//! starts at: an error is reported at the line, column and field the whole-document parse
//! names (of a file with several errors, the first one found may be another). A layout this
//! does not recognise (a `credential` key in the root table, a `credential` sub-table before
//! any `[[credential]]`, a `[credential]` table, a quoted key, text that does not parse) gets
//! `None`: the caller parses the whole document as one, with its usual errors.

use toml_parser::parser::{EventReceiver, parse_document};
use toml_parser::{ErrorSink, ParseError, Source, Span};

/// One `[[credential]]` table with the sub-tables after it (`[credential.issuer]`,
/// `[[credential.target]]`, …).
#[derive(Debug, PartialEq)]
pub(super) struct Section<'t> {
    pub(super) text: &'t str,
    /// Lines of the file before it.
    pub(super) first_line: usize,
}

/// A file split into the rest and its credential sections, in file order.
#[derive(Debug)]
pub(super) struct Split<'t> {
    pub(super) rest: String,
    pub(super) credentials: Vec<Section<'t>>,
}

/// A table header: where it starts, whether it is `[[…]]`, and its key (bare keys only).
struct Header {
    start: usize,
    array: bool,
    keys: Vec<Span>,
}

/// Collects the table headers of a document from the parser's events.
#[derive(Default)]
struct Headers {
    done: Vec<Header>,
    open: Option<Header>,
    /// A quoted key in a header: its name is not its text.
    quoted: bool,
    /// The parser met something that is not TOML.
    failed: bool,
    /// The next key starts a key-value pair of the root table (before any header).
    root_key_next: bool,
    /// The first keys of the root table's key-value pairs.
    root_keys: Vec<Span>,
}

impl Headers {
    fn new() -> Headers {
        Headers {
            root_key_next: true,
            ..Headers::default()
        }
    }

    fn open(&mut self, span: Span, array: bool) {
        self.root_key_next = false;
        self.open = Some(Header {
            start: span.start(),
            array,
            keys: Vec::new(),
        });
    }

    fn close(&mut self) {
        self.done.extend(self.open.take());
    }
}

impl EventReceiver for Headers {
    fn std_table_open(&mut self, span: Span, _: &mut dyn ErrorSink) {
        self.open(span, false);
    }
    fn std_table_close(&mut self, _: Span, _: &mut dyn ErrorSink) {
        self.close();
    }
    fn array_table_open(&mut self, span: Span, _: &mut dyn ErrorSink) {
        self.open(span, true);
    }
    fn array_table_close(&mut self, _: Span, _: &mut dyn ErrorSink) {
        self.close();
    }
    fn simple_key(
        &mut self,
        span: Span,
        encoding: Option<toml_parser::decoder::Encoding>,
        _: &mut dyn ErrorSink,
    ) {
        if let Some(h) = &mut self.open {
            self.quoted |= encoding.is_some();
            h.keys.push(span);
        } else if self.root_key_next && self.done.is_empty() {
            // `credential = […]` or `credential.x = …` in the root table: such a file is
            // parsed whole (a quoted first key, to be sure, too).
            self.quoted |= encoding.is_some();
            self.root_keys.push(span);
        }
        self.root_key_next = false;
    }
    fn newline(&mut self, _: Span, _: &mut dyn ErrorSink) {
        self.root_key_next = self.open.is_none() && self.done.is_empty();
    }
    fn error(&mut self, _: Span, _: &mut dyn ErrorSink) {
        self.failed = true;
    }
}

/// The sections of `text`, or `None` when it is to be parsed as a whole.
pub(super) fn split(text: &str) -> Option<Split<'_>> {
    let tokens = Source::new(text).lex().into_vec();
    let mut headers = Headers::new();
    let mut failed: Option<ParseError> = None;
    parse_document(&tokens, &mut headers, &mut failed);
    drop(tokens);
    if failed.is_some() || headers.failed || headers.quoted || headers.open.is_some() {
        return None;
    }
    let name = |k: &Span| text.get(k.start()..k.end());
    if headers
        .root_keys
        .iter()
        .any(|k| name(k) == Some("credential"))
    {
        return None;
    }
    // Byte ranges of the credential sections.
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    let mut group: Option<usize> = None;
    for h in &mut headers.done {
        // A section begins with its header's line (an indented header keeps its column).
        let line = text.get(..h.start)?.rfind('\n').map_or(0, |i| i + 1);
        if text.get(line..h.start)?.trim().is_empty() {
            h.start = line;
        }
    }
    for h in &headers.done {
        let first = h.keys.first().and_then(name);
        match (first == Some("credential"), h.keys.len(), h.array) {
            (true, 1, true) => {
                if let Some(start) = group.replace(h.start) {
                    ranges.push((start, h.start));
                }
            }
            // A `[credential]` table: an error the whole parse words best.
            (true, 1, false) => return None,
            // A sub-table of the credential before it.
            (true, _, _) => {
                group?;
            }
            _ => {
                if let Some(start) = group.take() {
                    ranges.push((start, h.start));
                }
            }
        }
    }
    if let Some(start) = group {
        ranges.push((start, text.len()));
    }
    let mut rest = String::with_capacity(text.len() - covered(&ranges) + text.len() / 64);
    let mut credentials = Vec::with_capacity(ranges.len());
    let (mut at, mut lines) = (0, 0);
    for (start, end) in ranges {
        let before = text.get(at..start)?;
        lines += before.matches('\n').count();
        rest.push_str(before);
        let section = text.get(start..end)?;
        credentials.push(Section {
            text: section,
            first_line: lines,
        });
        let newlines = section.matches('\n').count();
        rest.extend(std::iter::repeat_n('\n', newlines));
        lines += newlines;
        at = end;
    }
    rest.push_str(text.get(at..)?);
    Some(Split { rest, credentials })
}

fn covered(ranges: &[(usize, usize)]) -> usize {
    ranges.iter().map(|(s, e)| e - s).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# fleet\nstate_dir = \"/s\"\n\n[[credential]]\nname = \"a\"\n\
        note = \"\"\"\n[[credential]]\n\"\"\"\n[credential.issuer]\nkind = \"x\"\n\
        [[credential.target]]\npath = \"/t\"\n[daemon]\nlisten = \"\"\n\
        [[credential]] # b\nname = \"b\"\n";

    #[test]
    fn credential_sections_are_cut_out_and_the_rest_keeps_its_lines() {
        let s = split(FILE).unwrap();
        assert_eq!(s.credentials.len(), 2, "{s:?}");
        assert_eq!(s.credentials[0].first_line, 3);
        assert!(
            s.credentials[0]
                .text
                .starts_with("[[credential]]\nname = \"a\"")
        );
        assert!(s.credentials[0].text.ends_with("path = \"/t\"\n"), "{s:?}");
        assert_eq!(s.credentials[1].first_line, 14);
        assert_eq!(s.credentials[1].text, "[[credential]] # b\nname = \"b\"\n");
        assert_eq!(
            s.rest,
            "# fleet\nstate_dir = \"/s\"\n\n\n\n\n\n\n\n\n\n\n[daemon]\nlisten = \"\"\n\n\n"
        );
        assert_eq!(s.rest.lines().count(), FILE.lines().count());
    }

    #[test]
    fn layouts_it_does_not_know_are_parsed_whole() {
        for text in [
            "[credential.issuer]\nkind = \"x\"\n[[credential]]\nname = \"a\"\n",
            "[credential]\nname = \"a\"\n",
            "[[\"credential\"]]\nname = \"a\"\n",
            "[[credential]]\nname = \"a\"\n[credential.target\n",
            "credential = []\n[[credential]]\nname = \"a\"\n",
            "# fleet\ncredential.x = 1\n[[credential]]\nname = \"a\"\n",
            "\"credential\" = []\n[[credential]]\nname = \"a\"\n",
        ] {
            assert!(split(text).is_none(), "{text}");
        }
        // Keys named `credential` elsewhere are no such thing.
        let inline = split("x = { credential = 1 }\ny = 2\n[[credential]]\nname = \"a\"\n");
        assert_eq!(inline.unwrap().credentials.len(), 1);
        let plain = split("state_dir = \"/s\"\n").unwrap();
        assert!(plain.credentials.is_empty());
        assert_eq!(plain.rest, "state_dir = \"/s\"\n");
    }
}
