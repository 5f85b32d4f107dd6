//! The Rust side of bridge/, the C++ compiled against libtorch's headers: what tch does not
//! expose (a custom autograd node; c10d with the `distributed` feature). Every call returns a
//! code and, on failure, a message that becomes [`Error::Libtorch`]; no C++ exception crosses.

use std::ffi::{c_char, c_int, CStr};

use tch::Tensor;
use torch_sys::C_tensor;

use crate::error::{Error, Result};

extern "C" {
    fn enl_free_message(message: *mut c_char);
    fn enl_attach_gradient(
        input: *const C_tensor,
        loss: *const C_tensor,
        grad: *const C_tensor,
        out: *mut *mut C_tensor,
        message: *mut *mut c_char,
    ) -> c_int;
}

/// Turns a bridge call's code and message into a `Result`, freeing the message.
pub(crate) fn check(operation: &'static str, code: c_int, message: *mut c_char) -> Result<()> {
    if code == 0 {
        return Ok(());
    }
    let text = if message.is_null() {
        "no message".to_string()
    } else {
        // SAFETY: a non-null message is a NUL-terminated malloc'ed string from the bridge, freed
        // exactly once here.
        let text = unsafe { CStr::from_ptr(message) }.to_string_lossy().into_owned();
        unsafe { enl_free_message(message) };
        text
    };
    Err(Error::Libtorch {
        operation,
        message: text,
    })
}

/// [`check`] for the trainer's own C++ (c10d), which follows the same convention.
///
/// # Safety
/// `message` is null or a message the bridge's `enl_guard` allocated, not yet freed.
#[doc(hidden)]
pub unsafe fn check_foreign(operation: &'static str, code: c_int, message: *mut c_char) -> Result<()> {
    check(operation, code, message)
}

/// `loss` as the output of an autograd node whose gradient with respect to `input` is `grad`
/// times the incoming gradient, in `input`'s dtype. The node keeps `grad` (in `input`'s dtype or
/// f32, then scaled in f32 and rounded once); nothing is recomputed on backward.
pub(crate) fn attach_gradient(input: &Tensor, loss: &Tensor, grad: Tensor) -> Result<Tensor> {
    let mut out: *mut C_tensor = std::ptr::null_mut();
    let mut message: *mut c_char = std::ptr::null_mut();
    // SAFETY: the three pointers are live tch tensors for the call; the bridge copies what it
    // keeps (reference counts), writes `out` only on success, and never throws.
    let code = unsafe { enl_attach_gradient(input.as_ptr(), loss.as_ptr(), grad.as_ptr(), &mut out, &mut message) };
    // The node holds its own reference now; dropping ours lets backward hand the gradient to the
    // leaf without a copy.
    drop(grad);
    check("attach_gradient", code, message)?;
    // SAFETY: on success `out` is a heap-allocated at::Tensor that we now own, as tch expects.
    Ok(unsafe { Tensor::from_ptr(out) })
}
