//! Incremental message-body reader: Content-Length, chunked (RFC 9112 §7.1) and close-delimited.
//!
//! Hand-written rather than a decoding library because the framer must know exactly where the
//! body ends in the *wire* bytes (the replayed request keeps its chunked framing byte for byte),
//! must resume at any byte boundary (segments split anywhere) and must never buffer: data bytes are
//! reported as slices of the input.

use super::head::BodyFraming;

/// Why a chunked body could not be delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChunkedError {
    #[error("invalid chunk size")]
    Size,
    #[error("chunk size line longer than {0} bytes")]
    LineTooLong(usize),
    #[error("chunk data not followed by CRLF")]
    DataTerminator,
    #[error("bare CR in a chunk line")]
    LineEnding,
    #[error("trailer section larger than {0} bytes")]
    TrailerTooLarge(usize),
}

/// Longest chunk-size line (size plus extensions) accepted.
pub const MAX_CHUNK_LINE: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    Size { digits: u8, value: u64 },
    Extension,
    SizeLf { value: u64 },
    Data { remaining: u64 },
    DataCr,
    DataLf,
    TrailerLineStart,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
}

/// Resumable chunked-body delimiter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkedDecoder {
    state: ChunkState,
    line_len: usize,
    extension_value: u64,
    trailer_bytes: usize,
    max_trailer_bytes: usize,
}

impl ChunkedDecoder {
    pub fn new(max_trailer_bytes: usize) -> Self {
        Self {
            state: ChunkState::Size {
                digits: 0,
                value: 0,
            },
            line_len: 0,
            extension_value: 0,
            trailer_bytes: 0,
            max_trailer_bytes,
        }
    }

    /// Consumes bytes of `input`; `on_data` gets the chunk data. Returns the bytes consumed and
    /// whether the body ended (the bytes after it belong to the next message).
    pub fn feed(
        &mut self,
        input: &[u8],
        on_data: &mut impl FnMut(&[u8]),
    ) -> Result<(usize, bool), ChunkedError> {
        let mut index = 0;
        while index < input.len() {
            if let ChunkState::Data { remaining } = self.state {
                let take = remaining.min((input.len() - index) as u64) as usize;
                on_data(&input[index..index + take]);
                index += take;
                let remaining = remaining - take as u64;
                self.state = if remaining == 0 {
                    ChunkState::DataCr
                } else {
                    ChunkState::Data { remaining }
                };
                continue;
            }
            let byte = input[index];
            index += 1;
            self.step(byte)?;
            if self.state == ChunkState::Done {
                return Ok((index, true));
            }
        }
        Ok((index, self.state == ChunkState::Done))
    }

    fn end_size_line(&mut self, value: u64) {
        self.line_len = 0;
        self.state = if value == 0 {
            ChunkState::TrailerLineStart
        } else {
            ChunkState::Data { remaining: value }
        };
    }

    fn step(&mut self, byte: u8) -> Result<(), ChunkedError> {
        use ChunkState as S;
        self.line_len += 1;
        if self.line_len > MAX_CHUNK_LINE
            && matches!(self.state, S::Size { .. } | S::Extension | S::SizeLf { .. })
        {
            return Err(ChunkedError::LineTooLong(MAX_CHUNK_LINE));
        }
        self.state = match self.state {
            S::Size { digits, value } => match (byte as char).to_digit(16) {
                Some(digit) if digits < 16 => S::Size {
                    digits: digits + 1,
                    value: value << 4 | u64::from(digit),
                },
                Some(_) => return Err(ChunkedError::Size),
                None if digits == 0 => return Err(ChunkedError::Size),
                None => match byte {
                    b';' | b' ' | b'\t' => {
                        self.extension_value = value;
                        S::Extension
                    }
                    b'\r' => S::SizeLf { value },
                    b'\n' => {
                        self.end_size_line(value);
                        self.state
                    }
                    _ => return Err(ChunkedError::Size),
                },
            },
            // Extensions (RFC 9112 §7.1.1) carry nothing the framer needs: skip to the line end.
            S::Extension => match byte {
                b'\r' => S::SizeLf {
                    value: self.extension_value,
                },
                b'\n' => {
                    self.end_size_line(self.extension_value);
                    self.state
                }
                _ => S::Extension,
            },
            S::SizeLf { value } => match byte {
                b'\n' => {
                    self.end_size_line(value);
                    self.state
                }
                _ => return Err(ChunkedError::LineEnding),
            },
            S::Data { .. } => unreachable!("data is consumed in bulk by feed"),
            S::DataCr => match byte {
                b'\r' => S::DataLf,
                b'\n' => self.next_chunk(),
                _ => return Err(ChunkedError::DataTerminator),
            },
            S::DataLf => match byte {
                b'\n' => self.next_chunk(),
                _ => return Err(ChunkedError::DataTerminator),
            },
            S::TrailerLineStart => match byte {
                b'\r' => S::EndLf,
                b'\n' => S::Done,
                _ => self.trailer_byte()?,
            },
            S::TrailerLine => match byte {
                b'\r' => S::TrailerLf,
                b'\n' => S::TrailerLineStart,
                _ => self.trailer_byte()?,
            },
            S::TrailerLf => match byte {
                b'\n' => S::TrailerLineStart,
                _ => return Err(ChunkedError::LineEnding),
            },
            S::EndLf => match byte {
                b'\n' => S::Done,
                _ => return Err(ChunkedError::LineEnding),
            },
            S::Done => S::Done,
        };
        Ok(())
    }

    fn next_chunk(&mut self) -> ChunkState {
        self.line_len = 0;
        ChunkState::Size {
            digits: 0,
            value: 0,
        }
    }

