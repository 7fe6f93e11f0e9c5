//! `/proc/slabinfo` (format 2.1, SLUB): one [`SlabCache`] per line, and the difference of two
//! readings per cache ([`SlabDelta`]).
//!
//! Source: slabinfo(5) and mm/slab_common.c (`cache_show`): after two header lines, one line
//! per cache, `name active_objs num_objs objsize objperslab pagesperslab : tunables ... :
//! slabdata active_slabs num_slabs sharedavail`. Memory a cache holds = num_slabs x
//! pagesperslab pages (the pages are taken from the page allocator whole; objects free inside
//! them still count as used by MemAvailable). SLUB merges caches of the same size and flags
//! (`slab_nomerge` turns that off): a merged cache is listed under one name only, e.g.
//! `eventpoll_pwq` usually appears as part of another 72- or 80-byte cache.
//!
//! The file is mode 0400 (root only): without root [`read`] gives `None` and the breakdown
//! keeps only what /proc/meminfo and /proc/net/sockstat tell (readable by anyone).

use std::collections::HashMap;

/// One cache of a /proc/slabinfo reading.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SlabCache {
    /// The cache's name (`TCP`, `kmalloc-256`...).
    pub name: String,
    /// Objects in use.
    pub active_objs: u64,
    /// Objects allocated (in use or free in a slab).
    pub num_objs: u64,
    /// Bytes of one object, with the allocator's padding.
    pub objsize: u64,
    /// Objects per slab.
    pub objs_per_slab: u64,
    /// Pages per slab.
    pub pages_per_slab: u64,
    /// Slabs held.
    pub num_slabs: u64,
    /// Its objects count as reclaimable (SReclaimable; MemAvailable counts them as
    /// available): `/sys/kernel/slab/NAME/reclaim_account` is 1. Not in /proc/slabinfo.
    pub reclaimable: bool,
}

impl SlabCache {
    /// Bytes of slab pages per object: pagesperslab x `page` / objperslab (the object, its
    /// padding and its share of the slab's unused tail).
    pub(crate) fn obj_bytes(&self, page: u64) -> f64 {
        if self.objs_per_slab == 0 {
            return self.objsize as f64;
        }
        (self.pages_per_slab * page) as f64 / self.objs_per_slab as f64
    }

    /// Bytes of pages the cache holds (num_slabs x pagesperslab x `page` bytes).
    pub(crate) fn bytes(&self, page: u64) -> u64 {
        self.num_slabs * self.pages_per_slab * page
    }
}

/// A whole /proc/slabinfo reading, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SlabInfo {
    /// The caches, in the file's order.
    pub caches: Vec<SlabCache>,
}

/// The change of one cache between two readings.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct SlabDelta {
    /// The cache's name.
    pub name: String,
    /// Bytes of one object.
    pub objsize: u64,
    /// Change of objects in use.
    pub objs: i64,
    /// Change of the bytes of pages the cache holds.
    pub bytes: i64,
    /// Change of objects in use x [`SlabCache::obj_bytes`]: what the objects themselves
    /// take, whatever free room the cache had in its slabs before.
    pub obj_bytes: i64,
    /// The cache is reclaimable ([`SlabCache::reclaimable`]).
    pub reclaimable: bool,
}

/// The page size, bytes.
pub(crate) fn page_size() -> u64 {
    // SAFETY: sysconf has no memory effects.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64
}

/// Reads /proc/slabinfo, and for each cache `/sys/kernel/slab/NAME/reclaim_account`; `None`
/// if /proc/slabinfo cannot be read (not root) or has no cache line.
pub(crate) fn read() -> Option<SlabInfo> {
    let text = std::fs::read_to_string("/proc/slabinfo").ok()?;
    let mut info = parse(&text);
    for c in &mut info.caches {
        let f = format!("/sys/kernel/slab/{}/reclaim_account", c.name);
        c.reclaimable = std::fs::read_to_string(f).is_ok_and(|t| t.trim() == "1");
    }
    (!info.caches.is_empty()).then_some(info)
}

/// Parses a /proc/slabinfo text (version 2.x): the header and malformed lines are skipped.
pub(crate) fn parse(text: &str) -> SlabInfo {
    let caches = text.lines().filter_map(parse_line).collect();
    SlabInfo { caches }
}

/// One cache line: `name active num objsize perslab pages : tunables a b c : slabdata x y z`.
fn parse_line(line: &str) -> Option<SlabCache> {
    if line.starts_with('#') || line.starts_with("slabinfo") {
        return None;
    }
    let mut w = line.split_whitespace();
    let name = w.next()?.to_string();
    let mut num = || w.next()?.parse::<u64>().ok();
    let (active_objs, num_objs, objsize, objs_per_slab, pages_per_slab) =
        (num()?, num()?, num()?, num()?, num()?);
    let slabdata = line.split(": slabdata").nth(1)?;
    let num_slabs = slabdata.split_whitespace().nth(1)?.parse().ok()?;
    Some(SlabCache {
        name,
        active_objs,
        num_objs,
        objsize,
        objs_per_slab,
        pages_per_slab,
        num_slabs,
        reclaimable: false,
    })
}

