"""Conditional scores and classifier-free guidance against the labelled mixture's closed forms."""

import pytest
import torch

import diffsolve as ds
from diffsolve import metrics

SDE = ds.VPSDE()
# Six components in two classes: class 0 on the left, class 1 on the right, overlapping in the middle.
MIX = ds.GaussianMixture(
    [0.2, 0.15, 0.15, 0.2, 0.15, 0.15],
    [[-3.0, 0.0], [-1.5, 1.5], [-1.5, -1.5], [3.0, 0.0], [1.5, 1.5], [1.5, -1.5]],
    [[0.4, 0.4]] * 6,
)
LAB = ds.LabeledMixture(MIX, [0, 0, 0, 1, 1, 1])


def _log_density(gm, x, t):
    return gm.log_prob_t(x, t, SDE)


@pytest.mark.parametrize("w", [0.0, 1.0, 4.0])
def test_the_guided_score_is_the_gradient_of_the_guided_log_density(w):
    # Independent: autograd of (1 + w) log p_t(x | y) - w log p_t(x), from the closed-form densities.
    x = MIX.marginal(0.4, SDE).sample(50, seed=0).requires_grad_(True)
    y = torch.randint(0, 2, (50,), generator=torch.Generator().manual_seed(1))
    t = 0.4
    cond = torch.stack(
        [_log_density(LAB.conditional(int(c)), x[i : i + 1], t)[0] for i, c in enumerate(y.tolist())]
    )
    target = (1 + w) * cond - w * _log_density(MIX, x, t)
    (grad,) = torch.autograd.grad(target.sum(), x)
    score = LAB.score_fn(SDE)
    g = ds.guided(ds.Conditional(score, y), ds.Conditional(score, None), w)
    got = g(x.detach(), torch.full((50,), t, dtype=torch.float64))
    torch.testing.assert_close(got, grad, rtol=1e-10, atol=1e-10)


def test_conditional_sampling_without_guidance_samples_the_class():
    # w = 0: exact samples of p(x | y = 1); the mean log p_eps(x | y) gap against exact draws.
    score = LAB.score_fn(SDE)
    g = ds.guided(ds.Conditional(score, 1), ds.Conditional(score, None), 0.0)
    out = ds.sample(g, SDE, 3000, event_shape=(2,), solver="dpm_solver++2m", steps=40, seed=0)
    gap = metrics.log_prob_gap(out.samples, LAB.conditional(1), 1e-3, SDE)
    assert abs(gap.value) < 0.03 + 3 * gap.se, gap
    assert float((out.samples[:, 0] > 0).double().mean()) > 0.99  # the right-hand class


def test_guidance_sharpens_the_class_and_costs_two_evaluations_per_call():
    score = LAB.score_fn(SDE)
    calls = {"n": 0}

    def counted(x, t, y=None):
        calls["n"] += 1
        return score(x, t, y)

    g = ds.guided(ds.Conditional(counted, 1), ds.Conditional(counted, None), 3.0)
    out = ds.sample(g, SDE, 2000, event_shape=(2,), solver="dpm_solver++2m", steps=40, seed=0)
    assert calls["n"] == 2 * out.nfe and g.evaluations_per_call == 2
    # guided samples sit deeper in class 1 than conditional ones: higher log p(y = 1 | x)
    plain = ds.sample(
        ds.Conditional(score, 1), SDE, 2000, event_shape=(2,), solver="dpm_solver++2m", steps=40, seed=0
    ).samples
    p1 = LAB.class_probs()[1]

    def log_posterior(x):
        return torch.log(p1) + _log_density(LAB.conditional(1), x, 1e-3) - _log_density(MIX, x, 1e-3)

    assert float(log_posterior(out.samples).mean()) > float(log_posterior(plain).mean())


def test_guidance_refuses_bad_arguments():
    score = LAB.score_fn(SDE)
    with pytest.raises(ValueError, match="w must be"):
        ds.guided(ds.Conditional(score, 0), ds.Conditional(score, None), -1.0)
    with pytest.raises(TypeError, match="y must be"):
        ds.Conditional(score, 0.5)
    with pytest.raises(ValueError, match="labels"):
        ds.LabeledMixture(MIX, [0, 1])
    with pytest.raises(ValueError, match="need the whole batch"):
        ds.Conditional(score, torch.tensor([0, 1, 1]))(torch.zeros(5, 2), torch.full((5,), 0.5))


