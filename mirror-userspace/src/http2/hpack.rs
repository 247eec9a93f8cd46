//! HPACK decoding (RFC 7541) of one direction, and the settings of the receiving side that bound
//! it.
//!
//! Every header block of a direction goes through its one decoder, whether or not its stream is
//! mirrored: the dynamic table is shared by all streams, and one block skipped would make every
//! later one decode wrong. The table is bounded three ways: by the receiver's
//! SETTINGS_HEADER_TABLE_SIZE (a size update above it is a compression error the receiver would
//! close the connection for), by our own `max_table_size` (memory), and the decoded list of one
//! block by `max_header_list_bytes`.

use std::collections::VecDeque;
use std::fmt;

use super::frame::{DEFAULT_MAX_FRAME_SIZE, Settings};

/// SETTINGS_HEADER_TABLE_SIZE before any SETTINGS (RFC 9113 §6.5.2): the table's initial size.
pub const DEFAULT_TABLE_SIZE: u32 = 4_096;

/// A decoded header list, in wire order, names and values as sent (one buffer for all).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct HeaderList {
    bytes: Vec<u8>,
    /// End offsets of each name and value in `bytes`.
    ends: Vec<(u32, u32)>,
}

impl HeaderList {
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        self.bytes.extend_from_slice(name);
        let name_end = self.bytes.len() as u32;
        self.bytes.extend_from_slice(value);
        self.ends.push((name_end, self.bytes.len() as u32));
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&[u8], &[u8])> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&(name_end, value_end)| {
            let field = (
                &self.bytes[start..name_end as usize],
                &self.bytes[name_end as usize..value_end as usize],
            );
            start = value_end as usize;
            field
        })
    }

    /// The first value of `name` (names are lower case in HTTP/2).
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.iter()
            .find(|(field, _)| *field == name)
            .map(|(_, value)| value)
    }

    /// The size RFC 7541 §4.1 counts: names and values plus 32 per field.
    pub fn size(&self) -> usize {
        self.bytes.len() + 32 * self.ends.len()
    }
}

impl<'a> FromIterator<(&'a [u8], &'a [u8])> for HeaderList {
    fn from_iter<I: IntoIterator<Item = (&'a [u8], &'a [u8])>>(iter: I) -> Self {
        let mut list = Self::default();
        for (name, value) in iter {
            list.push(name, value);
        }
        list
    }
}

impl fmt::Debug for HeaderList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|(name, value)| {
                (
                    String::from_utf8_lossy(name),
                    String::from_utf8_lossy(value),
                )
            }))
            .finish()
    }
}

/// Why a header block could not be decoded: the direction's table is lost with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HpackError {
    /// The block is not valid HPACK (bad index, bad integer or Huffman code, truncated).
    Malformed,
    /// A dynamic table size update above the receiver's SETTINGS_HEADER_TABLE_SIZE.
    TableSizeExceeded,
    /// A dynamic table size update above our `max_table_size`.
    TableTooLarge,
    /// The decoded list is over `max_header_list_bytes`.
    ListTooLarge,
}

/// The HPACK decoder of one direction.
pub struct HpackDecoder {
    inner: loona_hpack::Decoder<'static>,
    max_table_size: usize,
    max_list_bytes: usize,
}

impl fmt::Debug for HpackDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HpackDecoder")
            .field("max_table_size", &self.max_table_size)
            .field("max_list_bytes", &self.max_list_bytes)
            .finish_non_exhaustive()
    }
}

/// Decodes an HPACK integer with an `prefix`-bit prefix (RFC 7541 §5.1); `None` if truncated
/// or over `u32`.
fn integer(bytes: &[u8], prefix: u8) -> Option<(u64, usize)> {
    let mask = (1u16 << prefix) as u8 - 1;
    let first = bytes.first()? & mask;
    if first < mask {
        return Some((u64::from(first), 1));
    }
    let mut value = u64::from(mask);
    for (index, &byte) in bytes[1..].iter().enumerate().take(5) {
        value += u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return (value <= u64::from(u32::MAX)).then_some((value, index + 2));
        }
    }
    None
}

