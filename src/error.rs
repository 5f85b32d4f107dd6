//! The crate's one error type. Every argument error names the argument, what was expected and
//! what came, so a message alone tells the user what to fix.

use crate::cuda::Unavailable;

/// Result alias used throughout enlighten.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor has the wrong shape or rank, or two tensors disagree.
    #[error("`{arg}`: expected shape {expected}, got {got}")]
    Shape {
        arg: &'static str,
        expected: String,
        got: String,
    },

    /// A tensor has a dtype the op does not accept.
    #[error("`{arg}`: expected dtype {expected}, got {got:?}")]
    Dtype {
        arg: &'static str,
        expected: String,
        got: tch::Kind,
    },

    /// Tensors that must live together are on different devices, or on an unsupported one.
    #[error("`{arg}`: expected device {expected}, got {got:?}")]
    Device {
        arg: &'static str,
        expected: String,
        got: tch::Device,
    },

    /// A value is out of its allowed range (a share outside [0, 1), a label >= classes, ...).
    #[error("`{arg}`: expected {expected}, got {got}")]
    Value {
        arg: &'static str,
        expected: String,
        got: String,
    },

    /// An output tensor must be contiguous so the op can write it in place.
    #[error("`{arg}`: expected a contiguous tensor, got strides {strides:?} for size {size:?}")]
    NotContiguous {
        arg: &'static str,
        size: Vec<i64>,
        strides: Vec<i64>,
    },

    /// CUDA was asked for but cannot be used here; the reason says why.
    #[error("CUDA is unavailable: {0}")]
    CudaUnavailable(#[from] Unavailable),

    /// The CUDA driver reported an error while loading or launching a kernel; the driver's own
    /// error is kept as the source.
    #[error("CUDA driver error in {context}: {source}")]
    Cuda {
        context: String,
        #[source]
        source: cudarc::driver::DriverError,
    },

    /// An emulated kernel launch failed: a fault, a broken CUDA rule, or runs that disagree
    /// (see [`crate::cuda::emulator`]). The message names the block, thread and cause.
    #[error("emulated kernel {kernel}: {message}")]
    Emulated { kernel: &'static str, message: String },

    /// A data file is missing or not in the expected format; the hint says how to fetch it.
    #[error("{}: {problem} ({hint})", path.display())]
    Data {
        path: std::path::PathBuf,
        problem: String,
        hint: String,
    },

    /// A training run was interrupted; its state is in the checkpoint and `--resume` continues it.
    #[error("interrupted after step {step}; checkpoint written to {}; continue with --resume", checkpoint.display())]
    Interrupted { step: u64, checkpoint: std::path::PathBuf },

    /// A configuration file could not be parsed (the message names the line and field).
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A checkpoint could not be written or read back, or does not belong to this run.
    #[error("checkpoint {}: {problem}", path.display())]
    Checkpoint { path: std::path::PathBuf, problem: String },

    /// A value could not be written as JSON (`what` names the file or record).
    #[error("{what}: cannot write as JSON: {message}")]
    Json { what: String, message: String },

    /// The training loss stopped being finite; the run stops and keeps its last checkpoint, the
    /// one whose step `checkpoint` names (none when no checkpoint was written yet).
    #[error("`loss`: expected a finite training loss, got {loss} at step {step} ({})", kept_checkpoint(.checkpoint))]
    Diverged {
        step: u64,
        loss: f64,
        checkpoint: Option<u64>,
    },

    /// Something the crate itself guarantees did not hold: a bug, or a helper thread that died.
    #[error("internal error: {0}")]
    Internal(String),

    /// libtorch's C++, reached through the crate's bridge (autograd, c10d), reported an error.
    #[error("libtorch ({operation}): {message}")]
    Libtorch { operation: &'static str, message: String },

    /// A rank of a data-parallel job failed (`--nproc`): it could not start, or exited with a
    /// failure, which stopped the other ranks. The problem says how and quotes its log.
    #[error("rank {rank} stopped the job: {problem}")]
    Launch { rank: usize, problem: String },

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
    #[cfg(feature = "trainer")]
    pub(crate) fn unwritable(path: impl Into<std::path::PathBuf>, problem: impl std::fmt::Display) -> Self {
        Error::Data {
            path: path.into(),
            problem: problem.to_string(),
            hint: "the output folder must be writable".into(),
        }
    }

    /// A value could not be written as JSON; `what` names the file or record.
    #[cfg(feature = "trainer")]
    pub(crate) fn json(what: impl Into<String>, err: impl std::fmt::Display) -> Self {
        Error::Json {
            what: what.into(),
            message: err.to_string(),
        }
    }

    pub(crate) fn cuda(context: impl Into<String>, source: cudarc::driver::DriverError) -> Self {
        Error::Cuda {
            context: context.into(),
            source,
        }
    }
}

/// What a diverged run leaves: its last checkpoint, or nothing yet.
fn kept_checkpoint(step: &Option<u64>) -> String {
    match step {
        Some(s) => format!("the checkpoint of step {s} is kept: resume from it with other settings"),
        None => "no checkpoint was written yet: nothing to resume".into(),
    }
}
