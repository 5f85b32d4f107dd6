//! High-Loss Removal dropped into an existing tch loop: tch-rs's MNIST example (examples/mnist,
//! the CNN) with one line changed (marked `enlighten:`). The loss is enlighten's fused
//! per-sample cross-entropy that drops the 10% highest losses of each batch and computes the
//! gradient of the rest in the same pass; `opt.backward_step` works on it as on tch's own loss.
//!     cargo run --release --example high_loss_removal   # MNIST's IDX files in data/, as for tch-rs
use enlighten::ops::loss::CrossEntropy;
use tch::vision::dataset::Dataset;
use tch::{nn, nn::ModuleT, nn::OptimizerConfig, Device};

fn net(vs: &nn::Path) -> impl ModuleT {
    nn::seq_t()
        .add_fn(|xs| xs.view([-1, 1, 28, 28]))
        .add(nn::conv2d(vs / "conv1", 1, 32, 5, Default::default()))
        .add_fn(|xs| xs.max_pool2d_default(2))
        .add(nn::conv2d(vs / "conv2", 32, 64, 5, Default::default()))
        .add_fn(|xs| xs.max_pool2d_default(2).view([-1, 1024]))
        .add(nn::linear(vs / "fc1", 1024, 1024, Default::default()))
        .add_fn(|xs| xs.relu())
        .add_fn_t(|xs, train| xs.dropout(0.5, train))
        .add(nn::linear(vs / "fc2", 1024, 10, Default::default()))
}

/// Trains for `epochs` and returns the test accuracy after each.
pub fn run(m: &Dataset, epochs: i64, device: Device) -> enlighten::Result<Vec<f64>> {
    let vs = nn::VarStore::new(device);
    let root = vs.root();
    let net = net(&root);
    let mut opt = nn::Adam::default().build(&vs, 1e-4)?;
    let mut accuracies = Vec::new();
    for epoch in 1..=epochs {
        for (bimages, blabels) in m.train_iter(256).shuffle().to_device(vs.device()) {
            // tch-rs: let loss = net.forward_t(&bimages, true).cross_entropy_for_logits(&blabels);
            let loss = CrossEntropy::with_removal(0.1).forward(&net.forward_t(&bimages, true), &blabels)?; // enlighten:
            opt.backward_step(&loss);
        }
        let test_accuracy = net.batch_accuracy_for_logits(&m.test_images, &m.test_labels, vs.device(), 1024);
        println!("epoch: {epoch:4} test acc: {:5.2}%", 100. * test_accuracy);
        accuracies.push(test_accuracy);
    }
    Ok(accuracies)
}

#[allow(dead_code)] // the integration test includes this file for `run` only
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = enlighten::cuda::device(); // CUDA 0 when libtorch sees a GPU, else the CPU
    let m = tch::vision::mnist::load_dir("data")?;
    run(&m, 10, device)?;
    Ok(())
}
