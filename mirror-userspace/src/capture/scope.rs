//! The classifier's scope tries: per target port, the prefixes (CIDRs and pod addresses) that
//! are the primary. A scoped port's packets to or from any other address cost the classifier
//! one trie lookup and are counted (`other_address`), never recorded.

use std::collections::{BTreeSet, HashMap as StdHashMap};

use aya::maps::{
    MapData,
    lpm_trie::{Key, LpmTrie},
};
use ipnet::IpNet;
use mirror_common::{SCOPE_PORT_BITS, SCOPE_V4_MAP, SCOPE_V6_MAP, scope_key_v4, scope_key_v6};

use super::{CaptureError, map_error};

/// The two tries and what this process put in them, per port (to remove exactly that).
pub(super) struct ScopeMaps {
    v4: LpmTrie<MapData, [u8; 6], u8>,
    v6: LpmTrie<MapData, [u8; 18], u8>,
    entries: StdHashMap<u16, BTreeSet<IpNet>>,
}

impl ScopeMaps {
    pub(super) fn new(ebpf: &mut aya::Ebpf) -> Result<Self, CaptureError> {
        let mut take =
            |name: &'static str| ebpf.take_map(name).ok_or(CaptureError::MissingObject(name));
        let v4 =
            LpmTrie::try_from(take(SCOPE_V4_MAP)?).map_err(map_error(SCOPE_V4_MAP, "opening"))?;
        let v6 =
            LpmTrie::try_from(take(SCOPE_V6_MAP)?).map_err(map_error(SCOPE_V6_MAP, "opening"))?;
        Ok(Self {
            v4,
            v6,
            entries: StdHashMap::new(),
        })
    }

    /// Makes `nets` the prefixes of `port` (adding the new ones before removing the old, so a
    /// change never leaves a moment with fewer addresses than either set).
    pub(super) fn set(&mut self, port: u16, nets: &[IpNet]) -> Result<(), CaptureError> {
        let wanted: BTreeSet<IpNet> = nets.iter().map(IpNet::trunc).collect();
        let current = self.entries.remove(&port).unwrap_or_default();
        for net in wanted.difference(&current) {
            self.insert(port, net)?;
        }
        for net in current.difference(&wanted) {
            self.remove(port, net)?;
        }
        if !wanted.is_empty() {
            self.entries.insert(port, wanted);
        }
        Ok(())
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
