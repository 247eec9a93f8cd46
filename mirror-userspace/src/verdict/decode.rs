//! Response body decoding by `Content-Encoding`, within a budget on the decoded size.
//!
//! Rules:
//! - Codings (RFC 9110 §8.4): `gzip` (and its alias `x-gzip`), `deflate`, `br`, `zstd` and
//!   `identity`, matched case-insensitively. A list (`Content-Encoding: gzip, br`, or several
//!   header lines, which concatenate in order) was applied left to right, so it is undone right to
//!   left. At most [`MAX_CODINGS`] non-identity codings; an unknown one is
//!   [`DecodeError::Unsupported`] (the caller falls back to the digest).
//! - `deflate` is the zlib format (RFC 1950) as RFC 9110 §8.4.1.2 says; a body that does not start
//!   with a zlib header is decoded as raw deflate (RFC 1951), which some servers send instead.
//!   `gzip` accepts several members (RFC 1952 §2.2). `zstd` accepts several frames and skips
//!   skippable ones (RFC 8878); its content checksum, when present, is verified.
//! - **Budget**: every decoder is streamed and stopped as soon as its output would exceed
//!   `budget` bytes ([`DecodeError::TooLarge`]). The output buffer grows by doubling but never past
//!   `budget`, so a decompression bomb allocates at most `budget` bytes of output whatever its
//!   ratio; each intermediate coding of a chain is held to the same budget (a chain holds at most
//!   two decoded layers at once). The decoders' own state is bounded by the format's window,
//!   independent of the input: 32 KiB for deflate/gzip; for brotli a ring buffer that grows with
//!   the output up to the stream's window, at most 16 MiB (RFC 7932 §9.1; the non-standard
//!   large-window extension, up to 1 GiB, is rejected); for zstd the window, reserved up front,
//!   at most [`ZSTD_MAX_WINDOW`] = 8 MiB (larger windows are rejected, as RFC 9659 allows
//!   decoders of the `zstd` coding to do).
//! - An identity body is returned borrowed, but is held to the same budget.
//!
//! Crates, all pure Rust (no C toolchain): `flate2` on its `miniz_oxide` backend,
//! `brotli-decompressor` (the decoder half of Dropbox's `brotli`), and `ruzstd`, which decodes
//! standard zstd frames (a test decodes a frame made by the reference `zstd` 1.5 CLI).

use std::borrow::Cow;
use std::fmt;
use std::io::{self, Read};

/// Default budget on a decoded body (1 MiB): JSON API responses are far smaller, and parsing
/// one this size costs a few milliseconds, so a compared exchange has a bounded cost; a larger
/// body falls back to the digest comparison.
pub const DEFAULT_BODY_BUDGET: usize = 1 << 20;

/// Most non-identity codings undone for one body; real chains have one, rarely two.
pub const MAX_CODINGS: usize = 4;

/// Largest zstd window accepted (8 MiB, RFC 9659's limit for the `zstd` content coding): the
/// decoder reserves the window up front, so this bounds its memory.
pub const ZSTD_MAX_WINDOW: u64 = 8 << 20;

/// Read granularity of the streaming loop.
const CHUNK: usize = 16 * 1024;

/// A content coding this module can undo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coding {
    /// `gzip` or `x-gzip` (RFC 1952).
    Gzip,
    /// `deflate`: zlib (RFC 1950), or raw deflate (RFC 1951) when the zlib header is absent.
    Deflate,
    /// `br` (RFC 7932).
    Brotli,
    /// `zstd` (RFC 8878).
    Zstd,
}

impl Coding {
    /// The coding's token as written in `Content-Encoding`.
    pub fn token(self) -> &'static str {
        match self {
            Self::Gzip => "gzip",
            Self::Deflate => "deflate",
            Self::Brotli => "br",
            Self::Zstd => "zstd",
        }
    }
}

impl fmt::Display for Coding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.token())
    }
}

