//! Connection table: a hash map from flow to a slab slot, with the slots on an intrusive
//! doubly-linked list in least-recently-used order, so touch, insert, remove and "evict the
//! oldest" are all O(1) and there is no per-operation allocation once the slab has grown.
//!
//! The map uses a per-process randomly seeded hash ([`crate::hash::RandomState`]): flow keys come
//! from the network, and a fixed hash would let a remote peer aim its connections at one bucket.

use crate::{hash::HashMap, segment::FlowKey};

const NONE: u32 = u32::MAX;

#[derive(Debug)]
struct Slot<V> {
    key: FlowKey,
    value: Option<V>,
    /// Towards the most recently used end.
    newer: u32,
    /// Towards the least recently used end.
    older: u32,
}

/// Flow-keyed table with LRU order.
#[derive(Debug)]
pub struct LruTable<V> {
    index: HashMap<FlowKey, u32>,
    slots: Vec<Slot<V>>,
    free: Vec<u32>,
    newest: u32,
    oldest: u32,
}

impl<V> Default for LruTable<V> {
    fn default() -> Self {
        Self {
            index: HashMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            newest: NONE,
            oldest: NONE,
        }
    }
}

impl<V> LruTable<V> {
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Slot of `key`, if present. Does not change the LRU order.
    pub fn find(&self, key: &FlowKey) -> Option<u32> {
        self.index.get(key).copied()
    }

    /// Inserts `key` as the most recently used entry; the key must not be present.
    pub fn insert(&mut self, key: FlowKey, value: V) -> u32 {
        let slot = Slot {
            key,
            value: Some(value),
            newer: NONE,
            older: NONE,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = slot;
                id
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        let previous = self.index.insert(key, id);
        debug_assert!(previous.is_none(), "insert of a present key");
        self.link_newest(id);
        id
    }

    /// Marks `id` most recently used.
    pub fn touch(&mut self, id: u32) {
        if self.newest != id {
            self.unlink(id);
            self.link_newest(id);
        }
    }

    pub fn get_mut(&mut self, id: u32) -> &mut V {
        self.slots[id as usize]
            .value
            .as_mut()
            .expect("slot id refers to a live entry")
    }

    pub fn get(&self, id: u32) -> &V {
        self.slots[id as usize]
            .value
            .as_ref()
            .expect("slot id refers to a live entry")
    }

    pub fn key(&self, id: u32) -> FlowKey {
        self.slots[id as usize].key
    }

    /// Removes entry `id`, returning its key and value.
    pub fn remove(&mut self, id: u32) -> (FlowKey, V) {
        self.unlink(id);
        let slot = &mut self.slots[id as usize];
        let value = slot.value.take().expect("slot id refers to a live entry");
        let key = slot.key;
        self.index.remove(&key);
        self.free.push(id);
        (key, value)
    }

    /// The least recently used entry.
    pub fn oldest(&self) -> Option<u32> {
        (self.oldest != NONE).then_some(self.oldest)
    }

    /// The entry used just after `id`, walking towards the newest.
    #[cfg(test)]
    pub fn newer(&self, id: u32) -> Option<u32> {
        let newer = self.slots[id as usize].newer;
        (newer != NONE).then_some(newer)
    }

    /// Ids of all live entries (in slab order).
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| slot.value.is_some())
            .map(|(id, _)| id as u32)
    }

    fn link_newest(&mut self, id: u32) {
        let old_newest = self.newest;
        {
            let slot = &mut self.slots[id as usize];
            slot.older = old_newest;
            slot.newer = NONE;
        }
        if old_newest != NONE {
            self.slots[old_newest as usize].newer = id;
        } else {
            self.oldest = id;
        }
        self.newest = id;
    }

    fn unlink(&mut self, id: u32) {
        let (newer, older) = {
            let slot = &self.slots[id as usize];
            (slot.newer, slot.older)
        };
        if newer != NONE {
            self.slots[newer as usize].older = older;
        } else {
            self.newest = older;
        }
        if older != NONE {
            self.slots[older as usize].newer = newer;
        } else {
            self.oldest = newer;
        }
        let slot = &mut self.slots[id as usize];
        slot.newer = NONE;
        slot.older = NONE;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(port: u16) -> FlowKey {
        FlowKey {
            client: ([198, 18, 0, 1], port).into(),
            server: ([198, 18, 0, 2], 80).into(),
        }
    }

    fn lru_order(table: &LruTable<u16>) -> Vec<u16> {
        let mut order = Vec::new();
        let mut cursor = table.oldest();
        while let Some(id) = cursor {
            order.push(*table.get(id));
            cursor = table.newer(id);
        }
        order
    }

    #[test]
    fn touch_moves_entry_to_newest() {
        let mut table = LruTable::default();
        let a = table.insert(flow(1), 1);
        table.insert(flow(2), 2);
        table.insert(flow(3), 3);
        assert_eq!(lru_order(&table), [1, 2, 3]);
        table.touch(a);
        assert_eq!(lru_order(&table), [2, 3, 1]);
        assert_eq!(table.find(&flow(2)), table.oldest());
    }

    #[test]
    fn remove_reuses_slots_and_keeps_order() {
        let mut table = LruTable::default();
        table.insert(flow(1), 1);
        let b = table.insert(flow(2), 2);
        table.insert(flow(3), 3);
        assert_eq!(table.remove(b), (flow(2), 2));
        assert_eq!(lru_order(&table), [1, 3]);
        let d = table.insert(flow(4), 4);
        assert_eq!(d, b, "freed slot is reused");
        assert_eq!(lru_order(&table), [1, 3, 4]);
        assert_eq!(table.len(), 3);
        assert_eq!(table.find(&flow(2)), None);
        let oldest = table.oldest().unwrap();
        table.remove(oldest);
        assert_eq!(lru_order(&table), [3, 4]);
        assert_eq!(table.ids().count(), 2);
    }
}
