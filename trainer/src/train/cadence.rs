//! `run.checkpoint_every`: checkpoints between epoch ends, every so many steps (`500`) or so much
//! wall time (`"10min"`, `"30s"`, `"2h"`), so that a crash loses minutes, not an epoch.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// How often a run checkpoints besides its epoch ends and its last step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointEvery {
    Steps(u64),
    Time(Duration),
}

impl Default for CheckpointEvery {
    /// Every 5 minutes: a crash loses at most that, and a checkpoint of even a large model
    /// takes seconds.
    fn default() -> CheckpointEvery {
        CheckpointEvery::Time(Duration::from_secs(300))
    }
}

impl CheckpointEvery {
    /// Whether step `step` (0-based, done) is a step-cadence checkpoint.
    pub fn step_due(&self, step: u64) -> bool {
        matches!(*self, CheckpointEvery::Steps(n) if (step + 1) % n == 0)
    }

    /// Whether `elapsed` since the last checkpoint calls for one (time cadence).
    pub fn time_due(&self, elapsed: Duration) -> bool {
        matches!(*self, CheckpointEvery::Time(t) if elapsed >= t)
    }

    pub fn is_time(&self) -> bool {
        matches!(self, CheckpointEvery::Time(_))
    }

    pub fn validate(&self) -> Result<()> {
        match *self {
            CheckpointEvery::Steps(0) => Err(Error::value(
                "run.checkpoint_every",
                "an interval >= 1 step, or a time such as \"10min\"",
                0,
            )),
            CheckpointEvery::Time(t) if t.is_zero() => Err(Error::value(
                "run.checkpoint_every",
                "a time > 0 such as \"10min\", or an interval in steps",
                self,
            )),
            _ => Ok(()),
        }
    }

    /// `"90s"`, `"10min"`, `"2h"` (a number and a unit).
    fn parse_time(text: &str) -> Option<Duration> {
        let text = text.trim();
        let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let (number, unit) = text.split_at(split);
        let number: f64 = number.parse().ok()?;
        let seconds = match unit.trim() {
            "s" | "sec" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        (number.is_finite() && number >= 0.0).then(|| Duration::from_secs_f64(number * seconds))
    }
}

impl fmt::Display for CheckpointEvery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            CheckpointEvery::Steps(n) => write!(f, "{n}"),
            CheckpointEvery::Time(t) if t.as_secs() % 3600 == 0 && t.subsec_nanos() == 0 && !t.is_zero() => {
                write!(f, "\"{}h\"", t.as_secs() / 3600)
            }
            CheckpointEvery::Time(t) if t.as_secs() % 60 == 0 && t.subsec_nanos() == 0 && !t.is_zero() => {
                write!(f, "\"{}min\"", t.as_secs() / 60)
            }
            CheckpointEvery::Time(t) => write!(f, "\"{}s\"", t.as_secs_f64()),
        }
    }
}

impl Serialize for CheckpointEvery {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match *self {
            CheckpointEvery::Steps(n) => s.serialize_u64(n),
            _ => s.serialize_str(self.to_string().trim_matches('"')),
        }
    }
}

impl<'de> Deserialize<'de> for CheckpointEvery {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<CheckpointEvery, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Steps(u64),
            Time(String),
        }
        let expected = "a number of steps (500) or a time (\"90s\", \"10min\", \"2h\")";
        match Raw::deserialize(d)
            .map_err(|_| serde::de::Error::custom(format!("checkpoint_every: expected {expected}")))?
        {
            Raw::Steps(n) => Ok(CheckpointEvery::Steps(n)),
            Raw::Time(text) => CheckpointEvery::parse_time(&text)
                .map(CheckpointEvery::Time)
                .ok_or_else(|| {
                    serde::de::Error::custom(format!("checkpoint_every: expected {expected}, got \"{text}\""))
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::CheckpointEvery;
    use std::time::Duration;

    #[test]
    fn steps_and_times_parse_and_print_as_written() {
        #[derive(serde::Deserialize, serde::Serialize)]
        struct T {
            every: CheckpointEvery,
        }
        for (text, value) in [
            ("every = 500", CheckpointEvery::Steps(500)),
            ("every = \"10min\"", CheckpointEvery::Time(Duration::from_secs(600))),
            ("every = \"2h\"", CheckpointEvery::Time(Duration::from_secs(7200))),
            ("every = \"90s\"", CheckpointEvery::Time(Duration::from_secs(90))),
        ] {
            let t: T = toml::from_str(text).unwrap();
            assert_eq!(t.every, value, "{text}");
            assert_eq!(toml::to_string(&t).unwrap().trim(), text);
        }
        let e = toml::from_str::<T>("every = \"soon\"").err().unwrap().to_string();
        assert!(e.contains("checkpoint_every") && e.contains("soon"), "{e}");
        assert!(CheckpointEvery::Steps(0).validate().is_err());
        assert!(CheckpointEvery::Steps(3).step_due(5) && !CheckpointEvery::Steps(3).step_due(4));
    }
}
