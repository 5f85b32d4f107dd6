//! Ranks that start with different configurations (another batch size, model, seed) would
//! exchange tensors of different shapes or stop at different steps, and see only "Operation
//! timed out". At start-up every rank compares its configuration with rank 0's, and a
//! difference is an error on every rank naming the setting.

use super::config::TrainConfig;
use super::parallel::DataParallel;
use super::resume::flatten;
use crate::error::{Error, Result};

/// Settings that may differ between ranks: the device choice is per machine.
const PER_RANK: [&str; 1] = ["run.device"];
/// Bytes of the difference's description sent to every rank.
const MESSAGE: usize = 400;

/// Checks that every rank's `config` is rank 0's; the error names the first setting that
/// differs and the ranks' values.
pub fn check(parallel: &DataParallel, config: &TrainConfig) -> Result<()> {
    let mine = config.to_toml()?;
    let reference: String = parallel.broadcast_value(mine.clone())?;
    let difference = if parallel.rank() == 0 {
        None
    } else {
        first_difference(&reference, &mine, parallel.rank())?
    };
    let world = parallel.world_size();
    let mut flags = vec![0.0; world];
    flags[parallel.rank()] = f64::from(u8::from(difference.is_some()));
    let Some(rank) = parallel.sum(&flags)?.iter().position(|&f| f > 0.0) else {
        return Ok(());
    };
    // The first rank that differs tells every rank what differs (the others add zeros).
    let mut message = vec![0.0; MESSAGE];
    if rank == parallel.rank() {
        let text = difference.unwrap_or_default();
        for (slot, byte) in message.iter_mut().zip(text.bytes()) {
            *slot = f64::from(byte);
        }
    }
    let bytes: Vec<u8> = parallel
        .sum(&message)?
        .iter()
        .map(|&b| b as u8)
        .take_while(|&b| b != 0)
        .collect();
    Err(Error::Value {
        arg: "configuration",
        expected: "the same settings on every rank".into(),
        got: format!("rank {rank} differs from rank 0: {}", String::from_utf8_lossy(&bytes)),
    })
}

/// The first dotted key whose value differs between two configurations as TOML, with both values.
fn first_difference(reference: &str, mine: &str, rank: usize) -> Result<Option<String>> {
    let parse = |t: &str| -> Result<toml::Value> { toml::from_str(t).map_err(|e| Error::Config(e.to_string())) };
    let (a, b) = (flatten(&parse(reference)?), flatten(&parse(mine)?));
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let difference = keys
        .into_iter()
        .filter(|k| !PER_RANK.contains(&k.as_str()))
        .find(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            let show = |v: Option<&toml::Value>| v.map_or_else(|| "unset".into(), ToString::to_string);
            format!("{k} = {} on rank {rank}, {} on rank 0", show(b.get(k)), show(a.get(k)))
        });
    Ok(difference)
}
