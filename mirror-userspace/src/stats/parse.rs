//! A parser of the Prometheus text exposition format (0.0.4) into flat samples.
//!
//! Only what `mirror stats` needs: names, labels and values. `# HELP`/`# TYPE` lines and any other
//! comment are skipped (the aggregation knows the daemon's metric names), so OpenMetrics text
//! (`# EOF`, `# UNIT`) parses too. Timestamps are accepted and dropped. Malformed sample lines are
//! errors rather than skipped: a table built from half a scrape would silently show wrong rates.

/// One sample line: `name{label="value",...} value [timestamp]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    /// In exposition order; names are unique within a sample.
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if the sample has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(label, _)| label == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Why exposition text could not be parsed; `line` is 1-based.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("line {line}: {what}")]
    Syntax { line: usize, what: &'static str },
    #[error("line {line}: label {label:?} appears twice")]
    DuplicateLabel { line: usize, label: String },
    #[error("line {line}: {text:?} is not a number")]
    Number { line: usize, text: String },
}

/// Parses a whole exposition into its samples, in order.
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut samples = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim_matches([' ', '\t', '\r']);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        samples.push(parse_sample(line, index + 1)?);
    }
    Ok(samples)
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// A cursor over one line, so each step reports errors with the line number.
struct Cursor<'a> {
    rest: &'a str,
    line: usize,
}

impl<'a> Cursor<'a> {
    fn error(&self, what: &'static str) -> ParseError {
        ParseError::Syntax {
            line: self.line,
            what,
        }
    }

    fn skip_blanks(&mut self) {
        self.rest = self.rest.trim_start_matches([' ', '\t']);
    }

    fn eat(&mut self, c: char) -> bool {
        match self.rest.strip_prefix(c) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    /// A metric or label name; label names may not contain ':' but accepting it costs nothing.
    fn name(&mut self, what: &'static str) -> Result<&'a str, ParseError> {
        if !self.rest.starts_with(is_name_start) {
            return Err(self.error(what));
        }
        let end = self
            .rest
            .find(|c| !is_name_char(c))
            .unwrap_or(self.rest.len());
        let (name, rest) = self.rest.split_at(end);
        self.rest = rest;
        Ok(name)
    }

    /// A double-quoted label value with the format's three escapes (`\\`, `\"`, `\n`).
    fn quoted(&mut self) -> Result<String, ParseError> {
        if !self.eat('"') {
            return Err(self.error("expected '\"' to start a label value"));
        }
        let mut value = String::new();
        let mut chars = self.rest.char_indices();
        while let Some((index, c)) = chars.next() {
            match c {
                '"' => {
                    self.rest = &self.rest[index + 1..];
                    return Ok(value);
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, escaped @ ('\\' | '"'))) => value.push(escaped),
                    // The format allows only three escapes; keep others verbatim, as
                    // Prometheus' own parser does.
                    Some((_, other)) => {
                        value.push('\\');
                        value.push(other);
                    }
                    None => break,
                },
                c => value.push(c),
            }
        }
        Err(self.error("unterminated label value"))
    }

    /// The next blank-separated token (a value or a timestamp).
    fn token(&mut self) -> &'a str {
        let end = self.rest.find([' ', '\t']).unwrap_or(self.rest.len());
        let (token, rest) = self.rest.split_at(end);
        self.rest = rest;
        token
    }
}

fn parse_sample(line: &str, number: usize) -> Result<Sample, ParseError> {
    let mut cursor = Cursor {
        rest: line,
        line: number,
    };
    let name = cursor.name("expected a metric name")?.to_owned();
    cursor.skip_blanks();
    let mut labels: Vec<(String, String)> = Vec::new();
    if cursor.eat('{') {
        loop {
            cursor.skip_blanks();
            if cursor.eat('}') {
                break;
            }
            let label = cursor.name("expected a label name")?;
            cursor.skip_blanks();
            if !cursor.eat('=') {
                return Err(cursor.error("expected '=' after a label name"));
            }
            cursor.skip_blanks();
            let value = cursor.quoted()?;
            if labels.iter().any(|(existing, _)| existing == label) {
                return Err(ParseError::DuplicateLabel {
                    line: number,
                    label: label.to_owned(),
                });
            }
            labels.push((label.to_owned(), value));
            cursor.skip_blanks();
            // A trailing comma before '}' is allowed by the format.
            if !cursor.eat(',') && !cursor.rest.starts_with('}') {
                return Err(cursor.error("expected ',' or '}' after a label value"));
            }
        }
        cursor.skip_blanks();
    }
    let text = cursor.token();
    if text.is_empty() {
        return Err(cursor.error("missing sample value"));
    }
    let value = parse_value(text).ok_or_else(|| ParseError::Number {
        line: number,
        text: text.to_owned(),
    })?;
    cursor.skip_blanks();
    let timestamp = cursor.token();
    if !timestamp.is_empty() && timestamp.parse::<i64>().is_err() {
        return Err(ParseError::Number {
            line: number,
            text: timestamp.to_owned(),
        });
    }
    cursor.skip_blanks();
    if !cursor.rest.is_empty() {
        return Err(cursor.error("unexpected text after the sample's timestamp"));
    }
    Ok(Sample {
        name,
        labels,
        value,
    })
}

