//! The XDP balancer's VIP table ([`proxy_common::XLB_VIPS`]) from
//! userspace: an array of two-choice buckets the daemon places keys in
//! (the program compares a key with the slots of its two buckets,
//! [`proxy_common::vip_buckets`]), mirrored here so a change writes only
//! the buckets it touches.
//!
//! Placement: the emptier of the key's two buckets; when both are full, one
//! resident of either moves to its other bucket first (one cuckoo step).
//! With at most [`proxy_common::MAX_XLB_VIPS`] keys in 4 × as many slots a
//! full pair is rare and a failed move rarer still; it is reported, never
//! silently dropped. Writes are ordered so a program reading a bucket
//! while it changes never finds a key with another key's ring: a moved key
//! is written to its new slot before its old one is cleared, and a slot is
//! only ever written when free or cleared (see [`XlbVipSlot`]).
use aya::maps::{Array, MapData};
use proxy_common::{
    vip_buckets, XlbVip, XlbVipBucket, XlbVipKey, XlbVipSlot, XLB_VIP_BUCKETS,
    XLB_VIP_BUCKET_SLOTS, XLB_VIP_USED,
};

/// Errors of the VIP table.
#[derive(Debug, thiserror::Error)]
pub enum VipTableError {
    /// The key's two buckets are full and no resident could move.
    #[error(
        "no room for external VIP {key} in the XDP balancer's VIP table: both of its buckets \
         ({a}, {b}) are full and no entry in them can move (too many VIP ports hash together; \
         remove some external VIPs)"
    )]
    Full {
        /// The VIP, `address:port/protocol`.
        key: String,
        /// Its buckets.
        a: u32,
        /// Its buckets.
        b: u32,
    },
    /// A bucket could not be read or written.
    #[error("XDP balancer VIP table ({name}): {source}")]
    Map {
        /// The map's name.
        name: &'static str,
        /// What the kernel said.
        #[source]
        source: aya::maps::MapError,
    },
}

fn map_err(source: aya::maps::MapError) -> VipTableError {
    VipTableError::Map {
        name: proxy_common::XLB_VIPS,
        source,
    }
}

/// `address:port/protocol` of a key, for messages.
pub(super) fn describe(k: &XlbVipKey) -> String {
    let proto = match k.proto {
        proxy_common::proto::TCP => "TCP".to_string(),
        proxy_common::proto::UDP => "UDP".to_string(),
        0 => "address".to_string(),
        n => format!("protocol {n}"),
    };
    format!(
        "{}:{}/{proto}",
        std::net::Ipv4Addr::from(u32::from_be(k.vip)),
        u16::from_be(k.port)
    )
}

/// The table as last written (what the kernel holds).
pub(super) struct VipTable {
    buckets: Vec<XlbVipBucket>,
}

impl Default for VipTable {
    fn default() -> Self {
        Self {
            buckets: vec![XlbVipBucket::default(); XLB_VIP_BUCKETS as usize],
        }
    }
}

/// The key with `pad` 0 (as callers name it).
fn plain(k: XlbVipKey) -> XlbVipKey {
    XlbVipKey { pad: 0, ..k }
}

impl VipTable {
    /// The table in `map` (pinned by an earlier run, or empty).
    ///
    /// Errors: a bucket cannot be read.
    pub fn read(map: &Array<&MapData, XlbVipBucket>) -> Result<Self, VipTableError> {
        let mut t = Self::default();
        for (i, b) in t.buckets.iter_mut().enumerate() {
            *b = map.get(&(i as u32), 0).map_err(map_err)?;
        }
        Ok(t)
    }