def _labelled_ring(n, seed):
    """Exact draws of the labelled ring with their classes: each class's own mixture, p(y) = 1/2."""
    ring = ds.GaussianMixture.ring2d()
    lab = ds.LabeledMixture(ring, [0, 1] * 4)
    xs = [lab.conditional(c).sample(n // 2, seed=seed + c, dtype=torch.float32) for c in (0, 1)]
    return lab, torch.cat(xs), torch.cat([torch.zeros(n // 2), torch.ones(n // 2)]).long()


def test_label_dropout_trains_one_network_for_conditional_and_unconditional_scores(tmp_path):
    # A small conditional ScoreMLP on the labelled ring; judged by where its samples land: the class
    # of each sample's most likely component (exact posterior of the mixture at eps).
    from diffsolve import checkpoint
    from diffsolve.nn import ScoreMLP
    from diffsolve.training import train

    lab, data, labels = _labelled_ring(20_000, seed=0)
    torch.manual_seed(0)
    model = ds.ScoreModel(ScoreMLP(dim=2, width=128, depth=2, num_classes=2), SDE, "eps")
    run = train(model, data, labels=labels, label_dropout=0.2, steps=800, batch_size=256, lr=2e-3,
                lr_schedule="cosine", ema_decay=0.99, seed=0, progress=False,
                checkpoint_dir=tmp_path / "ck", checkpoint_every=800)  # fmt: skip
    assert run.settings["label_dropout"] == 0.2 and run.settings["classes"] == 2
    learned = checkpoint.load(tmp_path / "ck")  # the label embedding travels with the weights

    def class_one_fraction(score):
        x = ds.sample(score, SDE, 2000, event_shape=(2,), solver="dpm_solver++2m", steps=30, seed=1).samples
        comp = lab.mixture.responsibilities(x.double(), 1e-3, SDE).argmax(1)
        return float((lab.labels[comp] == 1).double().mean())

    # measured after 800 steps: 0.98 conditional, 0.51 unconditional, 0.9995 guided (w = 2)
    assert class_one_fraction(ds.Conditional(learned, 1)) > 0.9
    assert 0.35 < class_one_fraction(ds.Conditional(learned, None)) < 0.65
    guided = ds.guided(ds.Conditional(learned, 1), ds.Conditional(learned, None), 2.0)
    assert class_one_fraction(guided) >= class_one_fraction(ds.Conditional(learned, 1))


def test_train_refuses_labels_it_cannot_use():
    from diffsolve.nn import ScoreMLP
    from diffsolve.training import train

    _, data, labels = _labelled_ring(100, seed=0)
    plain = ds.ScoreModel(ScoreMLP(dim=2, width=8, depth=1), SDE, "eps")
    with pytest.raises(ValueError, match="class-conditional network"):
        train(plain, data, labels=labels, steps=1, progress=False)
    cond = ds.ScoreModel(ScoreMLP(dim=2, width=8, depth=1, num_classes=2), SDE, "eps")
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        train(cond, data, labels=labels + 1, steps=1, progress=False)
    with pytest.raises(ValueError, match="labels holds 99 labels for 100"):
        train(cond, data, labels=labels[:99], steps=1, progress=False)
    with pytest.raises(TypeError, match="labels must be a 1-D integer tensor"):
        train(cond, data, labels=labels.float(), steps=1, progress=False)
    with pytest.raises(ValueError, match="label_dropout must be"):
        train(cond, data, labels=labels, label_dropout=1.0, steps=1, progress=False)


def test_a_wrapper_does_not_hide_a_score_of_another_sde_or_a_bad_output():
    # Issue: Conditional(lm.score_fn(VESDE()), 0) under VP collapsed the samples; guided() accepted an
    # unconditional score of another SDE; an unconditional score returning one row was broadcast.
    from diffsolve.guidance import Conditional, LabeledMixture, guided

    vp, ve = ds.VPSDE(), ds.VESDE()
    gm = ds.GaussianMixture.ring2d()
    lm = LabeledMixture(gm, list(range(8)))
    with pytest.raises(ValueError, match="the score was built for VESDE"):
        ds.sample(Conditional(lm.score_fn(ve), 0), vp, 16, solver="ddim", seed=0)
    with pytest.raises(ValueError, match="guidance combines scores of one SDE"):
        guided(Conditional(lm.score_fn(vp), 0), gm.score_fn(ve), 1.0)
    one_row = guided(Conditional(lm.score_fn(vp), 0), lambda x, t: gm.score_fn(vp)(x, t)[:1], 1.0)
    with pytest.raises(
        ValueError, match=r"the unconditional score returned shape \(1, 2\); expected x's shape \(16, 2\)"
    ):
        ds.sample(one_row, vp, 16, solver="ddim", seed=0, event_shape=(2,))
    bad = Conditional(lambda x, t, y: gm.score_fn(vp)(x, t).sum(), 0)
    with pytest.raises(ValueError, match=r"the conditional score score\(x, t, y\) returned shape \(\)"):
        ds.sample(bad, vp, 16, solver="ddim", seed=0, event_shape=(2,))


def test_guidance_of_one_model_evaluates_both_halves_in_one_network_call():
    # Issue: Guided called the network twice per evaluation where diffusers batches the conditional and
    # unconditional halves into one call. One model's Conditional(y) and Conditional(None) now go in one.
    from diffsolve.nn import ScoreMLP

    torch.manual_seed(0)
    net = ScoreMLP(2, width=32, depth=1, num_classes=4)
    calls = []
    net.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    model = ds.ScoreModel(net, ds.VPSDE(), "eps")
    x, t = torch.randn(16, 2), torch.full((16,), 0.5)
    g = ds.guided(ds.Conditional(model, 3), ds.Conditional(model, None), 2.0)
    out = g(x, t)
    assert calls == [32]  # one call on [x; x]
    with torch.no_grad():
        expected = 3.0 * model(x, t, torch.full((16,), 3)) - 2.0 * model(x, t, None)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    calls.clear()
    res = ds.sample(g, ds.VPSDE(), 8, event_shape=(2,), solver="ddim", steps=5, seed=0)
    assert res.nfe == 5 and calls == [16] * 5
