//! Where this process stands in a job, read from the variables torchrun (and `enlighten train
//! --nproc`) set: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT.

use std::ffi::OsString;

use crate::error::{Error, Result};

/// One process's place in a job of `world_size` processes meeting at `master_addr:master_port`
/// (rank 0 serves the rendezvous store there). `local_rank` is the rank on this machine: process
/// `local_rank` uses `cuda:local_rank`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    pub rank: usize,
    pub world_size: usize,
    pub local_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
}

impl Env {
    /// The job described by this process's environment: `None` when WORLD_SIZE is not set (not
    /// launched as part of a job), else every variable parsed and checked, an error naming the
    /// variable that is missing, malformed or inconsistent.
    pub fn from_env() -> Result<Option<Env>> {
        Env::from_lookup(std::env::var_os)
    }

    /// As [`Env::from_env`], reading each variable through `get` instead of the process
    /// environment (launchers and tests describe a job without touching global state).
    pub fn from_lookup(get: impl Fn(&'static str) -> Option<OsString>) -> Result<Option<Env>> {
        let Some(world_size) = text(&get, "WORLD_SIZE")? else {
            return Ok(None);
        };
        let required = |name: &'static str| -> Result<String> {
            text(&get, name)?.ok_or_else(|| Error::value(name, "to be set when WORLD_SIZE is set", "nothing"))
        };
        let env = Env {
            world_size: integer("WORLD_SIZE", &world_size)?,
            rank: integer("RANK", &required("RANK")?)?,
            local_rank: integer("LOCAL_RANK", &required("LOCAL_RANK")?)?,
            master_addr: required("MASTER_ADDR")?.trim().to_string(),
            master_port: integer("MASTER_PORT", &required("MASTER_PORT")?)?,
        };
        env.validate()?;
        if let Some(local_world) = text(&get, "LOCAL_WORLD_SIZE")? {
            let local_world: usize = integer("LOCAL_WORLD_SIZE", &local_world)?;
            if env.local_rank >= local_world {
                let expected = format!("an integer below LOCAL_WORLD_SIZE = {local_world}");
                return Err(Error::value("LOCAL_RANK", expected, env.local_rank));
            }
        }
        Ok(Some(env))
    }

    /// Checks what every job needs, naming the variable at fault: at least one process, a rank
    /// and a local rank inside the job, an address and a port to meet at.
    pub fn validate(&self) -> Result<()> {
        if self.world_size == 0 {
            return Err(Error::value("WORLD_SIZE", "at least 1", 0));
        }
        if self.rank >= self.world_size {
            let expected = format!("an integer below WORLD_SIZE = {}", self.world_size);
            return Err(Error::value("RANK", expected, self.rank));
        }
        if self.local_rank >= self.world_size {
            let expected = format!("an integer below WORLD_SIZE = {}", self.world_size);
            return Err(Error::value("LOCAL_RANK", expected, self.local_rank));
        }
        if self.master_addr.is_empty() || self.master_addr.contains('\0') {
            return Err(Error::value(
                "MASTER_ADDR",
                "a host name or address",
                format!("{:?}", self.master_addr),
            ));
        }
        if self.master_port == 0 {
            return Err(Error::value("MASTER_PORT", "a port in 1..=65535", 0));
        }
        Ok(())
    }
}

/// The variable's value as text; `None` when unset; an error when it is not UTF-8.
fn text(get: &impl Fn(&'static str) -> Option<OsString>, name: &'static str) -> Result<Option<String>> {
    match get(name) {
        None => Ok(None),
        Some(value) => value
            .into_string()
            .map(Some)
            .map_err(|raw| Error::value(name, "UTF-8 text", format!("{raw:?}"))),
    }
}

fn integer<T: std::str::FromStr>(name: &'static str, value: &str) -> Result<T> {
    value.trim().parse().map_err(|_| {
        let range = format!("a non-negative integer that fits {}", std::any::type_name::<T>());
        Error::value(name, range, format!("{value:?}"))
    })
}
