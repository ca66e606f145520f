//! Declaring block devices in configuration and building them in order.
//!
//! ```toml
//! [[bdev]]
//! module = "uring"
//! name = "pool0"
//! path = "/var/lib/basalt/pool0.img"
//!
//! [[bdev]]
//! module = "delay"
//! name = "slow0"
//! base = "pool0"
//! read_us = 500
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use crate::modules::delay::DelayBdev;
use crate::modules::error::{ErrorBdev, ErrorRule};
use crate::modules::malloc::MallocBdev;
use crate::modules::null::NullBdev;
use crate::modules::uring::{UringBdev, UringConfig};
use crate::{Bdev, BdevError};

/// A size in bytes, written as a number or with a binary suffix (`512M`, `2G`, `1T`, `4K`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ByteSize(pub u64);

impl std::str::FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (digits, mult) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
            None => (s, 1u64),
            Some((i, _)) => {
                // Binary units, case-insensitive: 4K, 4k, 4KB, 4KiB, 4 KiB; plain B for bytes.
                let unit = s[i..].trim();
                let mult = match unit.to_ascii_uppercase().as_str() {
                    "B" => 1,
                    "K" | "KB" | "KIB" => 1 << 10,
                    "M" | "MB" | "MIB" => 1 << 20,
                    "G" | "GB" | "GIB" => 1 << 30,
                    "T" | "TB" | "TIB" => 1 << 40,
                    _ => {
                        return Err(format!(
                            "unknown size unit {unit:?} in {s:?} (use K, M, G or T)"
                        ));
                    }
                };
                (&s[..i], mult)
            }
        };
        let n: u64 = digits.parse().map_err(|_| format!("{s:?} is not a size"))?;
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("{s:?} is too large"))
    }
}

impl<'de> serde::Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

fn default_block_size() -> u32 {
    512
}

fn default_true() -> bool {
    true
}

/// One block device in the configuration.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(tag = "module", rename_all = "kebab-case", deny_unknown_fields)]
pub enum BdevConfig {
    /// A file or block device through io_uring.
    Uring {
        /// Unique name.
        name: String,
        /// Regular file or block device.
        path: PathBuf,
        /// 512 or 4096; default: the device's (512 for files).
        #[serde(default)]
        block_size: Option<u32>,
        /// Open with O_DIRECT (default true).
        #[serde(default = "default_true")]
        direct: bool,
    },
    /// RAM.
    Malloc {
        /// Unique name.
        name: String,
        /// Capacity (`1G`, `512M`, or bytes).
        size: ByteSize,
        /// 512 or 4096 (default 512).
        #[serde(default = "default_block_size")]
        block_size: u32,
    },
    /// Discards writes, reads zeros.
    Null {
        /// Unique name.
        name: String,
        /// Capacity.
        size: ByteSize,
        /// 512 or 4096 (default 512).
        #[serde(default = "default_block_size")]
        block_size: u32,
    },
    /// Fails chosen I/Os of another bdev.
    Error {
        /// Unique name.
        name: String,
        /// The bdev underneath (declared earlier).
        base: String,
        /// Injection rules.
        #[serde(default)]
        rules: Vec<ErrorRule>,
        /// Seed of the per-core random choice.
        #[serde(default)]
        seed: u64,
    },
    /// Adds latency to another bdev.
    Delay {
        /// Unique name.
        name: String,
        /// The bdev underneath (declared earlier).
        base: String,
        /// Microseconds added to reads.
        #[serde(default)]
        read_us: u64,
        /// Microseconds added to writes.
        #[serde(default)]
        write_us: u64,
        /// Microseconds added to flushes, unmaps and write-zeroes.
        #[serde(default)]
        other_us: u64,
    },
}

impl BdevConfig {
    /// The declared name.
    pub fn name(&self) -> &str {
        match self {
            BdevConfig::Uring { name, .. }
            | BdevConfig::Malloc { name, .. }
            | BdevConfig::Null { name, .. }
            | BdevConfig::Error { name, .. }
            | BdevConfig::Delay { name, .. } => name,
        }
    }
}

fn blocks(size: ByteSize, block_size: u32) -> Result<u64, BdevError> {
    crate::check_block_size(block_size)?;
    if !size.0.is_multiple_of(u64::from(block_size)) {
        return Err(BdevError::Config(format!(
            "size {} is not a multiple of the block size {block_size}",
            size.0
        )));
    }
    Ok(size.0 / u64::from(block_size))
}

/// The block devices of one datapath, by name, in declaration order.
#[derive(Debug, Default, Clone)]
pub struct BdevSet {
    bdevs: Vec<Arc<dyn Bdev>>,
}

impl BdevSet {
    /// Builds every declared bdev; a stacked bdev's base must be declared before it.
    ///
    /// # Errors
    /// The first bdev that fails, a duplicate name or an unknown base.
    pub fn build(configs: &[BdevConfig]) -> Result<BdevSet, BdevError> {
        let mut set = BdevSet::default();
        for cfg in configs {
            let bdev = set.build_one(cfg)?;
            set.insert(bdev)?;
        }
        Ok(set)
    }