impl SlabInfo {
    /// Bytes of pages held by every cache together.
    #[cfg(test)]
    pub(crate) fn total_bytes(&self, page: u64) -> u64 {
        self.caches.iter().map(|c| c.bytes(page)).sum()
    }

    /// Every cache's change from `before` to `self` (a cache missing from one reading counts
    /// as empty there), in `self`'s order then the ones only `before` has.
    pub(crate) fn delta(&self, before: &SlabInfo, page: u64) -> Vec<SlabDelta> {
        let old: HashMap<&str, &SlabCache> =
            before.caches.iter().map(|c| (c.name.as_str(), c)).collect();
        let empty = SlabCache::default();
        let mut out: Vec<SlabDelta> = self
            .caches
            .iter()
            .map(|c| {
                let b = old.get(c.name.as_str()).copied().unwrap_or(&empty);
                let objs = c.active_objs as i64 - b.active_objs as i64;
                SlabDelta {
                    obj_bytes: (objs as f64 * c.obj_bytes(page)).round() as i64,
                    name: c.name.clone(),
                    objsize: c.objsize,
                    objs,
                    bytes: c.bytes(page) as i64 - b.bytes(page) as i64,
                    reclaimable: c.reclaimable,
                }
            })
            .collect();
        let now: HashMap<&str, ()> = self.caches.iter().map(|c| (c.name.as_str(), ())).collect();
        for b in before
            .caches
            .iter()
            .filter(|b| !now.contains_key(b.name.as_str()))
        {
            out.push(SlabDelta {
                obj_bytes: -((b.active_objs as f64 * b.obj_bytes(page)).round() as i64),
                name: b.name.clone(),
                objsize: b.objsize,
                objs: -(b.active_objs as i64),
                bytes: -(b.bytes(page) as i64),
                reclaimable: b.reclaimable,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::{parse, SlabCache};

    /// A /proc/slabinfo captured on the project's 2-vCPU box (Linux 6.18, SLUB).
    const REAL: &str = include_str!("testdata/slabinfo-6.18.txt");

    #[test]
    fn parses_a_real_file() {
        let s = parse(REAL);
        assert_eq!(s.caches.len(), REAL.lines().count() - 2);
        let tcp = s.caches.iter().find(|c| c.name == "TCP").unwrap();
        assert_eq!(
            *tcp,
            SlabCache {
                name: "TCP".into(),
                active_objs: 28649,
                num_objs: 29991,
                objsize: 2368,
                objs_per_slab: 13,
                pages_per_slab: 8,
                num_slabs: 2307,
                reclaimable: false,
            }
        );
        assert_eq!(tcp.bytes(4096), 2307 * 8 * 4096);
        assert_eq!(tcp.obj_bytes(4096), 8.0 * 4096.0 / 13.0);
        assert!(s.total_bytes(4096) > 0);
        assert!(parse("slabinfo - version: 2.1\nbad line\n")
            .caches
            .is_empty());
    }

    #[test]
    fn delta_per_cache() {
        let before = parse(REAL);
        let mut after = before.clone();
        let tcp = after.caches.iter_mut().find(|c| c.name == "TCP").unwrap();
        tcp.active_objs += 1300;
        tcp.num_slabs += 100;
        after.caches.retain(|c| c.name != "filp");
        after.caches.push(SlabCache {
            name: "new".into(),
            active_objs: 5,
            objsize: 64,
            objs_per_slab: 64,
            pages_per_slab: 1,
            num_slabs: 1,
            ..SlabCache::default()
        });
        let d = after.delta(&before, 4096);
        let get = |n: &str| d.iter().find(|x| x.name == n).unwrap().clone();
        assert_eq!((get("TCP").objs, get("TCP").bytes), (1300, 100 * 8 * 4096));
        assert_eq!(
            (get("filp").objs, get("filp").bytes),
            (-28383, -1442 * 4096)
        );
        assert_eq!((get("new").objs, get("new").bytes), (5, 4096));
        assert_eq!(get("dentry").bytes, 0);
        assert_eq!(
            get("TCP").obj_bytes,
            (1300.0 * 8.0 * 4096.0 / 13.0_f64).round() as i64
        );
        assert_eq!(get("new").obj_bytes, 5 * 64);
        let sum: i64 = d.iter().map(|x| x.bytes).sum();
        assert_eq!(
            sum,
            after.total_bytes(4096) as i64 - before.total_bytes(4096) as i64
        );
    }
}
