// A real autograd node for the fused losses. tch has no custom autograd Function, so the Rust
// side computes the loss and its gradient in one kernel pass and hands both here; the node
// returned keeps the gradient and, on backward, gives it back scaled by the incoming gradient.
// No forward work is repeated, and nothing waits for the GPU.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <stdexcept>

#include "guard.h"

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct SavedGradientLoss : public torch::autograd::Function<SavedGradientLoss> {
    // `input` only connects the node to the graph: the gradient is already computed.
    static at::Tensor forward(AutogradContext* ctx, const at::Tensor& /*input*/, const at::Tensor& loss,
                              const at::Tensor& grad) {
        // A SavedVariable, not saved_data: the engine releases it right after backward unless
        // the graph is retained, so the leaf's AccumulateGrad can take the tensor without a copy.
        ctx->save_for_backward({grad});
        return loss;
    }

    static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
        if (torch::autograd::GradMode::is_enabled()) {
            throw std::runtime_error(
                "enlighten: the fused loss does not support double backward (create_graph=true): its gradient "
                "was computed by the kernel in the forward pass and is not itself differentiable");
        }
        at::Tensor grad = ctx->get_saved_variables()[0];
        const at::Tensor& incoming = grad_outputs[0];
        // On the CPU reading the incoming scale costs nothing, and the common scale 1 then needs
        // no pass over the gradient. On a GPU the read would wait for the stream: always scale.
        bool unit = incoming.device().is_cpu() && incoming.numel() == 1 && incoming.item<double>() == 1.0;
        at::Tensor scaled = unit ? grad : grad * incoming;
        return {scaled, at::Tensor(), at::Tensor()};
    }
};

}  // namespace

// The loss tensor `loss` (a scalar) becomes the output of a node whose gradient with respect to
// `input` is `grad` times the incoming gradient. *out receives a new tensor owned by the caller.
extern "C" int enl_attach_gradient(const at::Tensor* input, const at::Tensor* loss, const at::Tensor* grad,
                                   at::Tensor** out, char** message) {
    return enlighten::enl_guard(message, [&] {
        TORCH_CHECK(grad->sizes() == input->sizes(), "`grad`: expected the shape of `input` ", input->sizes(),
                    ", got ", grad->sizes());
        TORCH_CHECK(loss->numel() == 1, "`loss`: expected a scalar, got shape ", loss->sizes());
        *out = new at::Tensor(SavedGradientLoss::apply(*input, *loss, *grad));
    });
}
