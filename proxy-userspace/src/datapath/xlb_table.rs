//! The XDP balancer's VIP tables ([`proxy_common::XLB_VIPS`],
//! [`proxy_common::XLB_VIPS6`]) from userspace: arrays of two-choice
//! buckets the daemon places keys in (the program compares a key with the
//! slots of its two buckets, [`proxy_common::vip_buckets`] /
//! [`proxy_common::vip_buckets6`]), mirrored here so a change writes only
//! the buckets it touches. One [`VipTable`] per address family
//! ([`VipFamily`]: [`V4`] here, `V6` in [`super::xlb6`]).
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

/// One address family's VIP table layout: its key, bucket and slot
/// encodings and the hash placing a key in two buckets.
pub(super) trait VipFamily {
    /// The key (`pad` 0 as callers name it, [`XLB_VIP_USED`] in a slot).
    type Key: Copy + Eq + Default + Ord + std::hash::Hash + aya::Pod;
    /// A VIP address as the key encodes it (network order).
    type Addr: Copy + Eq + std::hash::Hash;
    /// A bucket, the map's value.
    type Bucket: Copy + Default + aya::Pod;
    /// The map's name.
    const MAP: &'static str;
    /// The name of the family's ring map (ring id → [`proxy_common::MaglevTable`]).
    const RINGS: &'static str;
    /// Buckets in the map.
    const BUCKETS: u32;
    /// Slots per bucket.
    const SLOTS: usize;
    /// `key` with its `pad` byte set to `pad`.
    fn with_pad(key: Self::Key, pad: u8) -> Self::Key;
    /// The key's `pad` byte.
    fn pad(key: &Self::Key) -> u8;
    /// The two buckets of `key` (`pad` 0), as the program computes them.
    fn buckets(key: &Self::Key) -> [u32; 2];
    /// Slot `s` of `bucket`: its key and value.
    fn slot(bucket: &Self::Bucket, s: usize) -> (Self::Key, XlbVip);
    /// Writes slot `s` of `bucket` (all zero for `Default` key and value).
    fn set_slot(bucket: &mut Self::Bucket, s: usize, key: Self::Key, vip: XlbVip);
    /// `address:port/protocol` of a key, for messages.
    fn describe(key: &Self::Key) -> String;
    /// The VIP address of `key`.
    fn addr(key: &Self::Key) -> Self::Addr;
    /// The address marker entry's key of VIP address `addr` (port and
    /// protocol 0).
    fn marker(addr: Self::Addr) -> Self::Key;
}

/// IPv4's VIP table, [`proxy_common::XLB_VIPS`].
pub(super) struct V4;

impl VipFamily for V4 {
    type Key = XlbVipKey;
    type Addr = u32;
    type Bucket = XlbVipBucket;
    const MAP: &'static str = proxy_common::XLB_VIPS;
    const RINGS: &'static str = proxy_common::XLB_RINGS;
    const BUCKETS: u32 = XLB_VIP_BUCKETS;
    const SLOTS: usize = XLB_VIP_BUCKET_SLOTS;
    fn with_pad(key: XlbVipKey, pad: u8) -> XlbVipKey {
        XlbVipKey { pad, ..key }
    }
    fn pad(key: &XlbVipKey) -> u8 {
        key.pad
    }
    fn buckets(key: &XlbVipKey) -> [u32; 2] {
        vip_buckets(key.word())
    }
    fn slot(bucket: &XlbVipBucket, s: usize) -> (XlbVipKey, XlbVip) {
        (bucket.slots[s].key, bucket.slots[s].vip)
    }
    fn set_slot(bucket: &mut XlbVipBucket, s: usize, key: XlbVipKey, vip: XlbVip) {
        bucket.slots[s] = XlbVipSlot { key, vip };
    }
    fn describe(key: &XlbVipKey) -> String {
        describe(key)
    }
    fn addr(key: &XlbVipKey) -> u32 {
        key.vip
    }
    fn marker(vip: u32) -> XlbVipKey {
        XlbVipKey {
            vip,
            port: 0,
            proto: 0,
            pad: 0,
        }
    }
}

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

