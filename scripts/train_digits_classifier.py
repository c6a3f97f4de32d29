"""Train the digits classifier whose features `metrics.digits_frechet_distance` compares, and save it.

    python scripts/train_digits_classifier.py [--steps 3000] [--out diffsolve/data/digits_classifier.safetensors]

A `features.DigitsClassifier` (16/32/64 channels, about 23 k weights) is trained with Adam (lr 3e-3,
cosine decay, batch 128, seed 0) on the training split of the 8x8 digits scaled to [-1, 1]
(`datasets.digits("train", scale="[-1, 1]")`), each batch dequantised afresh over the 17 grey
levels, as the score models see it, so its features are defined on continuous images. The test
split's accuracy (on dequantised images, seed 0) is printed and written into the file's metadata.
The file is written atomically (safetensors, no pickle). Took 2 minutes on 2 CPU cores (test accuracy
0.9889).
"""

from __future__ import annotations

import argparse
import json
import math

import torch
from safetensors.torch import save

import diffsolve as ds
from diffsolve import datasets
from diffsolve.features import DIGITS_CLASSIFIER_FILE, DigitsClassifier
from diffsolve.io import atomic_write_bytes

BINS = datasets.DIGITS_LEVELS


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=3000, help="Adam steps")
    parser.add_argument("--width", type=int, default=16, help="channels of the first convolution")
    parser.add_argument("--out", default=str(DIGITS_CLASSIFIER_FILE), help="where to write the weights")
    args = parser.parse_args()

    x, y = datasets.digits("train", scale="[-1, 1]", return_labels=True)
    x_test, y_test = datasets.digits("test", scale="[-1, 1]", return_labels=True)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    net = DigitsClassifier(args.width)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = 3e-3 * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        idx = torch.randint(len(x), (128,), generator=gen)
        batch = ds.dequantize(x[idx], bins=BINS, low=-1.0, high=1.0, generator=gen)
        loss = torch.nn.functional.cross_entropy(net(batch), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        test = ds.dequantize(
            x_test, bins=BINS, low=-1.0, high=1.0, generator=torch.Generator().manual_seed(0)
        )
        accuracy = (net(test).argmax(1) == y_test).double().mean().item()
        train_acc = (
            (net(ds.dequantize(x, bins=BINS, low=-1.0, high=1.0, seed=1)).argmax(1) == y).double().mean()
        )
    meta = {
        "config": json.dumps({"width": args.width}),
        "test_accuracy": f"{accuracy:.4f}",
        "train_accuracy": f"{train_acc.item():.4f}",
        "trained_by": f"scripts/train_digits_classifier.py --steps {args.steps} --width {args.width}",
    }
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    path = atomic_write_bytes(args.out, save(state, metadata=meta))
    weights = sum(v.numel() for v in state.values())
    print(f"{weights} weights, test accuracy {accuracy:.4f}, train accuracy {train_acc.item():.4f}")
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
