//! `success_despite_limits`: which sandbox limits a program may run into and still count as a
//! success when it passed every test. `false` (the default: none), `true` (any), or a list of
//! limits: `["processes", "disk"]`, named as the record's `outcome.limit` names them, and
//! `time` for the wall-clock limit.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use trawl_core::sandbox::{ExecOutcome, Limit};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Tolerated {
    #[default]
    None,
    All,
    Only(Vec<Tolerable>),
}

/// A limit a config may tolerate: one of the sandbox's limits, or the wall-clock time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tolerable {
    Cpu,
    Memory,
    Processes,
    FileSize,
    Output,
    Disk,
    Time,
}

impl Tolerable {
    fn of(limit: Limit) -> Self {
        match limit {
            Limit::Cpu => Tolerable::Cpu,
            Limit::Memory => Tolerable::Memory,
            Limit::Processes => Tolerable::Processes,
            Limit::FileSize => Tolerable::FileSize,
            Limit::Output => Tolerable::Output,
            Limit::Disk => Tolerable::Disk,
        }
    }
}

impl Tolerated {
    /// Whether a test run that ended with `outcome` (having passed every test) may still be a
    /// success. A program that exited by itself always may; one killed by a signal no limit
    /// explains only under `true`.
    pub fn allows(&self, outcome: &ExecOutcome) -> bool {
        let ran_into = match outcome {
            ExecOutcome::Exited { .. } => return true,
            ExecOutcome::LimitExceeded { limit } => Some(Tolerable::of(*limit)),
            ExecOutcome::TimedOut => Some(Tolerable::Time),
            ExecOutcome::Signaled { .. } => None,
        };
        match self {
            Tolerated::None => false,
            Tolerated::All => true,
            Tolerated::Only(list) => ran_into.is_some_and(|l| list.contains(&l)),
        }
    }
}

impl Serialize for Tolerated {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Tolerated::None => s.serialize_bool(false),
            Tolerated::All => s.serialize_bool(true),
            Tolerated::Only(list) => list.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Tolerated {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Tolerated;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "true, false, or a list of limits from cpu, memory, processes, file_size, output, disk, time",
                )
            }
            fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<Tolerated, E> {
                Ok(if b { Tolerated::All } else { Tolerated::None })
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Tolerated, A::Error> {
                let mut list = Vec::new();
                while let Some(l) = seq.next_element::<Tolerable>()? {
                    list.push(l);
                }
                Ok(Tolerated::Only(list))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Cfg {
        t: Tolerated,
    }

    fn parse(v: &str) -> Result<Tolerated, String> {
        toml::from_str::<Cfg>(&format!("t = {v}"))
            .map(|c| c.t)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn each_limit_is_tolerated_only_when_named() {
        let procs = ExecOutcome::LimitExceeded {
            limit: Limit::Processes,
        };
        let disk = ExecOutcome::LimitExceeded { limit: Limit::Disk };
        let only = parse(r#"["processes", "time"]"#).unwrap();
        assert!(only.allows(&procs));
        assert!(!only.allows(&disk));
        assert!(only.allows(&ExecOutcome::TimedOut));
        assert!(!only.allows(&ExecOutcome::Signaled { signal: 11 }));
        assert!(only.allows(&ExecOutcome::Exited { code: 0 }));
        assert!(!parse("false").unwrap().allows(&procs));
        assert!(parse("true")
            .unwrap()
            .allows(&ExecOutcome::Signaled { signal: 11 }));
        assert!(!Tolerated::default().allows(&disk));
    }

    #[test]
    fn an_unknown_limit_is_refused_naming_the_choices() {
        let e = parse(r#"["forks"]"#).unwrap_err();
        assert!(e.contains("forks") && e.contains("processes"), "{e}");
        let e = parse("3").unwrap_err();
        assert!(e.contains("a list of limits"), "{e}");
    }
}
