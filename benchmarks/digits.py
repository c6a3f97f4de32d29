"""Bits/dim on scikit-learn's 8x8 digits: a trained score model against two classical density models.

    python benchmarks/digits.py [--steps 3000] [--minutes 15] [--probes 4] [--out runs/digits]
    python benchmarks/digits.py --model unet [--base 32] [--conditional] [--steps 4000]
    python benchmarks/digits.py --model unet --path rectified   # flow matching's straight path

All three models see the same data: the fixed training split (1438 images) and test split (359),
scaled to [-1, 1] and uniformly dequantised over the 17 grey levels with seed 0. Baselines: a
full-covariance Gaussian (maximum likelihood) and scikit-learn's GaussianMixture with 10
full-covariance components, both fitted to the (once-dequantised) training set. The score model is a
ScoreMLP (or, with `--model unet`, a ScoreUNet; `--conditional` trains it on the digit labels with
label dropout 0.1 and evaluates the unconditional score, the "no label" entry) under the VP SDE,
trained by denoising score matching on the same training images, each batch dequantised afresh
(`train(dequantize=...)`), eps weighting by default, with Adam, a cosine learning-rate decay over
`--steps` and EMA weights, capped at `--minutes` of wall clock. Its test log-likelihood comes from
the probability-flow ODE with Hutchinson's estimator, with enough probes that the probe standard
error of the mean bits/dim is < 0.01.
bits/dim = -log p / (64 ln 2) + log2(17 / 2) (see diffsolve.bits_per_dim).
"""

from __future__ import annotations

import argparse
import math

import torch

import diffsolve as ds
from diffsolve import datasets
from diffsolve.nn import ScoreMLP, ScoreUNet
from diffsolve.training import train

BINS, LOW, HIGH = datasets.DIGITS_LEVELS, -1.0, 1.0