/// A sample value: Go's float syntax, including `NaN`, `+Inf` and `-Inf`. Rust's parser accepts
/// the same spellings (case-insensitively) and also `infinity`, which is harmless.
fn parse_value(text: &str) -> Option<f64> {
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Sample {
        let mut samples = parse(line).unwrap();
        assert_eq!(samples.len(), 1, "{samples:?}");
        samples.remove(0)
    }

    #[test]
    fn comments_blank_lines_and_openmetrics_markers_are_skipped() {
        let text = "# HELP mirror_requests_total HTTP requests framed off the wire, by target\n\
                    # TYPE mirror_requests_total counter\n\
                    \n\
                    mirror_requests_total{target=\"search\"} 12\n\
                    # UNIT x seconds\n\
                    # EOF\n";
        let samples = parse(text).unwrap();
        assert_eq!(
            samples,
            [Sample {
                name: "mirror_requests_total".into(),
                labels: vec![("target".into(), "search".into())],
                value: 12.0,
            }]
        );
    }

    #[test]
    fn samples_without_labels_and_with_timestamps() {
        let sample = one("mirror_tcp_gaps_total 7 1700000000000");
        assert_eq!(sample.name, "mirror_tcp_gaps_total");
        assert!(sample.labels.is_empty());
        assert_eq!(sample.value, 7.0);
        assert_eq!(one("up{} 1").value, 1.0);
        assert_eq!(one("  spaced   3  \r").value, 3.0);
    }

    #[test]
    fn histogram_bucket_labels_and_special_values() {
        let sample = one(
            "mirror_response_duration_seconds_bucket{le=\"+Inf\",target=\"a\",role=\"shadow\"} 4",
        );
        assert_eq!(sample.label("le"), Some("+Inf"));
        assert_eq!(sample.label("role"), Some("shadow"));
        assert_eq!(sample.label("code"), None);
        assert_eq!(one("x +Inf").value, f64::INFINITY);
        assert_eq!(one("x -Inf").value, f64::NEG_INFINITY);
        assert!(one("x NaN").value.is_nan());
        assert_eq!(one("x 1.5e-3").value, 0.0015);
    }

    #[test]
    fn label_values_unescape_and_may_contain_separators() {
        let sample = one(r#"m{a="x\"y",b="back\\slash",c="new\nline",d="a,b}c d",} 1"#);
        assert_eq!(sample.label("a"), Some("x\"y"));
        assert_eq!(sample.label("b"), Some("back\\slash"));
        assert_eq!(sample.label("c"), Some("new\nline"));
        assert_eq!(sample.label("d"), Some("a,b}c d"));
        assert_eq!(one(r#"m{a="\t"} 1"#).label("a"), Some("\\t"));
        assert_eq!(one("m{a=\"é ✓\"} 1").label("a"), Some("é ✓"));
    }

    #[test]
    fn errors_name_the_line_and_the_problem() {
        let text = "ok 1\nbroken{target=\"a\" 1\n";
        assert_eq!(
            parse(text).unwrap_err().to_string(),
            "line 2: expected ',' or '}' after a label value"
        );
        assert_eq!(
            parse("m{a=\"open} 1").unwrap_err(),
            ParseError::Syntax {
                line: 1,
                what: "unterminated label value"
            }
        );
        assert_eq!(
            parse("m 12x").unwrap_err().to_string(),
            "line 1: \"12x\" is not a number"
        );
        assert_eq!(
            parse("m{a=\"1\",a=\"2\"} 1").unwrap_err().to_string(),
            "line 1: label \"a\" appears twice"
        );
        assert!(matches!(
            parse("m").unwrap_err(),
            ParseError::Syntax { line: 1, .. }
        ));
        assert!(matches!(
            parse("9m 1").unwrap_err(),
            ParseError::Syntax { line: 1, .. }
        ));
        assert!(matches!(
            parse("m 1 2 3").unwrap_err(),
            ParseError::Syntax { line: 1, .. }
        ));
        assert!(matches!(
            parse("m 1 soon").unwrap_err(),
            ParseError::Number { line: 1, .. }
        ));
    }
}
