//! The trainer's classifiers: shapes, parameter counts, probes, and that they can learn.

use enlighten_trainer::models::{
    char_transformer, mlp_forecaster, parameter_count, preact_resnet18, preact_resnet50, resnet18, resnet1d, resnet50,
    small_cnn, vit_s16, vit_s8, vit_t16, vit_tiny, Model, TransformerDims,
};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

fn check(model: &dyn Model, x: &Tensor, classes: i64, probes: usize) {
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
    check(
        &model,
        &Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu)),
        10,
        17,
    );
    // Fashion-MNIST shape: one channel, 28 x 28.
    let vs1 = nn::VarStore::new(Device::Cpu);
    check(
        &resnet18(&vs1.root(), 1, 10),
        &Tensor::randn([3, 1, 28, 28], (Kind::Float, Device::Cpu)),
        10,
        17,
    );
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
    let expected =
        resnet18_100 - 2 * 64 - 2 * (128 + 256 + 512) + 2 * 512 - 2 * ((128 - 64) + (256 - 128) + (512 - 256));
    assert_eq!(parameter_count(&vs), expected);
    check(
        &model,
        &Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu)),
        100,
        17,
    );
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
    let mut opt = nn::Sgd {
        momentum: 0.9,
        ..Default::default()
    }
    .build(&vs, 0.05)
    .unwrap();
    let loss_at = |cnn: &dyn Model| {
        cnn.forward(&x, false, false)
            .0
            .cross_entropy_for_logits(&y)
            .double_value(&[])
    };
    let before = loss_at(&cnn);
    for step in 0..30 {
        let idx = Tensor::arange_start((step % 4) * 64, (step % 4 + 1) * 64, (Kind::Int64, Device::Cpu));
        let loss = cnn
            .forward(&x.index_select(0, &idx), true, false)
            .0
            .cross_entropy_for_logits(&y.index_select(0, &idx));
        opt.backward_step(&loss);
    }
    let after = loss_at(&cnn);
    assert!(after < 0.5 * before, "loss {before} -> {after}");
}

#[test]
fn vit_tiny_has_vit_ti_dimensions_and_probes_every_block() {
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = vit_tiny(&vs.root(), 3, 32, 10, TransformerDims::VIT_TINY);
    // Per block: 2 LN (2x192 each), qkv 192x576+576, proj 192x192+192, fc1 192x768+768,
    // fc2 768x192+192; plus the 4x4x3 patch conv, class token, 65 positions, final LN, head.
    let d = 192i64;
    let block = 4 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d);
    let expected = 12 * block + (48 * d + d) + d + 65 * d + 2 * d + (d * 10 + 10);
    assert_eq!(parameter_count(&vs), expected);
    let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
    let (logits, probes) = model.forward(&x, true, true);
    assert_eq!(logits.size(), [2, 10]);
    assert_eq!(probes.len(), 12, "one post-GELU MLP activation a block");
    assert_eq!(probes[0].size(), [2, 65, 4 * d]);
    assert_eq!(model.probe_eps(), Some(1e-2), "GELU has no exact zeros");
    // Fashion-MNIST: one channel, 28 px (7 x 7 patches).
    let vs1 = nn::VarStore::new(Device::Cpu);
    let small = TransformerDims {
        width: 32,
        depth: 2,
        heads: 2,
    };
    let (out, _) = vit_tiny(&vs1.root(), 1, 28, 10, small).forward(
        &Tensor::randn([3, 1, 28, 28], (Kind::Float, Device::Cpu)),
        false,
        false,
    );
    assert_eq!(out.size(), [3, 10]);
}