/// Why a body could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A coding this module does not know (the token, lowercased).
    #[error("unsupported content coding {0:?}")]
    Unsupported(String),
    /// More than [`MAX_CODINGS`] codings.
    #[error("more than {MAX_CODINGS} content codings")]
    TooManyCodings,
    /// The decoded body (or an intermediate layer) would exceed the budget; decoding stopped there.
    #[error("decoded body exceeds the {budget}-byte budget")]
    TooLarge {
        /// The budget in force.
        budget: usize,
    },
    /// The data is not valid for its coding (truncated, corrupt, bad checksum, window too large).
    #[error("invalid {coding} data: {detail}")]
    Corrupt {
        /// The coding being undone.
        coding: Coding,
        /// The decoder's message.
        detail: String,
    },
}

/// Parses `Content-Encoding` values (each header line's value, in order) into the codings to
/// undo, in the order they were applied; `identity` and empty list elements are dropped.
pub fn parse_codings<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<Coding>, DecodeError> {
    let mut codings = Vec::new();
    for value in values {
        for token in value.split(|&byte| byte == b',') {
            let token = token.trim_ascii();
            if token.is_empty() || token.eq_ignore_ascii_case(b"identity") {
                continue;
            }
            let coding =
                if token.eq_ignore_ascii_case(b"gzip") || token.eq_ignore_ascii_case(b"x-gzip") {
                    Coding::Gzip
                } else if token.eq_ignore_ascii_case(b"deflate") {
                    Coding::Deflate
                } else if token.eq_ignore_ascii_case(b"br") {
                    Coding::Brotli
                } else if token.eq_ignore_ascii_case(b"zstd") {
                    Coding::Zstd
                } else {
                    return Err(DecodeError::Unsupported(
                        String::from_utf8_lossy(token).to_ascii_lowercase(),
                    ));
                };
            if codings.len() == MAX_CODINGS {
                return Err(DecodeError::TooManyCodings);
            }
            codings.push(coding);
        }
    }
    Ok(codings)
}

/// Decodes a response body given its headers as `(name, value)` byte pairs: every
/// `Content-Encoding` line counts, in order (see the module rules).
pub fn decode_response_body<'a>(
    headers: &[(&[u8], &[u8])],
    body: &'a [u8],
    budget: usize,
) -> Result<Cow<'a, [u8]>, DecodeError> {
    let codings = parse_codings(
        headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case(b"content-encoding"))
            .map(|(_, value)| *value),
    )?;
    decode(&codings, body, budget)
}

/// Undoes `codings` (in the order they were applied, as [`parse_codings`] returns them) within
/// `budget` decoded bytes per layer.
pub fn decode<'a>(
    codings: &[Coding],
    body: &'a [u8],
    budget: usize,
) -> Result<Cow<'a, [u8]>, DecodeError> {
    if codings.len() > MAX_CODINGS {
        return Err(DecodeError::TooManyCodings);
    }
    let mut current = Cow::Borrowed(body);
    for &coding in codings.iter().rev() {
        current = Cow::Owned(decode_one(coding, &current, budget)?);
    }
    if current.len() > budget {
        return Err(DecodeError::TooLarge { budget });
    }
    Ok(current)
}

