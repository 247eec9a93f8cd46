//! Splits a request head into its lines, keeping exact byte positions.
//!
//! Hand-written rather than httparse: httparse gives name and value slices, but a byte-exact
//! rewrite needs each whole line (where it starts, its line ending, any whitespace around the
//! value) to copy untouched lines verbatim and splice edited ones. The head was already parsed
//! by the http module, so this only has to find the lines, not judge every byte.

use std::ops::Range;

use super::RewriteError;

/// One header field line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct FieldLine {
    /// The whole line, line ending included.
    pub line: Range<usize>,
    pub name: Range<usize>,
    /// The value without surrounding whitespace (empty range for an empty value).
    pub value: Range<usize>,
}

/// Positions within a head.
#[derive(Debug)]
pub(super) struct HeadLines {
    /// End of the request line, line ending included.
    pub request_line_end: usize,
    pub fields: Vec<FieldLine>,
    /// Start of the empty line that ends the head.
    pub blank_line_start: usize,
}

impl HeadLines {
    /// Splits `head`, which must be exactly one request head (ending with its empty line).
    pub fn parse(head: &[u8]) -> Result<Self, RewriteError> {
        let mut lines = LineIter { head, position: 0 };
        let request_line_end = lines.next().ok_or(RewriteError::Unterminated)?.end;
        let mut fields = Vec::new();
        for (index, line) in lines.by_ref().enumerate() {
            let content = content_end(head, &line);
            if content == line.start {
                if line.end != head.len() {
                    return Err(RewriteError::Unterminated);
                }
                return Ok(Self {
                    request_line_end,
                    fields,
                    blank_line_start: line.start,
                });
            }
            // Field lines are numbered from 2: line 1 is the request line.
            let line_number = index + 2;
            if matches!(head[line.start], b' ' | b'\t') {
                return Err(RewriteError::ObsFold { line: line_number });
            }
            let colon = head[line.start..content]
                .iter()
                .position(|&byte| byte == b':')
                .map(|offset| line.start + offset)
                .filter(|&colon| colon > line.start)
                .ok_or(RewriteError::MalformedField { line: line_number })?;
            let mut value = colon + 1..content;
            while value.start < value.end && is_ows(head[value.start]) {
                value.start += 1;
            }
            while value.end > value.start && is_ows(head[value.end - 1]) {
                value.end -= 1;
            }
            // RFC 9112 §5.1: no whitespace in the name or before the colon (httparse agrees).
            if head[line.start..colon].iter().any(|&byte| is_ows(byte)) {
                return Err(RewriteError::MalformedField { line: line_number });
            }
            fields.push(FieldLine {
                name: line.start..colon,
                line,
                value,
            });
        }
        Err(RewriteError::Unterminated)
    }

    /// The line ending the head uses (`\r\n`, or `\n` for a bare-LF head): appended lines match.
    pub fn line_ending<'a>(&self, head: &'a [u8]) -> &'a [u8] {
        &head[self.blank_line_start..]
    }
}

fn is_ows(byte: u8) -> bool {
    byte == b' ' || byte == b'\t'
}

/// End of a line's content: before `\r\n` or `\n`.
fn content_end(head: &[u8], line: &Range<usize>) -> usize {
    let mut end = line.end - 1; // the '\n'
    if end > line.start && head[end - 1] == b'\r' {
        end -= 1;
    }
    end
}

/// Lines of `head`, each ending with `\n` (a last piece without one is not a line).
struct LineIter<'a> {
    head: &'a [u8],
    position: usize,
}

impl Iterator for LineIter<'_> {
    type Item = Range<usize>;

    fn next(&mut self) -> Option<Range<usize>> {
        let start = self.position;
        let newline = self.head[start..].iter().position(|&byte| byte == b'\n')?;
        self.position = start + newline + 1;
        Some(start..self.position)
    }
}
