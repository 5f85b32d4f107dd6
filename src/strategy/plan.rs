//! What one batch gets: the mixing spec (the Mixup op's own config, [`MixSpec`]) and the
//! High-Loss Removal share. Plain numbers, so the engine stays tensor-free.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ops::mixup::MixSpec;

/// The engine's answer for one batch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BatchPlan {
    /// The step this plan is for.
    pub step: u64,
    /// Whether this step is inside the Enlightenment Period.
    pub in_ep: bool,
    /// How to mix the batch ([`MixSpec::forward`]); `alpha == 0` leaves it unmixed.
    pub mix: MixSpec,
    /// High-Loss Removal share r: the floor(r B) highest per-sample losses are dropped.
    pub drop_share: f64,
}

impl fmt::Display for BatchPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let phase = if self.in_ep { "EP" } else { "after EP" };
        write!(f, "step {} [{phase}] {}", self.step, self.mix)?;
        if self.drop_share > 0.0 {
            write!(f, ", drop top {:.1}% losses", 100.0 * self.drop_share)?;
        }
        Ok(())
    }
}
