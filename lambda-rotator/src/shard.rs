//! `--shard I/N`: spread a large fleet over several schedules.
//!
//! Shard `I/N` (I from 1 to N) takes the hosts whose instance id hashes to I:
//! `fnv1a64(instance id) % N == I - 1`. FNV-1a is written out here rather than
//! taken from `std`, whose hashers are seeded per process: a host must land in the
//! same shard on every run, on every machine, in every release.

use std::fmt;
use std::str::FromStr;

/// One shard of the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    index: u32,
    count: u32,
}

/// Why a shard was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidShard;

impl fmt::Display for InvalidShard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a shard is I/N with 1 <= I <= N <= 1000, for example 2/4")
    }
}

impl std::error::Error for InvalidShard {}

impl FromStr for Shard {
    type Err = InvalidShard;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (index, count) = text.split_once('/').ok_or(InvalidShard)?;
        let parse = |s: &str| {
            if s.is_empty() || !s.chars().all(|c| c.is_ascii_digit()) {
                return Err(InvalidShard);
            }
            s.parse::<u32>().map_err(|_| InvalidShard)
        };
        let (index, count) = (parse(index)?, parse(count)?);
        if index == 0 || index > count || count > 1000 {
            return Err(InvalidShard);
        }
        Ok(Self { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// Whether this shard takes the host.
    pub fn contains(&self, instance_id: &str) -> bool {
        fnv1a64(instance_id.as_bytes()) % u64::from(self.count) == u64::from(self.index - 1)
    }
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        assert_eq!("2/4".parse::<Shard>().unwrap().to_string(), "2/4");
        assert_eq!("1/1".parse::<Shard>().unwrap().to_string(), "1/1");
        for bad in [
            "", "0/4", "5/4", "1/0", "a/b", "1/", "/4", "1-4", "-1/4", "+1/4", "1/1001",
        ] {
            assert_eq!(bad.parse::<Shard>(), Err(InvalidShard), "{bad:?}");
        }
    }

    #[test]
    fn hash_is_the_published_fnv1a() {
        // Reference values of FNV-1a 64.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn every_host_lands_in_exactly_one_shard_and_shards_are_balanced() {
        let shards: Vec<Shard> = (1..=4).map(|i| format!("{i}/4").parse().unwrap()).collect();
        let mut sizes = [0usize; 4];
        for n in 0..4000u32 {
            let id = format!("mi-{n:017x}");
            let owners: Vec<usize> = (0..4).filter(|&s| shards[s].contains(&id)).collect();
            assert_eq!(owners.len(), 1, "{id}");
            sizes[owners[0]] += 1;
        }
        for size in sizes {
            assert!((800..=1200).contains(&size), "{sizes:?}");
        }
    }
}