#[test]
fn series_forecast_and_language_models_have_their_shapes_and_probes() {
    tch::manual_seed(4);
    let vs = nn::VarStore::new(Device::Cpu);
    let r = resnet1d(&vs.root(), 3, 5, 16);
    let (logits, probes) = r.forward(&Tensor::randn([4, 3, 37], (Kind::Float, Device::Cpu)), true, true);
    assert_eq!(logits.size(), [4, 5]);
    assert_eq!(probes.len(), 9);
    assert!(
        probes
            .iter()
            .all(|p| p.size()[2] == 37 && p.min().double_value(&[]) >= 0.0),
        "same-length, post-ReLU"
    );

    let vs = nn::VarStore::new(Device::Cpu);
    let f = mlp_forecaster(&vs.root(), 24, 2, 6, 32);
    assert_eq!(parameter_count(&vs), (48 * 32 + 32) + (32 * 32 + 32) + (32 * 6 + 6));
    let (pred, probes) = f.forward(&Tensor::randn([5, 24, 2], (Kind::Float, Device::Cpu)), true, true);
    assert_eq!((pred.size(), probes.len()), (vec![5, 6], 2));

    let vs = nn::VarStore::new(Device::Cpu);
    let lm = char_transformer(
        &vs.root(),
        40,
        16,
        TransformerDims {
            width: 32,
            depth: 2,
            heads: 4,
        },
    );
    let tokens = Tensor::randint(40, [3, 16], (Kind::Int64, Device::Cpu));
    let (logits, probes) = lm.forward(&tokens, true, true);
    assert_eq!(logits.size(), [3, 16, 40]);
    assert_eq!(probes.len(), 2);
    assert!(probes[0].min().double_value(&[]) >= 0.0, "ReLU MLPs");
    // Causal: changing the last token leaves every earlier position's logits unchanged.
    let changed = tokens.copy();
    let _ = changed.narrow(1, 15, 1).fill_(0);
    let (again, _) = lm.forward(&changed, false, false);
    let (before, _) = lm.forward(&tokens, false, false);
    assert!(again.narrow(1, 0, 15).equal(&before.narrow(1, 0, 15)));
}

#[test]
fn the_papers_models_have_the_published_parameter_counts() {
    let count = |build: &dyn Fn(&nn::Path) -> Box<dyn Model>| {
        let vs = nn::VarStore::new(Device::Cpu);
        let model = build(&vs.root());
        (parameter_count(&vs), model)
    };
    // timm's vit_small_patch16_224 / vit_tiny_patch16_224 and torchvision's resnet50 (1,000 classes).
    let (n, vit_s) = count(&|p| Box::new(vit_s16(p, 224, 1000)));
    assert_eq!(n, 22_050_664, "ViT-S/16: 22.05M");
    let (n, _) = count(&|p| Box::new(vit_t16(p, 224, 1000)));
    assert_eq!(n, 5_717_416, "ViT-T/16: 5.72M");
    let (n, resnet) = count(&|p| Box::new(resnet50(p, 3, 1000)));
    assert_eq!(n, 25_557_032, "ResNet50: 25.56M");
    // Patch-8 ViT-S at 64 pixels for Tiny-ImageNet: 65 positions, 200 classes.
    let (n, vit8) = count(&|p| Box::new(vit_s8(p, 64, 200)));
    assert_eq!(n, 21_470_792);
    // PreActResNet50 (CIFAR stem, no BN on the projection shortcuts) for CIFAR-100.
    let (n, preact) = count(&|p| Box::new(preact_resnet50(p, 3, 100)));
    assert_eq!(n, 23_697_572);
    tch::no_grad(|| {
        let x = |size: i64| Tensor::randn([1, 3, size, size], (Kind::Float, Device::Cpu));
        let (out, probes) = vit_s.forward(&x(224), false, true);
        assert_eq!(
            (out.size(), probes.len(), probes[0].size()),
            (vec![1, 1000], 12, vec![1, 197, 1536])
        );
        assert_eq!(vit8.forward(&x(64), false, false).0.size(), [1, 200]);
        let (out, probes) = resnet.forward(&x(224), false, true);
        assert_eq!(out.size(), [1, 1000]);
        assert_eq!(
            probes.len(),
            1 + 2 * 16 + 16,
            "stem, two inner ReLUs and the output ReLU a block"
        );
        assert_eq!(probes.last().unwrap().size(), [1, 2048, 7, 7]);
        let (out, probes) = preact.forward(&x(32), false, true);
        assert_eq!(out.size(), [1, 100]);
        assert_eq!(probes.last().unwrap().size(), [1, 2048, 4, 4], "the final BN-ReLU");
    });
}
