//! The Rust side of bridge/, the C++ compiled against libtorch's headers: what tch does not
//! expose (a custom autograd node; c10d with the `distributed` feature). Every call returns a
//! code and, on failure, a message that becomes [`Error::Libtorch`]; no C++ exception crosses.

use std::ffi::{c_char, c_int, CStr};
use std::mem::ManuallyDrop;

use tch::{Kind, Tensor};
use torch_sys::C_tensor;

use crate::cuda::{aligned, pack_len, Grid, Kernel, Launch};
use crate::error::{Error, Result};

/// The node's backward on the kernels' path (bridge/autograd.cpp): scales `grad` in place by the
/// scalar `incoming` on the device. Returns 0 when done, 1 when the tensors do not run kernels
/// here (the node then scales as on the CPU), 2 on an error, whose text goes to `message`
/// (`capacity` bytes, NUL-terminated).
type ScaleInPlace =
    extern "C" fn(grad: *const C_tensor, incoming: *const C_tensor, message: *mut c_char, capacity: usize) -> c_int;

extern "C" {
    fn enl_free_message(message: *mut c_char);
    fn enl_attach_gradient(
        input: *const C_tensor,
        loss: *const C_tensor,
        grad: *const C_tensor,
        scale_in_place: Option<ScaleInPlace>,
        out: *mut *mut C_tensor,
        message: *mut *mut c_char,
    ) -> c_int;
    fn enl_pinned(t: *const C_tensor, out: *mut *mut C_tensor, message: *mut *mut c_char) -> c_int;
}

/// `t` in page-locked memory: itself when pinned already, else a pinned copy (bridge/pinned.cpp,
/// which asks libtorch without the deprecated device argument tch passes).
pub(crate) fn pinned(t: &Tensor) -> Result<Tensor> {
    let mut out: *mut C_tensor = std::ptr::null_mut();
    let mut message: *mut c_char = std::ptr::null_mut();
    // SAFETY: `t` is a live tch tensor for the call; the bridge writes `out` only on success and
    // never throws.
    let code = unsafe { enl_pinned(t.as_ptr(), &mut out, &mut message) };
    check("pin_memory", code, message)?;
    // SAFETY: on success `out` is a heap-allocated at::Tensor that we now own, as tch expects.
    Ok(unsafe { Tensor::from_ptr(out) })
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
/// f32, then scaled in f32 and rounded once); nothing is recomputed on backward. On the kernels'
/// path a gradient in `input`'s dtype is scaled in place by grad_scale, which leaves it untouched
/// when the incoming gradient is 1 ([`scale_in_place`]).
pub(crate) fn attach_gradient(input: &Tensor, loss: &Tensor, grad: Tensor) -> Result<Tensor> {
    let mut out: *mut C_tensor = std::ptr::null_mut();
    let mut message: *mut c_char = std::ptr::null_mut();
    // SAFETY: the three pointers are live tch tensors for the call; the bridge copies what it
    // keeps (reference counts), writes `out` only on success, and never throws.
    let scale: Option<ScaleInPlace> = crate::cuda::uses_kernels(input.device()).then_some(scale_in_place);
    let code = unsafe {
        enl_attach_gradient(
            input.as_ptr(),
            loss.as_ptr(),
            grad.as_ptr(),
            scale,
            &mut out,
            &mut message,
        )
    };
    // The node holds its own reference now; dropping ours lets backward hand the gradient to the
    // leaf without a copy.
    drop(grad);
    check("attach_gradient", code, message)?;
    // SAFETY: on success `out` is a heap-allocated at::Tensor that we now own, as tch expects.
    Ok(unsafe { Tensor::from_ptr(out) })
}

/// grad_scale (kernels/autograd.cu) over `grad`, in place: `grad *= incoming` computed on the
/// device, nothing read or written when `incoming` is exactly 1.
fn launch_grad_scale(grad: &Tensor, incoming: &Tensor) -> Result<()> {
    if incoming.kind() != Kind::Float || incoming.numel() != 1 {
        return Err(Error::value(
            "incoming",
            "an f32 scalar (the gradient of an f32 loss)",
            format!("{:?} {:?}", incoming.kind(), incoming.size()),
        ));
    }
    let n = grad.numel() as i64;
    let incoming = incoming.reshape([1]);
    let lanes = if aligned(&[grad]) { pack_len(grad.kind()) } else { 1 };
    Launch::new(Kernel::for_dtype(
        grad.kind(),
        [Kernel::GRAD_SCALE_F32, Kernel::GRAD_SCALE_F16, Kernel::GRAD_SCALE_BF16],
    ))
    .inout("grad", grad)?
    .input("incoming", &incoming)?
    .i64(n)
    .run(Grid::RowsAndPacks {
        rows: 1,
        packs_per_row: (n + lanes - 1) / lanes,
    })
}

/// The [`ScaleInPlace`] the node calls on backward. The tensors stay the caller's: they are
/// borrowed through `ManuallyDrop`, never freed here.
extern "C" fn scale_in_place(
    grad: *const C_tensor,
    incoming: *const C_tensor,
    message: *mut c_char,
    capacity: usize,
) -> c_int {
    // SAFETY: the node passes two live at::Tensor handles for the duration of the call; wrapping
    // them without dropping leaves their reference counts as they were.
    let (grad, incoming) = unsafe {
        (
            ManuallyDrop::new(Tensor::from_ptr(grad as *mut C_tensor)),
            ManuallyDrop::new(Tensor::from_ptr(incoming as *mut C_tensor)),
        )
    };
    if !crate::cuda::uses_kernels(grad.device()) {
        return 1;
    }
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| launch_grad_scale(&grad, &incoming)));
    let text = match result {
        Ok(Ok(())) => return 0,
        Ok(Err(e)) => e.to_string(),
        Err(_) => "grad_scale panicked".to_string(),
    };
    let bytes = &text.as_bytes()[..text.len().min(capacity.saturating_sub(1))];
    // SAFETY: `message` has room for `capacity` bytes (the node's buffer); at most capacity - 1
    // bytes and a NUL are written.
    if capacity > 0 {
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), message as *mut u8, bytes.len());
            *message.add(bytes.len()) = 0;
        }
    }
    2
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bridge's pin call on a host tensor: a pinned copy with the same values where libtorch
    /// can pin (a CUDA machine), else libtorch's error as `Error::Libtorch` naming the operation,
    /// never a crash. Without a GPU (CI) this runs the error path through the bridge's guard.
    #[test]
    fn pinned_gives_a_pinned_equal_tensor_or_libtorchs_error() {
        let t = Tensor::from_slice(&[1.5f32, -2.0, 3.25]);
        match pinned(&t) {
            Ok(p) => assert!(p.equal(&t) && p.is_pinned(tch::Device::Cpu), "{p:?}"),
            Err(Error::Libtorch { operation, message }) => {
                assert_eq!(operation, "pin_memory");
                println!("no pinning here: {message}");
            }
            Err(other) => panic!("pinned: {other}"),
        }
    }
}
