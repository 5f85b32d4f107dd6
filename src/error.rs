//! The crate's one error type. Every argument error names the argument, what was expected and
//! what came, so a message alone tells the user what to fix.

use crate::cuda::Unavailable;

/// Result alias used throughout enlighten.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in an op, the strategy engine or the CUDA glue.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor has the wrong shape or rank, or two tensors disagree.
    #[error("`{arg}`: expected shape {expected}, got {got}")]
    Shape {
        /// The argument, as the op names it.
        arg: &'static str,
        /// The shape the op needs, with the reason when it follows from another argument.
        expected: String,
        /// The shape that came.
        got: String,
    },

    /// A tensor has a dtype the op does not accept.
    #[error("`{arg}`: expected dtype {expected}, got {got:?}")]
    Dtype {
        /// The argument, as the op names it.
        arg: &'static str,
        /// The dtypes the op accepts.
        expected: String,
        /// The dtype that came.
        got: tch::Kind,
    },

    /// Tensors that must live together are on different devices, or on an unsupported one.
    #[error("`{arg}`: expected device {expected}, got {got:?}")]
    Device {
        /// The argument, as the op names it.
        arg: &'static str,
        /// The device the op needs (usually the first tensor's).
        expected: String,
        /// The device that came.
        got: tch::Device,
    },

    /// A value is out of its allowed range (a share outside [0, 1), a label >= classes, ...).
    #[error("`{arg}`: expected {expected}, got {got}")]
    Value {
        /// The argument, as the op names it.
        arg: &'static str,
        /// The allowed range or form.
        expected: String,
        /// The value that came.
        got: String,
    },

    /// An output tensor must be contiguous so the op can write it in place.
    #[error("`{arg}`: expected a contiguous tensor, got strides {strides:?} for size {size:?}")]
    NotContiguous {
        /// The argument, as the op names it.
        arg: &'static str,
        /// The tensor's size.
        size: Vec<i64>,
        /// Its strides.
        strides: Vec<i64>,
    },

    /// CUDA was asked for but cannot be used here; the reason says why.
    #[error("CUDA is unavailable: {0}")]
    CudaUnavailable(#[from] Unavailable),

    /// The CUDA driver reported an error while loading or launching a kernel; the driver's own
    /// error is kept as the source.
    #[error("CUDA driver error in {context}: {source}")]
    Cuda {
        /// What the crate was doing (loading the module, launching a kernel, ...).
        context: String,
        /// The driver's error.
        #[source]
        source: cudarc::driver::DriverError,
    },

    /// An emulated kernel launch failed: a fault, a broken CUDA rule, or runs that disagree
    /// (see the `enlighten-emulator` crate). The message names the block, thread and cause.
    #[error("emulated kernel {kernel}: {message}")]
    Emulated {
        /// The kernel's entry point.
        kernel: &'static str,
        /// Where and why it failed.
        message: String,
    },

    /// A strategy configuration (`[strategy]` TOML) could not be parsed or written; the message
    /// names the line and field.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// Something the crate itself guarantees did not hold: a bug, or a helper thread that died.
    #[error("internal error: {0}")]
    Internal(String),

    /// libtorch's C++, reached through the crate's bridge (the loss ops' autograd node), reported
    /// an error.
    #[error("libtorch ({operation}): {message}")]
    Libtorch {
        /// The bridge call.
        operation: &'static str,
        /// libtorch's message.
        message: String,
    },

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

    pub(crate) fn cuda(context: impl Into<String>, source: cudarc::driver::DriverError) -> Self {
        Error::Cuda {
            context: context.into(),
            source,
        }
    }
}
