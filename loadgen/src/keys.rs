//! The key space: which key id an operation touches (uniform or Zipf) and
//! the bytes of the key with that id.
//!
//! Invariants: a [`KeyChooser`] only returns ids in `0..keys`; with the same
//! seed it returns the same sequence (runs are reproducible); key names are
//! fixed-width, so every key of a run has the same length and ids map to
//! names one to one. Under Zipf, id 0 is the hottest key, id 1 the next, ...
//! (the targets hash keys, so hot ids do not share a shard by being close).

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::RngExt;
use rand_distr::{Distribution as _, Zipf};
use serde::{Deserialize, Serialize};

/// Keys a run may use: names carry 12 decimal digits.
pub const KEYS_MAX: u64 = 1_000_000_000_000;
/// Largest Zipf exponent accepted. Above a few, almost every request goes
/// to key 0, which measures one key's lock rather than the system; 0.99 is
/// YCSB's usual skew.
pub const ZIPF_THETA_MAX: f64 = 5.0;
/// Prefix of every key name.
pub const KEY_PREFIX: &str = "lg:";

/// How key ids are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Distribution {
    /// Every key equally likely.
    Uniform,
    /// Key of rank k (from 1) with probability proportional to 1/k^theta.
    Zipf { theta: f64 },
}

impl FromStr for Distribution {
    type Err = String;

    /// `uniform` or `zipf:THETA` with 0 < THETA <= [`ZIPF_THETA_MAX`].
    fn from_str(text: &str) -> Result<Self, String> {
        if text == "uniform" {
            return Ok(Distribution::Uniform);
        }
        let Some(theta_text) = text.strip_prefix("zipf:") else {
            return Err(format!("{text:?} is neither uniform nor zipf:THETA (e.g. zipf:0.99)"));
        };
        let theta: f64 =
            theta_text.parse().map_err(|_| format!("zipf theta {theta_text:?} is not a number (e.g. zipf:0.99)"))?;
        if !(theta > 0.0 && theta <= ZIPF_THETA_MAX) {
            return Err(format!(
                "zipf theta {theta_text} is out of range: it must be above 0 and at most {ZIPF_THETA_MAX}"
            ));
        }
        Ok(Distribution::Zipf { theta })
    }
}

impl fmt::Display for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Distribution::Uniform => f.write_str("uniform"),
            Distribution::Zipf { theta } => write!(f, "zipf:{theta}"),
        }
    }
}

/// Draws key ids in `0..keys`.
#[derive(Debug, Clone)]
pub struct KeyChooser {
    keys: u64,
    zipf: Option<Zipf<f64>>,
}

impl KeyChooser {
    /// A chooser over `keys` keys (at least 1) with `distribution`.
    pub fn new(keys: u64, distribution: Distribution) -> Result<Self, String> {
        if keys == 0 || keys > KEYS_MAX {
            return Err(format!("the key space must hold 1 to {KEYS_MAX} keys, not {keys}"));
        }
        let zipf = match distribution {
            Distribution::Uniform => None,
            Distribution::Zipf { theta } => {
                Some(Zipf::new(keys as f64, theta).map_err(|e| format!("zipf over {keys} keys, theta {theta}: {e}"))?)
            }
        };
        Ok(KeyChooser { keys, zipf })
    }

    /// The next key id.
    pub fn next(&self, rng: &mut SmallRng) -> u64 {
        match &self.zipf {
            None => rng.random_range(0..self.keys),
            // Zipf yields ranks 1..=n as floats; rank 1 is id 0.
            Some(zipf) => (zipf.sample(rng) as u64).saturating_sub(1).min(self.keys - 1),
        }
    }
}

/// The name of key `id`: `lg:000000000042`.
pub fn key_name(id: u64) -> Bytes {
    Bytes::from(format!("{KEY_PREFIX}{id:012}"))
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn distributions_parse() {
        assert_eq!("uniform".parse(), Ok(Distribution::Uniform));
        assert_eq!("zipf:0.99".parse(), Ok(Distribution::Zipf { theta: 0.99 }));
        assert_eq!("zipf:5".parse(), Ok(Distribution::Zipf { theta: 5.0 }));
        assert_eq!(Distribution::Zipf { theta: 0.99 }.to_string(), "zipf:0.99");
    }

    #[test]
    fn bad_distributions_say_why() {
        for (bad, why) in [
            ("zipf", "neither uniform nor zipf:THETA"),
            ("normal", "neither uniform nor zipf:THETA"),
            ("zipf:", "not a number"),
            ("zipf:hot", "not a number"),
            ("zipf:0", "out of range"),
            ("zipf:-1", "out of range"),
            ("zipf:5.01", "out of range"),
            ("zipf:NaN", "out of range"),
            ("zipf:inf", "out of range"),
        ] {
            let err = bad.parse::<Distribution>().expect_err(bad);
            assert!(err.contains(why), "{bad:?}: {err:?} should say {why:?}");
        }
    }

    #[test]
    fn ids_stay_in_range_and_repeat_with_the_seed() {
        for distribution in
            [Distribution::Uniform, Distribution::Zipf { theta: 0.99 }, Distribution::Zipf { theta: 3.0 }]
        {
            let chooser = KeyChooser::new(10, distribution).expect("valid");
            let draw = |seed| {
                let mut rng = SmallRng::seed_from_u64(seed);
                (0..2_000).map(|_| chooser.next(&mut rng)).collect::<Vec<u64>>()
            };
            let ids = draw(7);
            assert!(ids.iter().all(|&id| id < 10), "{distribution}: {ids:?}");
            assert_eq!(ids, draw(7), "{distribution}: same seed, same ids");
            assert_ne!(ids, draw(8), "{distribution}: another seed, other ids");
        }
        let one = KeyChooser::new(1, Distribution::Zipf { theta: 0.99 }).expect("one key");
        let mut rng = SmallRng::seed_from_u64(1);
        assert!((0..100).all(|_| one.next(&mut rng) == 0));
    }

    #[test]
    fn zipf_makes_low_ids_hot_and_uniform_does_not() {
        let count = |distribution| {
            let chooser = KeyChooser::new(1_000, distribution).expect("valid");
            let mut rng = SmallRng::seed_from_u64(3);
            let mut hits = vec![0u32; 1_000];
            for _ in 0..100_000 {
                hits[chooser.next(&mut rng) as usize] += 1;
            }
            hits
        };
        let zipf = count(Distribution::Zipf { theta: 0.99 });
        // Under theta 0.99 over 1000 keys key 0 gets about 13% of requests
        // and key 1 half as much; uniform gives every key about 0.1%.
        assert!(zipf[0] > 10_000 && zipf[0] > zipf[1] && zipf[1] > zipf[10], "{:?}", &zipf[..12]);
        let uniform = count(Distribution::Uniform);
        assert!(uniform.iter().all(|&h| h > 50 && h < 200), "uniform spread {:?}", &uniform[..12]);
    }

    #[test]
    fn key_space_limits() {
        assert!(KeyChooser::new(0, Distribution::Uniform).is_err());
        assert!(KeyChooser::new(KEYS_MAX + 1, Distribution::Uniform).is_err());
        assert!(KeyChooser::new(KEYS_MAX, Distribution::Zipf { theta: 0.99 }).is_ok());
    }

    #[test]
    fn key_names_are_fixed_width() {
        assert_eq!(key_name(42), Bytes::from_static(b"lg:000000000042"));
        assert_eq!(key_name(KEYS_MAX - 1).len(), key_name(0).len());
    }
}
