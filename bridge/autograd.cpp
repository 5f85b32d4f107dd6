// A real autograd node for the fused losses. tch has no custom autograd Function, so the Rust
// side computes the loss and its gradient in one kernel pass and hands both here; the node
// returned keeps the gradient and, on backward, gives it back scaled by the incoming gradient.
// No forward work is repeated, and nothing waits for the GPU. For an f16/bf16 input the kept
// gradient is f32 and is rounded to the input's dtype only after the scaling: under loss scaling
// (mixed precision) its small entries would otherwise flush to 0 before the scale reached them.
//
// On the kernels' path (CUDA tensors, or CPU tensors while the emulator runs the kernels) a
// gradient in the input's dtype is scaled in place by the library's grad_scale kernel, reached
// through a Rust callback: the kernel reads the incoming gradient on the device and, when it is
// exactly 1 (a plain `loss.backward()`), leaves the gradient untouched, so the common backward
// moves no gradient bytes and no host read decides it. The node then hands on its own tensor,
// which a leaf's AccumulateGrad takes without a copy.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/csrc/autograd/graph_task.h>

#include <cstdint>
#include <stdexcept>

#include "guard.h"

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The Rust side's grad_scale launch (src/bridge.rs, ScaleInPlace): 0 done, 1 not on the kernels'
// path here, 2 an error written to `message`.
using ScaleInPlace = int (*)(const at::Tensor* grad, const at::Tensor* incoming, char* message, size_t capacity);

struct SavedGradientLoss : public torch::autograd::Function<SavedGradientLoss> {
    // `input` only connects the node to the graph: the gradient is already computed.
    static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& loss,
                              const at::Tensor& grad, int64_t scale_in_place) {
        // A SavedVariable, not saved_data: the engine releases it right after backward unless
        // the graph is retained, so the leaf's AccumulateGrad can take the tensor without a copy.
        ctx->save_for_backward({grad});
        ctx->saved_data["dtype"] = static_cast<int64_t>(input.scalar_type());
        ctx->saved_data["scale_in_place"] = scale_in_place;
        return loss;
    }

    // Scales `grad` in place on the kernels' path; false when the node must scale out of place:
    // no kernel path, a gradient not in the input's dtype (the f32 one of a half input is
    // rounded into a new tensor anyway), a graph kept for another backward (which needs the
    // gradient unscaled), or a gradient someone else holds (`grad` and the saved variable are
    // its only handles, and no other tensor shares its storage, such as the caller's buffer of
    // `loss_and_grad_into`).
    static bool scaled_in_place(AutogradContext* ctx, const at::Tensor& grad, const at::Tensor& incoming,
                                at::ScalarType dtype) {
        const auto fn = reinterpret_cast<ScaleInPlace>(ctx->saved_data["scale_in_place"].toInt());
        if (fn == nullptr || grad.scalar_type() != dtype || incoming.numel() != 1 ||
            incoming.scalar_type() != at::kFloat || torch::autograd::get_current_graph_task_keep_graph() ||
            grad.use_count() > 2 || grad.storage().use_count() > 1) {
            return false;
        }
        char message[512] = {0};
        const int code = fn(&grad, &incoming, message, sizeof message);
        if (code == 2) throw std::runtime_error(std::string("enlighten: scaling the gradient: ") + message);
        return code == 0;
    }

    // grad * incoming in the input's dtype: as it is or with one multiply when the dtypes agree;
    // otherwise (an f32 gradient of a half input) multiplied in f32 and rounded once, in one
    // pass on a GPU (TensorIterator casts on store; the CPU goes through an f32 temporary).
    static at::Tensor scaled(const at::Tensor& grad, const at::Tensor& incoming, bool unit, at::ScalarType dtype) {
        if (grad.scalar_type() == dtype) return unit ? grad : grad * incoming;
        if (unit) return grad.to(dtype);
        at::Tensor out = at::empty(grad.sizes(), grad.options().dtype(dtype));
        return at::mul_out(out, grad, incoming);
    }

    static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
        if (torch::autograd::GradMode::is_enabled()) {
            throw std::runtime_error(
                "enlighten: the fused loss does not support double backward (create_graph=true): its gradient "
                "was computed by the kernel in the forward pass and is not itself differentiable");
        }
        at::Tensor grad = ctx->get_saved_variables()[0];
        const at::Tensor& incoming = grad_outputs[0];
        const auto dtype = static_cast<at::ScalarType>(ctx->saved_data["dtype"].toInt());
        if (scaled_in_place(ctx, grad, incoming, dtype)) return {grad, at::Tensor(), at::Tensor(), at::Tensor()};
        // On the CPU reading the incoming scale costs nothing, and the common scale 1 then needs
        // no pass over the gradient. On a GPU the read would wait for the stream: always scale.
        bool unit = incoming.device().is_cpu() && incoming.numel() == 1 && incoming.item<double>() == 1.0;
        return {scaled(grad, incoming, unit, dtype), at::Tensor(), at::Tensor(), at::Tensor()};
    }
};

}  // namespace

// The loss tensor `loss` (a scalar) becomes the output of a node whose gradient with respect to
// `input` is `grad` times the incoming gradient, in `input`'s dtype (`grad` is in that dtype or
// f32). `scale_in_place` is the kernels' in-place scaling, or null off the kernels' path. *out
// receives a new tensor owned by the caller.
extern "C" int enl_attach_gradient(const at::Tensor* input, const at::Tensor* loss, const at::Tensor* grad,
                                   ScaleInPlace scale_in_place, at::Tensor** out, char** message) {
    return enlighten::enl_guard(message, [&] {
        TORCH_CHECK(grad->sizes() == input->sizes(), "`grad`: expected the shape of `input` ", input->sizes(),
                    ", got ", grad->sizes());
        TORCH_CHECK(grad->scalar_type() == input->scalar_type() || grad->scalar_type() == at::kFloat,
                    "`grad`: expected the dtype of `input` (", input->scalar_type(), ") or Float, got ",
                    grad->scalar_type());
        TORCH_CHECK(loss->numel() == 1, "`loss`: expected a scalar, got shape ", loss->sizes());
        const auto fn = reinterpret_cast<int64_t>(scale_in_place);
        *out = new at::Tensor(SavedGradientLoss::apply(*input, *loss, *grad, fn));
    });
}
