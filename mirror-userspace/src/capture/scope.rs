//! The classifier's scopes: per target port, the prefixes (CIDRs and pod addresses) that are the
//! primary. A scoped port's packets to or from any other address are counted (`other_address`),
//! never recorded.
//!
//! Every prefix is in the tries (longest-prefix match keyed by port and address). A port also
//! gets a list in `SCOPE_LISTS` (up to `SCOPE_LIST_SLOTS / 2` ports): while a family has at most
//! `SCOPE_LIST_PREFIXES` prefixes the classifier compares them there (a few compares on one
//! cache line for IPv4), and looks in the trie only for a longer list. A port's list has two
//! entries, `2k` and `2k + 1`: a change is written into the one not in use, then the port's
//! entry in `TARGET_PORTS` is pointed at it (one bit flips), so a packet sees the whole old list
//! or the whole new one. The entry left is rewritten only at the port's next change: a program
//! run that read the old index is over within microseconds, so only two changes closer than that
//! could show it a list being rewritten.

use std::collections::{BTreeSet, HashMap as StdHashMap};

use aya::maps::{
    Array, MapData,
    lpm_trie::{Key, LpmTrie},
};
use ipnet::IpNet;
use mirror_common::{
    SCOPE_IN_TRIE, SCOPE_LIST_SLOTS, SCOPE_LISTS_MAP, SCOPE_NO_LIST, SCOPE_PORT_BITS, SCOPE_V4_MAP,
    SCOPE_V6_MAP, ScopeList, scope_key_v4, scope_key_v6,
};

use super::{CaptureError, map_error};

/// The tries, the lists and what this process put in them, per port (to remove exactly that).
pub(super) struct ScopeMaps {
    v4: LpmTrie<MapData, [u8; 6], u8>,
    v6: LpmTrie<MapData, [u8; 18], u8>,
    lists: Array<MapData, ScopeList>,
    entries: StdHashMap<u16, BTreeSet<IpNet>>,
    /// The list entry each scoped port uses ([`SCOPE_NO_LIST`] when all pairs were taken).
    in_use: StdHashMap<u16, u32>,
}

impl ScopeMaps {
    pub(super) fn new(ebpf: &mut aya::Ebpf) -> Result<Self, CaptureError> {
        let mut take =
            |name: &'static str| ebpf.take_map(name).ok_or(CaptureError::MissingObject(name));
        let v4 =
            LpmTrie::try_from(take(SCOPE_V4_MAP)?).map_err(map_error(SCOPE_V4_MAP, "opening"))?;
        let v6 =
            LpmTrie::try_from(take(SCOPE_V6_MAP)?).map_err(map_error(SCOPE_V6_MAP, "opening"))?;
        let lists = Array::try_from(take(SCOPE_LISTS_MAP)?)
            .map_err(map_error(SCOPE_LISTS_MAP, "opening"))?;
        Ok(Self {
            v4,
            v6,
            lists,
            entries: StdHashMap::new(),
            in_use: StdHashMap::new(),
        })
    }

    /// Makes `nets` the prefixes of `port`. `publish` points the port at its list entry (or
    /// [`SCOPE_NO_LIST`]) and scopes it; it runs after the new prefixes are in the tries and
    /// the list, and before the old ones leave the tries, so a change never leaves a moment
    /// with fewer addresses than either set.
    pub(super) fn set(
        &mut self,
        port: u16,
        nets: &[IpNet],
        publish: impl FnOnce(u32) -> Result<(), CaptureError>,
    ) -> Result<(), CaptureError> {
        let wanted: BTreeSet<IpNet> = nets.iter().map(IpNet::trunc).collect();
        let current = self.entries.remove(&port).unwrap_or_default();
        for net in wanted.difference(&current) {
            self.insert(port, net)?;
        }
        // A port without a list takes one as soon as a pair is free: its index leaves
        // `SCOPE_NO_LIST` in several bytes at once, but any mix of the two values is out of the
        // map's range, so a packet that reads one looks in the trie, which holds every prefix.
        let list = match self.in_use.get(&port) {
            Some(&in_use) if in_use != SCOPE_NO_LIST => in_use ^ 1,
            _ => self.free_pair(),
        };
        if list != SCOPE_NO_LIST {
            self.lists
                .set(list, scope_list(&wanted), 0)
                .map_err(map_error(SCOPE_LISTS_MAP, "updating"))?;
        }
        publish(list)?;
        self.in_use.insert(port, list);
        for net in current.difference(&wanted) {
            self.remove(port, net)?;
        }
        self.entries.insert(port, wanted);
        Ok(())
    }