    /// Every entry: (key with `pad` 0, value).
    pub fn entries(&self) -> impl Iterator<Item = (XlbVipKey, XlbVip)> + '_ {
        self.buckets
            .iter()
            .flat_map(|b| b.slots.iter())
            .filter(|s| s.key.pad == XLB_VIP_USED)
            .map(|s| (plain(s.key), s.vip))
    }

    /// Where `key` (`pad` 0) sits: (bucket, slot).
    fn find(&self, key: &XlbVipKey) -> Option<(u32, usize)> {
        let want = XlbVipKey {
            pad: XLB_VIP_USED,
            ..*key
        };
        for b in vip_buckets(key.word()) {
            if let Some(s) = self.buckets[b as usize]
                .slots
                .iter()
                .position(|s| s.key == want)
            {
                return Some((b, s));
            }
        }
        None
    }

    fn free_slot(&self, b: u32) -> Option<usize> {
        self.buckets[b as usize]
            .slots
            .iter()
            .position(|s| s.key.pad != XLB_VIP_USED)
    }

    fn used(&self, b: u32) -> usize {
        XLB_VIP_BUCKET_SLOTS
            - self.buckets[b as usize]
                .slots
                .iter()
                .filter(|s| s.key.pad != XLB_VIP_USED)
                .count()
    }

    fn write_slot(
        &mut self,
        map: &mut Array<&mut MapData, XlbVipBucket>,
        b: u32,
        s: usize,
        slot: XlbVipSlot,
    ) -> Result<(), VipTableError> {
        let mut bucket = self.buckets[b as usize];
        bucket.slots[s] = slot;
        map.set(b, bucket, 0).map_err(map_err)?;
        self.buckets[b as usize] = bucket;
        Ok(())
    }

    /// Makes `key` (`pad` 0) map to `vip`: in place when present (written
    /// only when the value changed), else in a free slot of one of its
    /// buckets.
    ///
    /// Errors: [`VipTableError::Full`], or a bucket write failed (the table
    /// then holds what was written before).
    pub fn set(
        &mut self,
        map: &mut Array<&mut MapData, XlbVipBucket>,
        key: &XlbVipKey,
        vip: XlbVip,
    ) -> Result<(), VipTableError> {
        let key = plain(*key);
        let slot = XlbVipSlot {
            key: XlbVipKey {
                pad: XLB_VIP_USED,
                ..key
            },
            vip,
        };
        if let Some((b, s)) = self.find(&key) {
            if self.buckets[b as usize].slots[s].vip != vip {
                // Same key: only the value word changes.
                self.write_slot(map, b, s, slot)?;
            }
            return Ok(());
        }
        let [a, b] = vip_buckets(key.word());
        let order = if self.used(b) < self.used(a) {
            [b, a]
        } else {
            [a, b]
        };
        for bucket in order {
            if let Some(s) = self.free_slot(bucket) {
                return self.write_slot(map, bucket, s, slot);
            }
        }
        // Both full: move one resident to its other bucket (new copy
        // first, then the old slot cleared), then take the freed slot.
        for bucket in [a, b] {
            for s in 0..XLB_VIP_BUCKET_SLOTS {
                let resident = self.buckets[bucket as usize].slots[s];
                let [ra, rb] = vip_buckets(plain(resident.key).word());
                let other = if ra == bucket { rb } else { ra };
                if other == bucket {
                    continue;
                }
                if let Some(free) = self.free_slot(other) {
                    self.write_slot(map, other, free, resident)?;
                    self.write_slot(map, bucket, s, XlbVipSlot::default())?;
                    return self.write_slot(map, bucket, s, slot);
                }
            }
        }
        Err(VipTableError::Full {
            key: describe(&key),
            a,
            b,
        })
    }

    /// Removes `key` (`pad` 0) if present.
    ///
    /// Errors: the bucket write failed.
    pub fn remove(
        &mut self,
        map: &mut Array<&mut MapData, XlbVipBucket>,
        key: &XlbVipKey,
    ) -> Result<(), VipTableError> {
        match self.find(&plain(*key)) {
            Some((b, s)) => self.write_slot(map, b, s, XlbVipSlot::default()),
            None => Ok(()),
        }
    }
}