def bpd(log_prob: torch.Tensor) -> torch.Tensor:
    return ds.bits_per_dim(log_prob, 64, bins=BINS, scale=HIGH - LOW)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--steps", type=int, default=3000, help="optimisation steps (the cosine schedule's length)"
    )
    parser.add_argument("--minutes", type=float, default=15.0, help="wall-clock cap on training")
    parser.add_argument("--weighting", choices=["eps", "likelihood"], default="eps")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--probes", type=int, default=4, help="Hutchinson probes per test image")
    parser.add_argument("--out", default=None, help="checkpoint directory (optional)")
    parser.add_argument("--model", choices=["mlp", "unet"], default="mlp")
    parser.add_argument("--width", type=int, default=512, help="ScoreMLP width")
    parser.add_argument("--depth", type=int, default=4, help="ScoreMLP residual blocks")
    parser.add_argument("--base", type=int, default=32, help="ScoreUNet channels at full resolution")
    parser.add_argument("--conditional", action="store_true", help="train on the labels (label dropout 0.1)")
    parser.add_argument(
        "--path", choices=["vp", "rectified"], default="vp",
        help="the VP SDE (an eps network) or the straight flow-matching path, RectifiedFlow(), a velocity "
        "network, whose likelihood ends at the same noise level as VP's eps = 1e-5 (sigma/alpha = 1e-3)",
    )  # fmt: skip
    args = parser.parse_args()

    gen = torch.Generator().manual_seed(0)
    train_levels, train_labels = datasets.digits("train", scale="[-1, 1]", return_labels=True)
    train_x = ds.dequantize(train_levels, bins=BINS, low=LOW, high=HIGH, generator=gen)
    test_x = ds.dequantize(
        datasets.digits("test", scale="[-1, 1]"), bins=BINS, low=LOW, high=HIGH, generator=gen
    )
    tr64, te64 = train_x.flatten(1).double(), test_x.flatten(1).double()

    mu, cov = tr64.mean(0), torch.cov(tr64.T)
    gauss_img = bpd(torch.distributions.MultivariateNormal(mu, cov).log_prob(te64))
    gauss = gauss_img.mean().item()
    from sklearn.mixture import GaussianMixture as SkGMM

    gmm = SkGMM(10, covariance_type="full", random_state=0).fit(tr64.numpy())
    gmm_img = bpd(torch.tensor(gmm.score_samples(te64.numpy())))
    gmm_bpd = gmm_img.mean().item()

    torch.manual_seed(0)
    sde, parameterization, eps = ds.VPSDE(), "eps", 1e-5
    if args.path == "rectified":
        from diffsolve.samplers.grids import t_of_log_snr

        sde, parameterization = ds.RectifiedFlow(), "velocity"
        lam = ds.VPSDE().log_snr(torch.tensor([eps], dtype=torch.float64))
        eps = float(t_of_log_snr(sde, lam, lo=1e-9, hi=sde.T)[0])
    classes = 10 if args.conditional else None
    if args.model == "mlp":
        net, name = (
            ScoreMLP(64, width=args.width, depth=args.depth, num_classes=classes),
            f"ScoreMLP {args.width}x{args.depth}",
        )
    else:
        net, name = ScoreUNet(1, base=args.base, num_classes=classes), f"ScoreUNet base {args.base}"
    name += ", class-conditional (unconditional score)" if args.conditional else ""
    print(f"{name}: {sum(p.numel() for p in net.parameters())} weights")
    model = ds.ScoreModel(net, sde, parameterization)
    result = train(
        model, train_levels, steps=args.steps, batch_size=args.batch_size, lr=args.lr, lr_schedule="cosine",
        weighting=args.weighting, importance_sampling=args.weighting == "likelihood", seed=0, ema_decay=0.999,
        progress=False, checkpoint_dir=args.out, max_seconds=60 * args.minutes, dequantize=(BINS, LOW, HIGH),
        labels=train_labels if args.conditional else None,
        metadata={"dataset": "digits", "data": {"scale": "[-1, 1]", "bins": BINS, "dequantized": True}},
    )  # fmt: skip
    minutes = result.seconds / 60
    ll = ds.log_likelihood(
        result.ema_model,
        sde,
        test_x,
        divergence="hutchinson",
        probes=args.probes,
        seed=0,
        eps=eps,
        rtol=1e-5,
        atol=1e-5,
    )
    per_image = bpd(ll.log_prob.double())
    path_name = "VP" if args.path == "vp" else f"straight path (velocity, eps = {eps:.3g})"
    se = per_image.std().item() / math.sqrt(len(per_image))  # spread over images (includes probe noise)
    probe_se = (ll.std_error.double() / (64 * math.log(2))).square().mean().sqrt().item() / math.sqrt(
        len(per_image)
    )
    print(
        f"train {tuple(train_x.shape)}, test {tuple(test_x.shape)}, dequantised over {BINS} levels in [-1, 1]"
    )
    print("| model | test bits/dim | notes |\n| --- | ---: | --- |")
    print(f"| full-covariance Gaussian | {gauss:.4f} | maximum likelihood on the training set |")
    print(f"| scikit-learn GaussianMixture, 10 full components | {gmm_bpd:.4f} | random_state=0 |")
    print(
        f"| diffsolve {name}, {path_name}, {args.weighting} weighting, {result.steps} of "
        f"{args.steps} steps ({minutes:.1f} min) | "
        f"{per_image.mean().item():.4f} | PF-ODE, Hutchinson {args.probes} probes: probe SE of the mean "
        f"{probe_se:.4f} bpd; SE over test images {se:.4f}; NFE {ll.nfe} |"
    )
    n = len(per_image)
    for name, base in (("Gaussian", gauss_img), ("GaussianMixture", gmm_img)):
        diff = per_image - base
        print(
            f"paired difference, score model - {name}: {diff.mean().item():+.4f} ± {diff.std().item() / n**0.5:.4f} bpd"
        )


if __name__ == "__main__":
    main()
