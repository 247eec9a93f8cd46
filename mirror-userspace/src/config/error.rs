//! The configuration error type and source positions.

use std::ops::Range;

/// Why a configuration could not be loaded or merged with the command line.
///
/// Every variant's `Display` is one sentence that names where the problem is and what is allowed,
/// so `mirror check-config` and `mirror run` print it as is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file (or a value in it) is invalid; `line` and `col` are 1-based, `col` in characters.
    #[error("{file}:{line}:{col}: {message}")]
    Invalid {
        /// The path (or source name) given to the loader.
        file: String,
        line: usize,
        col: usize,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// The file could not be read.
    #[error("{file}: cannot read the config file: {source}")]
    Read {
        /// The path as given.
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// A command-line flag is invalid or conflicts with the config file. `flag` is the flag as
    /// typed (`--port`); the message names the conflict.
    #[error("{flag}: {message}")]
    Flag { flag: &'static str, message: String },
}

impl ConfigError {
    /// An [`Invalid`](Self::Invalid) error at the start of the byte range `span` of `text`.
    pub(crate) fn at(source_name: &str, text: &str, span: Range<usize>, message: String) -> Self {
        let (line, col) = line_col(text, span.start);
        Self::Invalid {
            file: source_name.to_owned(),
            line,
            col,
            message,
        }
    }

    pub(crate) fn flag(flag: &'static str, message: impl Into<String>) -> Self {
        Self::Flag {
            flag,
            message: message.into(),
        }
    }
}

/// 1-based line and column (in characters, as editors count them) of byte `offset` in `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let line = before.matches('\n').count() + 1;
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

/// A semantic validation failure: a message and the byte range of the offending value. Turned
/// into a [`ConfigError`] once the source text is at hand.
#[derive(Debug)]
pub(crate) struct Problem {
    pub span: Range<usize>,
    pub message: String,
}

impl Problem {
    pub fn new(span: Range<usize>, message: impl Into<String>) -> Self {
        Self {
            span,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_is_one_based_and_counts_characters() {
        let text = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 4), (1, 5));
        assert_eq!(line_col(text, 6), (2, 1));
        // 'é' is two bytes but one column.
        assert_eq!(line_col(text, text.rfind('=').unwrap() + 2), (2, 6));
        assert_eq!(line_col(text, text.len() + 10), (3, 1));
    }
}