/// Undoes one coding.
fn decode_one(coding: Coding, input: &[u8], budget: usize) -> Result<Vec<u8>, DecodeError> {
    let corrupt = |error: io::Error| DecodeError::Corrupt {
        coding,
        detail: error.to_string(),
    };
    match coding {
        Coding::Gzip => drain(flate2::read::MultiGzDecoder::new(input), budget, coding),
        Coding::Deflate if is_zlib_header(input) => {
            drain(flate2::read::ZlibDecoder::new(input), budget, coding)
        }
        Coding::Deflate => drain(flate2::read::DeflateDecoder::new(input), budget, coding),
        Coding::Brotli => {
            let mut decoder = brotli_decompressor::Decompressor::new(input, CHUNK);
            // Standard brotli only (RFC 7932: window ≤ 16 MiB); the decoder accepts the
            // large-window extension (up to 1 GiB) unless told not to.
            decoder.set_parameter(
                brotli_decompressor::BrotliDecoderParameter::BROTLI_DECODER_PARAM_LARGE_WINDOW,
                0,
            );
            drain(decoder, budget, coding)
        }
        Coding::Zstd => decode_zstd(input, budget).map_err(|error| match error {
            Drained::TooLarge => DecodeError::TooLarge { budget },
            Drained::Io(error) => corrupt(error),
        }),
    }
}

/// A zlib stream starts with CMF (method 8 = deflate, window ≤ 32 KiB) and FLG such that
/// `CMF * 256 + FLG` is a multiple of 31 (RFC 1950 §2.2).
fn is_zlib_header(input: &[u8]) -> bool {
    match input {
        [cmf, flg, ..] => {
            cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0
        }
        _ => false,
    }
}

/// How a streamed decode stopped early.
enum Drained {
    TooLarge,
    Io(io::Error),
}

/// Reads `reader` to its end into a buffer that never exceeds `budget` bytes (length or capacity).
fn drain(reader: impl Read, budget: usize, coding: Coding) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    drain_into(reader, &mut out, budget).map_err(|error| match error {
        Drained::TooLarge => DecodeError::TooLarge { budget },
        Drained::Io(error) => DecodeError::Corrupt {
            coding,
            detail: error.to_string(),
        },
    })?;
    Ok(out)
}

/// Appends `reader`'s output to `out`, stopping with [`Drained::TooLarge`] at the first byte past
/// `budget` (counting what `out` already holds).
fn drain_into(mut reader: impl Read, out: &mut Vec<u8>, budget: usize) -> Result<(), Drained> {
    let mut chunk = [0_u8; CHUNK];
    loop {
        let read = match reader.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(Drained::Io(error)),
        };
        let len = out.len() + read;
        if len > budget {
            return Err(Drained::TooLarge);
        }
        if len > out.capacity() {
            // Double, as `Vec` would, but never past the budget.
            let target = (out.capacity() * 2).clamp(len, budget);
            out.reserve_exact(target - out.len());
        }
        out.extend_from_slice(&chunk[..read]);
    }
}

/// Decodes every zstd frame of `input` in turn (skippable frames skipped), each with its
/// window limited to [`ZSTD_MAX_WINDOW`] and its checksum verified.
fn decode_zstd(mut input: &[u8], budget: usize) -> Result<Vec<u8>, Drained> {
    use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
    use ruzstd::decoding::{FrameDecoder, StreamingDecoder};

    let mut out = Vec::new();
    let mut decoder = FrameDecoder::new();
    decoder.set_max_window_size(ZSTD_MAX_WINDOW);
    if input.is_empty() {
        return Err(Drained::Io(io::Error::other("empty zstd body")));
    }
    while !input.is_empty() {
        match StreamingDecoder::new_with_decoder(&mut input, &mut decoder) {
            Ok(mut stream) => drain_into(&mut stream, &mut out, budget)?,
            Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                length,
                ..
            })) => {
                input = input
                    .get(length as usize..)
                    .ok_or_else(|| Drained::Io(io::Error::other("truncated skippable frame")))?;
                continue;
            }
            Err(error) => return Err(Drained::Io(io::Error::other(error))),
        }
        if let (Some(expected), Some(actual)) = (
            decoder.get_checksum_from_data(),
            decoder.get_calculated_checksum(),
        ) && expected != actual
        {
            return Err(Drained::Io(io::Error::other(
                "zstd content checksum mismatch",
            )));
        }
    }
    Ok(out)
}

#[cfg(test)]
#[path = "tests/decode.rs"]
mod tests;