fn map_err<F: VipFamily>(source: aya::maps::MapError) -> VipTableError {
    VipTableError::Map {
        name: F::MAP,
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
pub(super) struct VipTable<F: VipFamily> {
    buckets: Vec<F::Bucket>,
}

impl<F: VipFamily> Default for VipTable<F> {
    fn default() -> Self {
        Self {
            buckets: vec![F::Bucket::default(); F::BUCKETS as usize],
        }
    }
}

/// The key with `pad` 0 (as callers name it).
fn plain<F: VipFamily>(k: F::Key) -> F::Key {
    F::with_pad(k, 0)
}

impl<F: VipFamily> VipTable<F> {
    /// The table in `map` (pinned by an earlier run, or empty).
    ///
    /// Errors: a bucket cannot be read.
    pub fn read(map: &Array<&MapData, F::Bucket>) -> Result<Self, VipTableError> {
        let mut t = Self::default();
        for (i, b) in t.buckets.iter_mut().enumerate() {
            *b = map.get(&(i as u32), 0).map_err(map_err::<F>)?;
        }
        Ok(t)
    }

    /// Every entry: (key with `pad` 0, value).
    pub fn entries(&self) -> impl Iterator<Item = (F::Key, XlbVip)> + '_ {
        self.buckets
            .iter()
            .flat_map(|b| (0..F::SLOTS).map(move |s| F::slot(b, s)))
            .filter(|(k, _)| F::pad(k) == XLB_VIP_USED)
            .map(|(k, v)| (plain::<F>(k), v))
    }

    /// Where `key` (`pad` 0) sits: (bucket, slot).
    fn find(&self, key: &F::Key) -> Option<(u32, usize)> {
        let want = F::with_pad(*key, XLB_VIP_USED);
        for b in F::buckets(key) {
            let bucket = &self.buckets[b as usize];
            if let Some(s) = (0..F::SLOTS).position(|s| F::slot(bucket, s).0 == want) {
                return Some((b, s));
            }
        }
        None
    }

    fn free_slot(&self, b: u32) -> Option<usize> {
        let bucket = &self.buckets[b as usize];
        (0..F::SLOTS).position(|s| F::pad(&F::slot(bucket, s).0) != XLB_VIP_USED)
    }

    fn used(&self, b: u32) -> usize {
        let bucket = &self.buckets[b as usize];
        (0..F::SLOTS)
            .filter(|s| F::pad(&F::slot(bucket, *s).0) == XLB_VIP_USED)
            .count()
    }

    fn write_slot(
        &mut self,
        map: &mut Array<&mut MapData, F::Bucket>,
        b: u32,
        s: usize,
        slot: (F::Key, XlbVip),
    ) -> Result<(), VipTableError> {
        let mut bucket = self.buckets[b as usize];
        F::set_slot(&mut bucket, s, slot.0, slot.1);
        map.set(b, bucket, 0).map_err(map_err::<F>)?;
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
        map: &mut Array<&mut MapData, F::Bucket>,
        key: &F::Key,
        vip: XlbVip,
    ) -> Result<(), VipTableError> {
        let key = plain::<F>(*key);
        let slot = (F::with_pad(key, XLB_VIP_USED), vip);
        if let Some((b, s)) = self.find(&key) {
            if F::slot(&self.buckets[b as usize], s).1 != vip {
                // Same key: only the value word changes.
                self.write_slot(map, b, s, slot)?;
            }
            return Ok(());
        }
        let [a, b] = F::buckets(&key);
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
            for s in 0..F::SLOTS {
                let resident = F::slot(&self.buckets[bucket as usize], s);
                let [ra, rb] = F::buckets(&plain::<F>(resident.0));
                let other = if ra == bucket { rb } else { ra };
                if other == bucket {
                    continue;
                }
                if let Some(free) = self.free_slot(other) {
                    self.write_slot(map, other, free, resident)?;
                    self.write_slot(map, bucket, s, Default::default())?;
                    return self.write_slot(map, bucket, s, slot);
                }
            }
        }
        Err(VipTableError::Full {
            key: F::describe(&key),
            a,
            b,
        })
    }

    /// Removes `key` (`pad` 0) if present.
    ///
    /// Errors: the bucket write failed.
    pub fn remove(
        &mut self,
        map: &mut Array<&mut MapData, F::Bucket>,
        key: &F::Key,
    ) -> Result<(), VipTableError> {
        match self.find(&plain::<F>(*key)) {
            Some((b, s)) => self.write_slot(map, b, s, Default::default()),
            None => Ok(()),
        }
    }
}