    fn trailer_byte(&mut self) -> Result<ChunkState, ChunkedError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > self.max_trailer_bytes {
            return Err(ChunkedError::TrailerTooLarge(self.max_trailer_bytes));
        }
        Ok(ChunkState::TrailerLine)
    }
}

/// Reads one message body of any framing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyReader {
    Length {
        remaining: u64,
    },
    Chunked(ChunkedDecoder),
    /// Ends only when the connection does.
    Close,
    Done,
}

impl BodyReader {
    pub fn new(framing: BodyFraming, max_trailer_bytes: usize) -> Self {
        match framing {
            BodyFraming::None | BodyFraming::Length(0) => Self::Done,
            BodyFraming::Length(remaining) => Self::Length { remaining },
            BodyFraming::Chunked => Self::Chunked(ChunkedDecoder::new(max_trailer_bytes)),
            BodyFraming::Close => Self::Close,
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self, Self::Done)
    }

    /// Consumes body bytes from `input`; `on_data` gets the payload (without chunk framing).
    /// Returns the bytes consumed; [`is_done`](Self::is_done) tells whether the body ended.
    pub fn feed(
        &mut self,
        input: &[u8],
        on_data: &mut impl FnMut(&[u8]),
    ) -> Result<usize, ChunkedError> {
        match self {
            Self::Done => Ok(0),
            Self::Close => {
                on_data(input);
                Ok(input.len())
            }
            Self::Length { remaining } => {
                let take = (*remaining).min(input.len() as u64) as usize;
                on_data(&input[..take]);
                *remaining -= take as u64;
                if *remaining == 0 {
                    *self = Self::Done;
                }
                Ok(take)
            }
            Self::Chunked(decoder) => {
                let (consumed, done) = decoder.feed(input, on_data)?;
                if done {
                    *self = Self::Done;
                }
                Ok(consumed)
            }
        }
    }

    /// Skips `len` missing bytes (a gap) if that is possible without losing the message
    /// boundary: only inside a Content-Length body that continues past the gap.
    pub fn skip_gap(&mut self, len: u64) -> bool {
        match self {
            Self::Length { remaining } if len < *remaining => {
                *remaining -= len;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes; returns (data, consumed, done).
    fn decode(input: &[u8], step: usize) -> Result<(Vec<u8>, usize, bool), ChunkedError> {
        let mut decoder = ChunkedDecoder::new(64);
        let mut data = Vec::new();
        let mut consumed = 0;
        for piece in input.chunks(step) {
            let (used, done) = decoder.feed(piece, &mut |bytes| data.extend_from_slice(bytes))?;
            consumed += used;
            if done {
                return Ok((data, consumed, true));
            }
        }
        Ok((data, consumed, false))
    }

    #[test]
    fn chunks_with_extensions_and_trailers_rfc9112_7_1() {
        let body = b"4;name=value\r\nWiki\r\n5 ; a ; b=\"q\"\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nExpires: never\r\nX: y\r\n\r\nGET /next";
        for step in [1, 2, 3, 7, body.len()] {
            let (data, consumed, done) = decode(body, step).unwrap();
            assert!(done, "step {step}");
            assert_eq!(data, b"Wikipedia in\r\n\r\nchunks.");
            assert_eq!(&body[consumed..], b"GET /next", "step {step}");
        }
    }

    #[test]
    fn last_chunk_may_have_many_zeros_and_bare_lf() {
        let (data, consumed, done) = decode(b"3\nabc\n000\n\nX", 1).unwrap();
        assert!(done);
        assert_eq!(data, b"abc");
        assert_eq!(consumed, 11);
    }

    #[test]
    fn incomplete_body_is_not_done() {
        let (data, consumed, done) = decode(b"5\r\nab", 100).unwrap();
        assert!(!done);
        assert_eq!(data, b"ab");
        assert_eq!(consumed, 5);
    }

    #[test]
    fn malformed_chunks_are_errors() {
        assert_eq!(decode(b"x\r\n", 1), Err(ChunkedError::Size));
        assert_eq!(decode(b"\r\n", 1), Err(ChunkedError::Size));
        assert_eq!(decode(b"3\r\nabcX", 1), Err(ChunkedError::DataTerminator));
        assert_eq!(decode(b"3\rX", 1), Err(ChunkedError::LineEnding));
        assert_eq!(
            decode(b"11111111111111111\r\n", 1),
            Err(ChunkedError::Size),
            "more than 64 bits"
        );
        let long_extension = [b"1;".as_slice(), &[b'a'; MAX_CHUNK_LINE]].concat();
        assert_eq!(
            decode(&long_extension, 1000),
            Err(ChunkedError::LineTooLong(MAX_CHUNK_LINE))
        );
        let big_trailer = [b"0\r\nX: ".as_slice(), &[b'a'; 100]].concat();
        assert_eq!(
            decode(&big_trailer, 5),
            Err(ChunkedError::TrailerTooLarge(64))
        );
    }

    #[test]
    fn length_reader_stops_at_the_boundary_and_skips_gaps_inside() {
        let mut reader = BodyReader::new(BodyFraming::Length(10), 0);
        assert_eq!(reader.feed(b"abcd", &mut |_| {}), Ok(4));
        assert!(reader.skip_gap(3));
        assert!(!reader.skip_gap(3), "a gap reaching the boundary loses it");
        assert_eq!(reader.feed(b"xyzNEXT", &mut |_| {}), Ok(3));
        assert!(reader.is_done());
        assert!(BodyReader::new(BodyFraming::None, 0).is_done());
    }
}
