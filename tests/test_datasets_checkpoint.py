import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import diffsolve as ds
from diffsolve import checkpoint, datasets
from diffsolve.nn import ScoreMLP


@pytest.mark.parametrize("name", datasets.TOY_DATASETS)
def test_toy_sets_are_deterministic_and_finite(name):
    a, b, c = (
        datasets.toy2d(name, 500, seed=1),
        datasets.toy2d(name, 500, seed=1),
        datasets.toy2d(name, 500, seed=2),
    )
    assert a.shape == (500, 2) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert bool(torch.isfinite(a).all()) and a.abs().max() < 10


def test_toy_set_geometry():
    # Independent facts of each construction: ring radii, moon centres, 8 clusters of radius 4/1.414.
    r = datasets.toy2d("rings", 20_000).norm(dim=1)
    for radius in (0.75, 1.5, 2.25, 3.0):  # four rings at 0.75 x 1..4, noise std 0.08
        assert ((r - radius).abs() < 0.3).float().mean() == pytest.approx(0.25, abs=0.02)
    g = datasets.toy2d("8gaussians", 20_000)
    assert g.norm(dim=1).median().item() == pytest.approx(4 / 1.414, rel=0.05)


def test_unknown_dataset_lists_the_valid_ones():
    with pytest.raises(ValueError, match="dataset must be one of 8gaussians, checkerboard.*; got 'spiral'"):
        datasets.toy2d("spiral", 10)
    with pytest.raises(ValueError, match="mixture must be one of ring2d, mixture16"):
        datasets.mixture("ring3d")


def test_digits_split_and_scaling():
    pytest.importorskip("sklearn")
    train, test = datasets.digits("train"), datasets.digits("test")
    assert train.shape == (1438, 1, 8, 8) and test.shape == (359, 1, 8, 8)
    assert float(train.min()) == 0.0 and float(train.max()) == 1.0
    # Levels are k / 16 exactly; the split is fixed (the same on every call) and disjoint.
    assert torch.equal((train * 16).round(), train * 16)
    assert torch.equal(train, datasets.digits("train"))
    flat_train = {tuple(v.tolist()) for v in train.flatten(1)}
    assert sum(tuple(v.tolist()) not in flat_train for v in test.flatten(1)) > 300  # a few digits repeat
    centred = datasets.digits("test", scale="[-1, 1]")
    torch.testing.assert_close(centred, 2 * test - 1)
    deq = ds.dequantize(centred, bins=datasets.DIGITS_LEVELS, low=-1.0, high=1.0)
    assert bool(((deq - centred).abs() <= 2 / 17).all())


def _model(**kw):
    torch.manual_seed(0)
    return ds.ScoreModel(ScoreMLP(2, width=32, depth=2, **kw), ds.VESDE(sigma_min=0.02, sigma_max=20.0), "x0")


def test_checkpoint_round_trip_is_bit_identical(tmp_path):
    model = _model(time_embedding="sinusoidal")
    checkpoint.save(tmp_path / "ck", model, metadata={"steps": 7, "data": {"scale": "[-1, 1]"}})
    loaded = checkpoint.load(tmp_path / "ck")
    x, t = torch.randn(16, 2), torch.rand(16) * 0.9 + 0.05
    assert torch.equal(model(x, t), loaded(x, t))
    assert loaded.sde == model.sde and loaded.parameterization == "x0"
    cfg = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert cfg["metadata"]["steps"] == 7 and cfg["format_version"] == checkpoint.FORMAT_VERSION
    # Usable as a score at once, by every sampler.
    assert ds.sample(loaded, loaded.sde, 8, event_shape=(2,), solver="ode:euler", steps=3).samples.shape == (
        8,
        2,
    )


def test_checkpoint_errors(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="does not exist"):
        checkpoint.load(tmp_path / "missing")
    path = checkpoint.save(tmp_path / "ck", _model())
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(checkpoint.CheckpointError, match="truncated or corrupted"):
        checkpoint.load(path)
    # A newer format version.
    newer = checkpoint.save(tmp_path / "new", _model())
    cfg, tensors = checkpoint.read_config(newer)
    cfg["format_version"] = checkpoint.FORMAT_VERSION + 1
    from safetensors.torch import save as st_save

    (newer / "model.safetensors").write_bytes(st_save(tensors, metadata={"diffsolve": json.dumps(cfg)}))
    with pytest.raises(checkpoint.CheckpointError, match="format version 2; .* upgrade diffsolve"):
        checkpoint.load(newer)
    # Mismatched shapes: weights of a width-32 network under a width-64 configuration.
    cfg["format_version"] = 1
    cfg["architecture"]["config"]["width"] = 64
    (newer / "model.safetensors").write_bytes(st_save(tensors, metadata={"diffsolve": json.dumps(cfg)}))
    with pytest.raises(checkpoint.CheckpointError, match="does not fit ScoreMLP"):
        checkpoint.load(newer)


def test_a_killed_save_leaves_the_previous_checkpoint_intact(tmp_path):
    path = checkpoint.save(tmp_path / "ck", _model())
    before = (path / "model.safetensors").read_bytes()
    # A child process starts writing a new checkpoint and is killed inside the write.
    script = textwrap.dedent(
        f"""
        import os, diffsolve.checkpoint as c
        real = os.replace
        def die(*a, **k):
            os._exit(9)  # killed after the temporary file is written, before the rename
        c.os.replace = die
        import torch, diffsolve as ds
        from diffsolve.nn import ScoreMLP
        torch.manual_seed(1)
        m = ds.ScoreModel(ScoreMLP(2, width=32, depth=2), ds.VPSDE())
        c.save({str(path)!r}, m)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], env={**os.environ})
    assert proc.returncode == 9
    assert (path / "model.safetensors").read_bytes() == before
    checkpoint.load(path)  # still loads
    leftovers = [p.name for p in Path(path).iterdir() if p.name not in ("model.safetensors", "config.json")]
    assert all(name.endswith(".tmp") for name in leftovers)


def test_only_diffsolve_networks_are_saved(tmp_path):
    with pytest.raises(TypeError, match="one of diffsolve's architectures"):
        checkpoint.save(tmp_path / "x", ds.ScoreModel(torch.nn.Linear(2, 2), ds.VPSDE()))


@pytest.mark.parametrize("shape", [(2, 1, 8, 8), (2, 3, 28, 28)])
def test_unet_shapes_and_checkpoint(tmp_path, shape):
    from diffsolve.nn import ScoreUNet

    torch.manual_seed(0)
    model = ds.ScoreModel(ScoreUNet(shape[1], base=8), ds.VPSDE(), "eps")
    x, t = torch.randn(shape), torch.rand(shape[0]) * 0.9 + 0.05
    assert model(x, t).shape == shape
    checkpoint.save(tmp_path / "u", model)
    assert torch.equal(checkpoint.load(tmp_path / "u")(x, t), model(x, t))


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_written_atomically_get_the_mode_the_umask_gives(tmp_path, umask):
    # mkstemp made every output 0600 whatever the umask (samples, checkpoints, plots unreadable to a group)
    from diffsolve.io import atomic_write_bytes

    old = os.umask(umask)
    try:
        path = atomic_write_bytes(tmp_path / "out.bin", b"x")
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o666 & ~umask
