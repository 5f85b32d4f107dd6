//! The trainer's error type: its own argument, data, checkpoint and process errors, and the
//! library's errors (ops, strategy engine, CUDA) passed through. Every argument error names the
//! argument, what was expected and what came, so a message alone tells the user what to fix.

use std::path::PathBuf;

/// Result alias used throughout the trainer.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in a training run, a dataset, a comparison or a data-parallel job.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting or a value read from data is out of its allowed range.
    #[error("`{arg}`: expected {expected}, got {got}")]
    Value {
        /// The setting or argument, as the user names it.
        arg: &'static str,
        /// What would have been accepted.
        expected: String,
        /// What came.
        got: String,
    },

    /// A tensor has the wrong shape or rank, or two tensors disagree.
    #[error("`{arg}`: expected shape {expected}, got {got}")]
    Shape {
        /// The tensor.
        arg: &'static str,
        /// The shape that would have been accepted.
        expected: String,
        /// The shape that came.
        got: String,
    },

    /// A tensor has a dtype a collective or a bucket does not accept.
    #[error("`{arg}`: expected dtype {expected}, got {got:?}")]
    Dtype {
        /// The tensor.
        arg: &'static str,
        /// The dtypes that would have been accepted.
        expected: String,
        /// The dtype that came.
        got: tch::Kind,
    },

    /// A collective's tensor must be contiguous.
    #[error("`{arg}`: expected a contiguous tensor, got strides {strides:?} for size {size:?}")]
    NotContiguous {
        /// The tensor.
        arg: &'static str,
        /// Its size.
        size: Vec<i64>,
        /// Its strides.
        strides: Vec<i64>,
    },

    /// A data file is missing or not in the expected format; the hint says how to fetch it.
    #[error("{}: {problem} ({hint})", path.display())]
    Data {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
        /// How to put it right.
        hint: String,
    },

    /// A training run was interrupted; its state is in the checkpoint and `--resume` continues it.
    #[error("interrupted after step {step}; checkpoint written to {}; continue with --resume", checkpoint.display())]
    Interrupted {
        /// The last step taken.
        step: u64,
        /// The checkpoint written at that step.
        checkpoint: PathBuf,
    },

    /// A configuration file could not be parsed (the message names the line and field).
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A checkpoint could not be written or read back, or does not belong to this run.
    #[error("checkpoint {}: {problem}", path.display())]
    Checkpoint {
        /// The checkpoint's folder or file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },

    /// `--resume` with settings that define the run changed from the run's record (its
    /// config.toml): resuming would mix two runs under one name.
    #[error("cannot resume {}: settings that define the run differ from its config.toml: {differences}; undo them, or start a new run (another run.name)", run_dir.display())]
    Resume {
        /// The run's folder.
        run_dir: PathBuf,
        /// Each differing setting, with its new and recorded values.
        differences: String,
    },

    /// A value could not be written as JSON (`what` names the file or record).
    #[error("{what}: cannot write as JSON: {message}")]
    Json {
        /// The file or record.
        what: String,
        /// The serializer's message.
        message: String,
    },

    /// The training loss stopped being finite; the run stops and keeps its last checkpoint.
    #[error("`loss`: expected a finite training loss, got {loss} at step {step} ({})", kept_checkpoint(.checkpoint))]
    Diverged {
        /// The step whose loss was not finite.
        step: u64,
        /// That loss.
        loss: f64,
        /// The step of the last checkpoint written, the one kept (none yet: nothing to resume).
        checkpoint: Option<u64>,
    },

    /// Something the trainer itself guarantees did not hold: a bug, or a helper thread that died.
    #[error("internal error: {0}")]
    Internal(String),

    /// libtorch's C++, reached through the trainer's bridge (c10d), reported an error.
    #[error("libtorch ({operation}): {message}")]
    Libtorch {
        /// The bridge call.
        operation: &'static str,
        /// libtorch's message, without its C++ backtrace.
        message: String,
    },

    /// A rank of a data-parallel job did not answer in time: `who` names it (the rank waited
    /// on, not the one that waited).
    #[error("{during}: {who} did not answer within {seconds} s (run.collective_timeout_s)")]
    NoAnswer {
        /// What was being waited for.
        during: &'static str,
        /// The rank (or ranks) that did not answer.
        who: String,
        /// The timeout.
        seconds: u64,
    },

    /// A rank of a data-parallel job failed (`--nproc`): it could not start, or exited with a
    /// failure, which stopped the other ranks. The problem says how and quotes its log.
    #[error("rank {rank} stopped the job: {problem}")]
    Launch {
        /// The rank.
        rank: usize,
        /// How it failed.
        problem: String,
    },

    /// An op, the strategy engine or the CUDA glue of the library reported an error.
    #[error(transparent)]
    Ops(#[from] enlighten::Error),

    /// An error raised by libtorch through tch.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

impl Error {
    pub(crate) fn value(arg: &'static str, expected: impl Into<String>, got: impl ToString) -> Self {
        Error::Value {
            arg,
            expected: expected.into(),
            got: got.to_string(),
        }
    }

    pub(crate) fn shape(arg: &'static str, expected: impl Into<String>, got: &[i64]) -> Self {
        Error::Shape {
            arg,
            expected: expected.into(),
            got: format!("{got:?}"),
        }
    }

    /// A file or folder of the output could not be written.
    pub(crate) fn unwritable(path: impl Into<PathBuf>, problem: impl std::fmt::Display) -> Self {
        Error::Data {
            path: path.into(),
            problem: problem.to_string(),
            hint: "the output folder must be writable".into(),
        }
    }

    /// A value could not be written as JSON; `what` names the file or record.
    pub(crate) fn json(what: impl Into<String>, err: impl std::fmt::Display) -> Self {
        Error::Json {
            what: what.into(),
            message: err.to_string(),
        }
    }
}

/// The trainer's C++ bridge (c10d) follows the library's convention: a code and a message that
/// becomes [`Error::Libtorch`]. `message` is what a bridge call wrote (null or a message of
/// `enl_guard`'s), freed here.
pub(crate) fn check_bridge(
    operation: &'static str,
    code: std::ffi::c_int,
    message: *mut std::ffi::c_char,
) -> Result<()> {
    // SAFETY: every caller passes the message slot a bridge call has just filled.
    unsafe { enlighten::bridge_check(operation, code, message) }.map_err(|e| match e {
        enlighten::Error::Libtorch { operation, message } => Error::Libtorch { operation, message },
        other => Error::Ops(other),
    })
}

impl From<enlighten::cuda::Unavailable> for Error {
    fn from(reason: enlighten::cuda::Unavailable) -> Self {
        Error::Ops(reason.into())
    }
}

/// What a diverged run leaves: its last checkpoint, or nothing yet.
fn kept_checkpoint(step: &Option<u64>) -> String {
    match step {
        Some(s) => format!("the checkpoint of step {s} is kept: resume from it with other settings"),
        None => "no checkpoint was written yet: nothing to resume".into(),
    }
}