    /// Forgets the prefixes of `port`, which must no longer be scoped, and frees its list.
    pub(super) fn clear(&mut self, port: u16) -> Result<(), CaptureError> {
        self.in_use.remove(&port);
        for net in self.entries.remove(&port).unwrap_or_default() {
            self.remove(port, &net)?;
        }
        Ok(())
    }

    /// The first entry of a pair no port uses, or [`SCOPE_NO_LIST`].
    fn free_pair(&self) -> u32 {
        (0..SCOPE_LIST_SLOTS / 2)
            .map(|pair| pair * 2)
            .find(|first| !self.in_use.values().any(|list| list & !1 == *first))
            .unwrap_or(SCOPE_NO_LIST)
    }

    fn insert(&mut self, port: u16, net: &IpNet) -> Result<(), CaptureError> {
        match net {
            IpNet::V4(net) => self
                .v4
                .insert(&key_v4(port, net), 1, 0)
                .map_err(map_error(SCOPE_V4_MAP, "updating")),
            IpNet::V6(net) => self
                .v6
                .insert(&key_v6(port, net), 1, 0)
                .map_err(map_error(SCOPE_V6_MAP, "updating")),
        }
    }

    fn remove(&mut self, port: u16, net: &IpNet) -> Result<(), CaptureError> {
        match net {
            IpNet::V4(net) => self
                .v4
                .remove(&key_v4(port, net))
                .map_err(map_error(SCOPE_V4_MAP, "updating")),
            IpNet::V6(net) => self
                .v6
                .remove(&key_v6(port, net))
                .map_err(map_error(SCOPE_V6_MAP, "updating")),
        }
    }
}

/// The list entry of `nets`: each family's prefixes, or [`SCOPE_IN_TRIE`] for a family with
/// more than `SCOPE_LIST_PREFIXES`.
fn scope_list(nets: &BTreeSet<IpNet>) -> ScopeList {
    let mut list = ScopeList::EMPTY;
    let (mut v4_fits, mut v6_fits) = (true, true);
    for net in nets {
        match net {
            IpNet::V4(net) => {
                v4_fits &= list.push_v4(net.network().octets(), net.prefix_len());
            }
            IpNet::V6(net) => {
                v6_fits &= list.push_v6(net.network().octets(), net.prefix_len());
            }
        }
    }
    if !v4_fits {
        list.v4_len = SCOPE_IN_TRIE;
    }
    if !v6_fits {
        list.v6_len = SCOPE_IN_TRIE;
    }
    list
}

fn key_v4(port: u16, net: &ipnet::Ipv4Net) -> Key<[u8; 6]> {
    Key::new(
        SCOPE_PORT_BITS + u32::from(net.prefix_len()),
        scope_key_v4(port, net.network().octets()),
    )
}

fn key_v6(port: u16, net: &ipnet::Ipv6Net) -> Key<[u8; 18]> {
    Key::new(
        SCOPE_PORT_BITS + u32::from(net.prefix_len()),
        scope_key_v6(port, net.network().octets()),
    )
}

#[cfg(test)]
mod tests {
    use mirror_common::SCOPE_LIST_PREFIXES;

    use super::*;

    fn nets(list: &[&str]) -> BTreeSet<IpNet> {
        list.iter().map(|net| net.parse().unwrap()).collect()
    }

    #[test]
    fn lists_hold_up_to_the_inline_length_per_family() {
        let hosts = |count: usize| -> Vec<String> {
            (1..=count)
                .map(|host| format!("10.0.0.{host}/32"))
                .collect()
        };
        let full = hosts(SCOPE_LIST_PREFIXES);
        let full: Vec<&str> = full.iter().map(String::as_str).collect();
        let list = scope_list(&nets(&full));
        assert_eq!(list.v4_len, SCOPE_LIST_PREFIXES as u32);
        assert_eq!(list.v6_len, 0);
        let address = |host: u8| [10, 0, 0, host];
        assert_eq!(list.contains_v4(address(8)), Some(true));
        assert_eq!(list.contains_v4(address(9)), Some(false));

        let over = hosts(SCOPE_LIST_PREFIXES + 1);
        let mut over: Vec<&str> = over.iter().map(String::as_str).collect();
        over.push("fd00::/64");
        let list = scope_list(&nets(&over));
        assert_eq!(list.v4_len, SCOPE_IN_TRIE);
        assert_eq!(list.contains_v4(address(1)), None);
        // The other family keeps its list.
        assert_eq!(list.v6_len, 1);
        let inside =
            mirror_common::halves("fd00::1234".parse::<std::net::Ipv6Addr>().unwrap().octets());
        assert_eq!(list.contains_v6(inside), Some(true));
    }
}
