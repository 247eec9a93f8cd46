//! Validation of `[sink]` (kept apart from [`super::validate`] for size): path, rotation,
//! body and queue sizes, redaction lists, `only`.

use std::path::{Path, PathBuf};

use super::error::Problem;
use super::raw::RawSink;
use super::target::is_token;
use super::validate::{Checked, int_or};
use super::{SinkOnly, SinkSection};
use crate::capture::MAX_QUEUE_BYTES;
use crate::sink::JsonPointer;

/// Smallest sink file before rotation: a few records (one line may be larger and then has a
/// file of its own).
const MIN_SINK_FILE_BYTES: i64 = 4096;
/// Rotated sink files kept at most (each rotation renames them all).
const MAX_SINK_FILES: i64 = 1000;
/// Smallest sink queue: room for a few records with bodies.
const MIN_SINK_QUEUE_BYTES: i64 = 64 * 1024;

pub(super) fn sink(raw: RawSink) -> Checked<SinkSection> {
    let defaults = SinkSection::default();
    let path = match raw.path {
        None => None,
        Some(path) if path.get_ref().is_empty() => None,
        Some(path) => Some(
            check_sink_path(path.get_ref())
                .map_err(|message| Problem::new(path.span(), message))?,
        ),
    };
    let redact_headers = match raw.redact_headers {
        None => defaults.redact_headers,
        Some(names) => {
            let mut lower: Vec<String> = Vec::new();
            for name in names {
                if !is_token(name.get_ref()) {
                    return Err(Problem::new(
                        name.span(),
                        format!(
                            "invalid header name `{}` in redact_headers: expected letters, digits and !#$%&'*+-.^_`|~",
                            name.get_ref()
                        ),
                    ));
                }
                let name = name.get_ref().to_ascii_lowercase();
                if !lower.contains(&name) {
                    lower.push(name);
                }
            }
            lower
        }
    };
    let mut redact_fields: Vec<JsonPointer> = Vec::new();
    for source in raw.redact_fields.unwrap_or_default() {
        let pointer =
            JsonPointer::parse(source.get_ref()).map_err(|m| Problem::new(source.span(), m))?;
        if !redact_fields.contains(&pointer) {
            redact_fields.push(pointer);
        }
    }
    let only = match raw.only {
        None => defaults.only,
        Some(only) => match only.get_ref().as_str() {
            "all" => SinkOnly::All,
            "differences" => SinkOnly::Differences,
            other => {
                return Err(Problem::new(
                    only.span(),
                    format!("invalid only `{other}`: expected \"all\" or \"differences\""),
                ));
            }
        },
    };
    Ok(SinkSection {
        path,
        max_file_bytes: int_or(
            raw.max_file_bytes,
            "max_file_bytes",
            MIN_SINK_FILE_BYTES..=i64::MAX,
            defaults.max_file_bytes,
        )?,
        max_files: int_or(
            raw.max_files,
            "max_files",
            0..=MAX_SINK_FILES,
            defaults.max_files,
        )?,
        body_bytes: int_or(
            raw.body_bytes,
            "body_bytes",
            0..=i64::from(u32::MAX),
            defaults.body_bytes,
        )?,
        redact_headers,
        redact_fields,
        only,
        queue_bytes: int_or(
            raw.queue_bytes,
            "queue_bytes",
            MIN_SINK_QUEUE_BYTES..=MAX_QUEUE_BYTES as i64,
            defaults.queue_bytes,
        )?,
    })
}

/// The sink file: an absolute path naming a file (the daemon's working directory is nobody's
/// business: `/` under systemd).
fn check_sink_path(text: &str) -> Result<PathBuf, String> {
    let path = Path::new(text);
    if !path.is_absolute() {
        return Err(format!(
            "sink path `{text}` is relative: give an absolute path, e.g. \"/var/log/mirror/exchanges.jsonl\""
        ));
    }
    if text.ends_with('/') || path.file_name().is_none() {
        return Err(format!(
            "sink path `{text}` names a directory: give a file, e.g. \"/var/log/mirror/exchanges.jsonl\""
        ));
    }
    if text.contains('\0') {
        return Err(format!("sink path {text:?} contains a NUL byte"));
    }
    Ok(path.to_owned())
}
