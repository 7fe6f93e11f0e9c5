//! How many direct-descriptor slots a shard may need, and how they are laid out in rings.

use super::KERNEL_MAX_SLOTS;

/// How many direct-descriptor slots a shard may need, and how they are laid out in rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Slots per ring: min(RLIMIT_NOFILE, 1,048,576, connections).
    pub slots_per_ring: u32,
    /// Rings the shard may open for subscribers (at least 1).
    pub rings: u32,
}

impl Plan {
    /// The plan for `conns` subscribers in one shard under RLIMIT_NOFILE `nofile`.
    pub fn new(conns: usize, nofile: u64) -> Plan {
        let cap = nofile.min(u64::from(KERNEL_MAX_SLOTS)).max(64) as u32;
        let slots_per_ring = (conns.max(1) as u64).min(u64::from(cap)) as u32;
        let rings = (conns.max(1) as u64)
            .div_ceil(u64::from(slots_per_ring))
            .min(1024) as u32;
        Plan {
            slots_per_ring,
            rings,
        }
    }

    /// The plan for this process's soft RLIMIT_NOFILE.
    pub fn for_this_process(conns: usize) -> Plan {
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct it is given.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
        Plan::new(conns, rl.rlim_cur)
    }
}

#[cfg(test)]
mod tests {
    use super::Plan;

    #[test]
    fn plans() {
        assert_eq!(
            Plan::new(500_000, 20_000),
            Plan {
                slots_per_ring: 20_000,
                rings: 25
            }
        );
        assert_eq!(
            Plan::new(500_000, 1 << 20),
            Plan {
                slots_per_ring: 500_000,
                rings: 1
            }
        );
        assert_eq!(
            Plan::new(5_000, 20_000),
            Plan {
                slots_per_ring: 5_000,
                rings: 1
            }
        );
        assert_eq!(
            Plan::new(2_000_000, u64::MAX),
            Plan {
                slots_per_ring: 1 << 20,
                rings: 2
            }
        );
    }
}
