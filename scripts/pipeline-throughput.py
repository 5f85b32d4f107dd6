#!/usr/bin/env python3
"""torchvision's side of the pipeline comparison: ImageFolder + DataLoader over DIR/train with
RandomResizedCrop(224) (scale 0.08-1, ratio 3/4-4/3, bilinear with antialiasing on PIL images) and
RandomHorizontalFlip, batches of 64, shuffled, `workers` worker processes, 2 epochs; the first batch
is warm-up. Two endings: PILToTensor (u8 batches, what enlighten's pipeline produces) and the usual
ToTensor + Normalize (float batches).

With torchvision missing it says so and measures Pillow alone (decode, the same crop parameters,
Image.resize with box= and BILINEAR, flip, numpy u8) in `workers` processes instead.

    python scripts/pipeline-throughput.py DIR WORKERS
"""
import sys
import time


def torchvision_rate(root, workers, ending):
    import torch
    from torchvision import datasets, transforms

    torch.manual_seed(0)
    tail = [transforms.PILToTensor()] if ending == "u8" else [
        transforms.ToTensor(), transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]
    t = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip()] + tail)
    data = datasets.ImageFolder(root + "/train", transform=t)
    loader = torch.utils.data.DataLoader(data, batch_size=64, shuffle=True, num_workers=workers,
                                         persistent_workers=True, prefetch_factor=2, drop_last=True)
    images, start = 0, None
    for epoch in range(2):
        for x, _ in loader:
            if start is None:
                start = time.perf_counter()  # after the warm-up batch
                continue
            images += x.shape[0]
    seconds = time.perf_counter() - start
    return images, seconds


def pillow_rate(root, workers):
    import math
    import os
    import random
    from multiprocessing import Pool
    files = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(root + "/train") for f in fs)
    with Pool(workers) as pool:
        pool.map(_pillow_one, files[:64])
        start = time.perf_counter()
        n = sum(pool.map(_pillow_one, files * 2, chunksize=16))
    return n, time.perf_counter() - start


def _pillow_one(path):
    import math
    import random
    import numpy as np
    from PIL import Image
    img = Image.open(path).convert("RGB")
    w, h = img.size
    area = w * h
    for _ in range(10):
        target = area * random.uniform(0.08, 1.0)
        aspect = math.exp(random.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            i, j = random.randint(0, h - ch), random.randint(0, w - cw)
            break
    else:
        cw, ch, i, j = w, h, 0, 0
    out = img.resize((224, 224), Image.BILINEAR, box=(j, i, j + cw, i + ch))
    if random.random() < 0.5:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    np.asarray(out)
    return 1


def main():
    root, workers = sys.argv[1], int(sys.argv[2])
    try:
        import torchvision  # noqa: F401
        for ending in ("u8", "float"):
            n, s = torchvision_rate(root, workers, ending)
            print(f"torchvision-{ending} workers={workers} images={n} seconds={s:.2f} "
                  f"images_per_second={n / s:.1f} per_worker={n / s / workers:.1f}")
    except ImportError as e:
        print(f"torchvision is not installed ({e}): measuring Pillow alone")
        n, s = pillow_rate(root, workers)
        print(f"pillow workers={workers} images={n} seconds={s:.2f} "
              f"images_per_second={n / s:.1f} per_worker={n / s / workers:.1f}")


if __name__ == "__main__":
    main()
