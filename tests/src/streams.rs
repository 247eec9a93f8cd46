//! An independent, deliberately simple stream assembler used as the test oracle: it places every
//! captured chunk at `seq - (ISN + 1)` and reports holes and conflicting overlaps instead of
//! guessing. It is not the daemon's reassembly; it only has to be obviously right for loss-free
//! captures.

use std::collections::BTreeMap;

use mirror::segment::{Direction, FlowKey, Segment};

/// One direction of one connection as captured.
#[derive(Debug, Default)]
pub struct CapturedStream {
    pub bytes: Vec<u8>,
    covered: Vec<bool>,
    /// Sequence number of the first payload byte (ISN + 1), known when the SYN was captured.
    pub base: Option<u32>,
    /// Bytes received twice with different content.
    pub conflicts: usize,
    /// Segments outside the stream's sequence window (before its start, or of another
    /// connection that reused the 4-tuple).
    pub unplaced: usize,
    pub saw_fin: bool,
    pub saw_rst: bool,
}

impl CapturedStream {
    /// Number of missing byte ranges below the highest byte captured.
    pub fn holes(&self) -> usize {
        let mut holes = 0;
        let mut in_hole = false;
        for covered in &self.covered {
            if !covered && !in_hole {
                holes += 1;
            }
            in_hole = !covered;
        }
        holes
    }

    fn place(&mut self, offset: usize, payload: &[u8]) {
        let end = offset + payload.len();
        if self.bytes.len() < end {
            self.bytes.resize(end, 0);
            self.covered.resize(end, false);
        }
        for (i, byte) in payload.iter().enumerate() {
            let at = offset + i;
            if self.covered[at] {
                if self.bytes[at] != *byte {
                    self.conflicts += 1;
                }
            } else {
                self.bytes[at] = *byte;
                self.covered[at] = true;
            }
        }
    }
}

/// Assembles every (connection, direction) of `segments`. Streams whose SYN was not captured
/// are left without a base and without bytes: the tests only create connections while capturing.
pub fn assemble(segments: &[Segment]) -> BTreeMap<(FlowKey, Direction), CapturedStream> {
    let mut streams: BTreeMap<(FlowKey, Direction), CapturedStream> = BTreeMap::new();
    for segment in segments {
        let key = (segment.flow, segment.direction);
        let stream = streams.entry(key).or_default();
        if segment.effective_flags().syn() {
            stream.base = Some(segment.seq.wrapping_add(1));
        }
        stream.saw_fin |= segment.effective_flags().fin();
        stream.saw_rst |= segment.effective_flags().rst();
    }
    for segment in segments
        .iter()
        .filter(|segment| !segment.payload.is_empty())
    {
        let key = (segment.flow, segment.direction);
        let stream = streams.get_mut(&key).expect("stream created above");
        let Some(base) = stream.base else { continue };
        let offset = segment.seq.wrapping_sub(base);
        // Before the stream start, or a new connection on a reused 4-tuple: not placeable.
        if offset >= 1 << 30 {
            stream.unplaced += 1;
            continue;
        }
        stream.place(offset as usize, &segment.payload);
    }
    streams
}
