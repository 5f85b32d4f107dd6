//! The trainer's classifiers: shapes, parameter counts, probes, and that they can learn.

use enlighten::models::{parameter_count, preact_resnet18, resnet18, small_cnn, Classifier};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

fn check(model: &dyn Classifier, x: &Tensor, classes: i64, probes: usize) {
    let (logits, taken) = model.forward(x, true, true);
    assert_eq!(logits.size(), [x.size()[0], classes]);
    assert_eq!(taken.len(), probes, "post-ReLU probes");
    for t in &taken {
        assert_eq!(t.size()[0], x.size()[0], "probes are [B, ...]");
        assert!(t.min().double_value(&[]) >= 0.0, "probes are post-ReLU");
    }
    let (eval_logits, none) = model.forward(x, false, false);
    assert!(none.is_empty(), "no probes unless asked");
    assert_eq!(eval_logits.size(), logits.size());
}

#[test]
fn resnet18_has_the_reference_parameter_count_and_17_probes() {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = resnet18(&vs.root(), 3, 10);
    assert_eq!(parameter_count(&vs), 11_173_962, "ResNet18 (CIFAR stem), 10 classes");
    check(&model, &Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu)), 10, 17);
    // Fashion-MNIST shape: one channel, 28 x 28.
    let vs1 = nn::VarStore::new(Device::Cpu);
    check(&resnet18(&vs1.root(), 1, 10), &Tensor::randn([3, 1, 28, 28], (Kind::Float, Device::Cpu)), 10, 17);
}

#[test]
fn preact_resnet18_and_small_cnn() {
    tch::manual_seed(1);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = preact_resnet18(&vs.root(), 3, 100);
    // ResNet18's count with a 100-class head, minus the stem BN and the three shortcut BNs, plus
    // the final BN; and the first block of stages 2-4 normalises its input (64, 128, 256
    // channels) where ResNet18 normalises its output (128, 256, 512). Each BN has 2 per channel.
    let resnet18_100 = 11_173_962 + 90 * 512 + 90;
    let expected = resnet18_100 - 2 * 64 - 2 * (128 + 256 + 512) + 2 * 512 - 2 * ((128 - 64) + (256 - 128) + (512 - 256));
    assert_eq!(parameter_count(&vs), expected);
    check(&model, &Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu)), 100, 17);
    let vs = nn::VarStore::new(Device::Cpu);
    let cnn = small_cnn(&vs.root(), 1, 28, 28, 10);
    check(&cnn, &Tensor::randn([4, 1, 28, 28], (Kind::Float, Device::Cpu)), 10, 3);
    // conv 1x32x3x3 + BN 2x32 + conv 32x64x3x3 + BN 2x64 + fc 3136x128+128 + fc 128x10+10.
    assert_eq!(parameter_count(&vs), 288 + 64 + 18_432 + 128 + 401_536 + 1_290);
}

#[test]
fn the_small_cnn_learns_a_synthetic_task_in_30_steps() {
    tch::manual_seed(2);
    // Class k has a bright k-th row band.
    let y = Tensor::randint(4, [256], (Kind::Int64, Device::Cpu));
    let x = Tensor::randn([256, 1, 16, 16], (Kind::Float, Device::Cpu)) * 0.3;
    for i in 0..256 {
        let k = y.int64_value(&[i]);
        let _ = x.get(i).narrow(1, 4 * k, 4).g_add_scalar_(1.5);
    }
    let vs = nn::VarStore::new(Device::Cpu);
    let cnn = small_cnn(&vs.root(), 1, 16, 16, 4);
    let mut opt = nn::Sgd { momentum: 0.9, ..Default::default() }.build(&vs, 0.05).unwrap();
    let loss_at = |cnn: &dyn Classifier| cnn.forward(&x, false, false).0.cross_entropy_for_logits(&y).double_value(&[]);
    let before = loss_at(&cnn);
    for step in 0..30 {
        let idx = Tensor::arange_start((step % 4) * 64, (step % 4 + 1) * 64, (Kind::Int64, Device::Cpu));
        let loss = cnn.forward(&x.index_select(0, &idx), true, false).0.cross_entropy_for_logits(&y.index_select(0, &idx));
        opt.backward_step(&loss);
    }
    let after = loss_at(&cnn);
    assert!(after < 0.5 * before, "loss {before} -> {after}");
}
