//! The per-segment flood limit (`settings.flood_limits.connections_per_segment`): how many of a worker's
//! connections were opened from each segment. Like the per-source limits it is consulted only where a new flow
//! is admitted; removing a flow (expiry, eviction, a kill, a revocation) counts it out.
//!
//! Segments are known by [`SegmentKey`], a hash of their name that stays the same across policy versions, so a
//! segment's count survives a policy change. [`SegmentTable`] is allocated at start: an open-addressing table
//! of [`SLOTS`] keys with their counts, and one slot number per connection-table slot. A key whose count fell
//! to 0 gives its place to the next new one; when no place is found within [`PROBE`] slots (more segments with
//! live connections than the table holds), the new flow is admitted uncounted. Connections admitted while the
//! limit was off are not counted.

use super::sources::FloodLimit;
use super::table::FlowId;

/// A segment as the flood limits count it: a hash of its name, the same in every policy version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SegmentKey(pub u64);

/// Segments a worker counts at once (more than a policy may have: `policy::limits::MAX_SEGMENTS`).
pub const SLOTS: usize = 16_384;
/// Slots examined to find a segment's place.
pub const PROBE: usize = 128;

/// No segment (a flow admitted uncounted).
const NONE: u16 = u16::MAX;
/// A slot never used (a key hashing to 0 is stored as 1).
const EMPTY: u64 = 0;

/// Where [`SegmentTable::check`] counts a new flow, for [`SegmentTable::admitted`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSlot(u16);

/// Connections per segment in one worker; see the module documentation.
#[derive(Debug)]
pub struct SegmentTable {
    keys: Box<[u64]>,
    counts: Box<[u32]>,
    /// Per connection-table slot: the segment slot its flow is counted in, or [`NONE`].
    of_flow: Box<[u16]>,
    limit: u32,
}

impl SegmentTable {
    /// A table for a connection table of `flows` flows. The limit starts off.
    pub fn new(flows: usize) -> Self {
        SegmentTable {
            keys: vec![EMPTY; SLOTS].into_boxed_slice(),
            counts: vec![0; SLOTS].into_boxed_slice(),
            of_flow: vec![NONE; flows].into_boxed_slice(),
            limit: 0,
        }
    }

    /// Bytes of heap the table holds; constant after construction.
    pub fn heap_bytes(&self) -> usize {
        self.keys.len() * size_of::<u64>()
            + self.counts.len() * size_of::<u32>()
            + self.of_flow.len() * size_of::<u16>()
    }

    /// Changes the limit (policy reload; 0 turns it off).
    pub fn set_limit(&mut self, limit: u32) {
        self.limit = limit;
    }

    /// Whether the limit is on.
    #[inline]
    pub fn is_active(&self) -> bool {
        self.limit != 0
    }

    /// Connections counted for `segment`.
    pub fn count(&self, segment: SegmentKey) -> u32 {
        self.find(stored(segment)).map_or(0, |i| self.counts[i])
    }

    /// Whether one more connection from `segment` is within the limit; where to count it. Counts nothing.
    pub fn check(&mut self, segment: SegmentKey) -> Result<Option<SegmentSlot>, FloodLimit> {
        let Some(at) = self.place(stored(segment)) else {
            return Ok(None);
        };
        if self.counts[at] >= self.limit {
            return Err(FloodLimit::ConnectionsPerSegment);
        }
        Ok(Some(SegmentSlot(at as u16)))
    }

    /// Counts the new flow `id` where [`check`](Self::check) said.
    pub fn admitted(&mut self, id: FlowId, at: SegmentSlot) {
        if let Some(of) = self.of_flow.get_mut(id.index()) {
            *of = at.0;
            self.counts[usize::from(at.0)] += 1;
        }
    }

    /// Counts out the flow that held slot `id` (removed, or replaced by a new flow).
    #[inline]
    pub fn removed(&mut self, id: FlowId) {
        if let Some(of) = self.of_flow.get_mut(id.index()) {
            if *of != NONE {
                let c = &mut self.counts[usize::from(*of)];
                *c = c.saturating_sub(1);
                *of = NONE;
            }
        }
    }

    /// The slot holding `key`, if any.
    fn find(&self, key: u64) -> Option<usize> {
        for k in 0..PROBE {
            let i = (key as usize).wrapping_add(k) % SLOTS;
            match self.keys[i] {
                EMPTY => return None,
                found if found == key => return Some(i),
                _ => {}
            }
        }
        None
    }

    /// The slot of `key`: its own, or the first along its probe sequence that counts nothing (taken for it).
    fn place(&mut self, key: u64) -> Option<usize> {
        let mut free = None;
        for k in 0..PROBE {
            let i = (key as usize).wrapping_add(k) % SLOTS;
            match self.keys[i] {
                found if found == key => return Some(i),
                EMPTY => {
                    free = free.or(Some(i));
                    break;
                }
                _ if self.counts[i] == 0 => free = free.or(Some(i)),
                _ => {}
            }
        }
        let i = free?;
        self.keys[i] = key;
        Some(i)
    }
}

fn stored(segment: SegmentKey) -> u64 {
    segment.0.max(1)
}