    fn build_one(&self, cfg: &BdevConfig) -> Result<Arc<dyn Bdev>, BdevError> {
        Ok(match cfg {
            BdevConfig::Uring {
                name,
                path,
                block_size,
                direct,
            } => {
                let c = UringConfig {
                    path: path.clone(),
                    block_size: *block_size,
                    direct: *direct,
                };
                Arc::new(UringBdev::open(name, &c)?)
            }
            BdevConfig::Malloc {
                name,
                size,
                block_size,
            } => Arc::new(MallocBdev::new(
                name,
                *block_size,
                blocks(*size, *block_size)?,
            )?),
            BdevConfig::Null {
                name,
                size,
                block_size,
            } => Arc::new(NullBdev::new(
                name,
                *block_size,
                blocks(*size, *block_size)?,
            )?),
            BdevConfig::Error {
                name,
                base,
                rules,
                seed,
            } => Arc::new(ErrorBdev::new(
                name,
                self.require(base)?,
                rules.clone(),
                *seed,
            )?),
            BdevConfig::Delay {
                name,
                base,
                read_us,
                write_us,
                other_us,
            } => Arc::new(DelayBdev::new(
                name,
                self.require(base)?,
                *read_us,
                *write_us,
                *other_us,
            )),
        })
    }

    fn require(&self, name: &str) -> Result<Arc<dyn Bdev>, BdevError> {
        self.get(name)
            .ok_or_else(|| BdevError::NotFound(name.to_owned()))
    }

    /// Adds a bdev built elsewhere.
    ///
    /// # Errors
    /// [`BdevError::Exists`] on a duplicate name.
    pub fn insert(&mut self, bdev: Arc<dyn Bdev>) -> Result<(), BdevError> {
        if self.get(bdev.name()).is_some() {
            return Err(BdevError::Exists(bdev.name().to_owned()));
        }
        self.bdevs.push(bdev);
        Ok(())
    }

    /// The bdev named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Bdev>> {
        self.bdevs.iter().find(|b| b.name() == name).cloned()
    }

    /// Every bdev, in declaration order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Bdev>> {
        self.bdevs.iter()
    }

    /// Number of bdevs.
    pub fn len(&self) -> usize {
        self.bdevs.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.bdevs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!("4096".parse::<ByteSize>(), Ok(ByteSize(4096)));
        assert_eq!("4K".parse::<ByteSize>(), Ok(ByteSize(4096)));
        assert_eq!("2G".parse::<ByteSize>(), Ok(ByteSize(2 << 30)));
        assert_eq!("512MiB".parse::<ByteSize>(), Ok(ByteSize(512 << 20)));
        assert!("12Q".parse::<ByteSize>().is_err());
        assert!("G".parse::<ByteSize>().is_err());
        assert!("99999999999T".parse::<ByteSize>().is_err());
        assert_eq!("4 KiB".parse::<ByteSize>(), Ok(ByteSize(4096)));
        assert_eq!("64kb".parse::<ByteSize>(), Ok(ByteSize(64 << 10)));
        assert_eq!("100B".parse::<ByteSize>(), Ok(ByteSize(100)));
        for junk in ["4iB", "4Kiiii", "4KiBBB", "4bb", "1.5G", "-1"] {
            assert!(junk.parse::<ByteSize>().is_err(), "{junk} accepted");
        }
    }

    #[test]
    fn stacked_bdevs_build_in_order_and_refuse_unknown_bases() {
        #[derive(serde::Deserialize)]
        struct F {
            bdev: Vec<BdevConfig>,
        }
        let f: F = toml::from_str(
            r#"
            [[bdev]]
            module = "malloc"
            name = "ram"
            size = "1M"
            [[bdev]]
            module = "error"
            name = "flaky"
            base = "ram"
            rules = [{ ops = ["write"], probability = 0.5 }]
            [[bdev]]
            module = "delay"
            name = "slow"
            base = "flaky"
            read_us = 100
            "#,
        )
        .expect("valid toml");
        let set = BdevSet::build(&f.bdev).expect("builds");
        assert_eq!(set.len(), 3);
        assert_eq!(set.get("slow").expect("slow").geometry().num_blocks, 2048);
        let bad = [BdevConfig::Delay {
            name: "d".into(),
            base: "nope".into(),
            read_us: 0,
            write_us: 0,
            other_us: 0,
        }];
        assert!(matches!(BdevSet::build(&bad), Err(BdevError::NotFound(n)) if n == "nope"));
        let unknown = toml::from_str::<F>(
            "[[bdev]]\nmodule = \"malloc\"\nname = \"x\"\nsize = 4096\ncolour = 1\n",
        );
        assert!(unknown.is_err(), "unknown fields are refused");
    }
}