impl HpackDecoder {
    /// `max_table_size` is raised to the protocol's initial 4096 if below (the peer may use
    /// that much before any SETTINGS).
    pub fn new(max_table_size: usize, max_list_bytes: usize) -> Self {
        Self {
            inner: loona_hpack::Decoder::new(),
            max_table_size: max_table_size.max(DEFAULT_TABLE_SIZE as usize),
            max_list_bytes,
        }
    }

    /// Decodes one complete header block. `allowed_table_size`: the largest
    /// SETTINGS_HEADER_TABLE_SIZE of the receiver that may apply to this block.
    pub fn decode(
        &mut self,
        block: &[u8],
        allowed_table_size: u32,
    ) -> Result<HeaderList, HpackError> {
        // Size updates come first in a block (RFC 7541 §4.2); checked here to tell our limit
        // from the peer's violation. The decoder is also bounded for any later in the block.
        let mut rest = block;
        while let Some(&first) = rest.first()
            && first & 0xe0 == 0x20
        {
            let (size, used) = integer(rest, 5).ok_or(HpackError::Malformed)?;
            if size > u64::from(allowed_table_size) {
                return Err(HpackError::TableSizeExceeded);
            }
            if size > self.max_table_size as u64 {
                return Err(HpackError::TableTooLarge);
            }
            rest = &rest[used..];
        }
        self.inner
            .set_max_allowed_table_size(self.max_table_size.min(allowed_table_size as usize));
        let mut list = HeaderList::default();
        let mut over = false;
        let limit = self.max_list_bytes;
        self.inner
            .decode_with_cb(block, |name, value| {
                // Still decoded to the end (bounded by the block) so the error is the size.
                if !over && list.size() + name.len() + value.len() + 32 <= limit {
                    list.push(&name, &value);
                } else {
                    over = true;
                }
            })
            .map_err(|_| HpackError::Malformed)?;
        if over {
            return Err(HpackError::ListTooLarge);
        }
        Ok(list)
    }
}

/// The SETTINGS one side announced, as they bind the other side's sending: a value applies once
/// the other side acknowledged it, but that side may use it as soon as it read it, before its
/// ACK is seen; so the bound used is the largest of the acknowledged and pending values.
#[derive(Clone, Debug)]
pub struct AnnouncedSettings {
    table_size: u32,
    max_frame_size: u32,
    /// Announced, not yet acknowledged, oldest first.
    pending: VecDeque<Settings>,
}

/// SETTINGS frames awaiting their ACK that are remembered; beyond, the oldest is taken as
/// acknowledged (only ever loosening the bounds).
const MAX_PENDING_SETTINGS: usize = 8;

impl Default for AnnouncedSettings {
    fn default() -> Self {
        Self {
            table_size: DEFAULT_TABLE_SIZE,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            pending: VecDeque::new(),
        }
    }
}

impl AnnouncedSettings {
    pub fn announce(&mut self, settings: Settings) {
        if self.pending.len() == MAX_PENDING_SETTINGS {
            self.acknowledge();
        }
        self.pending.push_back(settings);
    }

    /// The other side acknowledged the oldest pending SETTINGS.
    pub fn acknowledge(&mut self) {
        if let Some(settings) = self.pending.pop_front() {
            self.table_size = settings.header_table_size.unwrap_or(self.table_size);
            self.max_frame_size = settings.max_frame_size.unwrap_or(self.max_frame_size);
        }
    }

    /// Largest SETTINGS_HEADER_TABLE_SIZE that may apply.
    pub fn table_size(&self) -> u32 {
        self.pending
            .iter()
            .filter_map(|settings| settings.header_table_size)
            .fold(self.table_size, u32::max)
    }

    /// Largest SETTINGS_MAX_FRAME_SIZE that may apply.
    pub fn max_frame_size(&self) -> u32 {
        self.pending
            .iter()
            .filter_map(|settings| settings.max_frame_size)
            .fold(self.max_frame_size, u32::max)
    }
}
