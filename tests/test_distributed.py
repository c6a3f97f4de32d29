"""torch.distributed with two gloo processes on the CPU, launched by torchrun (torch.distributed.run):
the gathered results equal the single-process ones bit for bit, and a rank that dies makes the run
fail within the process group's timeout instead of hanging."""

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import diffsolve as ds

HERE = Path(__file__).parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def _torchrun(tmp_path, *args, timeout=300):
    return subprocess.run(
        [*TORCHRUN, *args], capture_output=True, text=True, timeout=timeout, cwd=tmp_path,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip


@pytest.mark.slow
def test_two_ranks_give_the_single_process_result(tmp_path):
    proc = _torchrun(tmp_path, str(HERE / "_distributed_run.py"), str(tmp_path), "solve")
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.load(tmp_path / "results.npz")
    torch.set_num_threads(1)
    vp, ring = ds.VPSDE(), ds.GaussianMixture.ring2d()
    score = ring.score_fn(vp)
    options = {"pc": {"step_size": "sample"}}  # as in _distributed_run.py
    fixed = [s.name for s in ds.solvers() if not s.adaptive and s.is_batch_invariant(options.get(s.name))]
    assert len(fixed) >= 15
    for solver in fixed:  # every fixed-step, batch-invariant solver in the registry
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            one = ds.sample(score, vp, 41, solver=solver, steps=6, seed=3, **options.get(solver, {}))
        np.testing.assert_array_equal(
            got[f"sample-{solver}"], one.samples.numpy(), err_msg=solver
        )  # bit for bit
        assert list(got[f"nfe_per_rank-{solver}"]) == [one.nfe, one.nfe], solver
    # dopri5 chooses its steps per shard (rows 0-19 and 20-40): each meets the tolerance
    one = ds.sample(score, vp, 41, solver="ode:dopri5", seed=3).samples.numpy()
    np.testing.assert_allclose(got["sample-ode:dopri5"], one, atol=2e-3)
    x = ring.sample(23, seed=1)
    lik = ds.log_likelihood(score, vp, x, divergence="hutchinson", probes=2, seed=4, solver="rk4", steps=10)
    np.testing.assert_array_equal(got["loglik-hutchinson"], lik.log_prob.numpy())
    np.testing.assert_allclose(
        got["loglik-exact"], ds.log_likelihood(score, vp, x).log_prob.numpy(), atol=2e-3
    )
    # gather="rank0": rank 0 has all 41 rows, rank 1 its own 21
    assert got["rank0-shapes"].tolist() == [[41, 2], [21, 2]]


@pytest.mark.slow
def test_a_rank_that_dies_fails_the_run_instead_of_hanging(tmp_path):
    proc = _torchrun(tmp_path, str(HERE / "_distributed_run.py"), str(tmp_path), "die", timeout=240)
    assert proc.returncode != 0
    assert "exitcode" in proc.stderr or "Error" in proc.stderr


@pytest.mark.slow
def test_the_cli_under_torchrun_writes_once_and_equals_one_process(tmp_path):
    argv = ["-m", "diffsolve", "sample", "--n-samples", "30", "--solver", "sde:euler", "--steps", "5", "--seed", "2",
            "--no-progress"]  # fmt: skip
    proc = _torchrun(tmp_path, *argv, "--out", str(tmp_path / "two.npy"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("samples: ") == 1  # rank 0 alone reports
    single = subprocess.run(
        [sys.executable, *argv, "--out", str(tmp_path / "one.npy")], capture_output=True, text=True, timeout=120,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert single.returncode == 0, single.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "two.npy"), np.load(tmp_path / "one.npy"))


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "train_state.safetensors"))


@pytest.mark.slow
def test_train_under_torchrun_uses_ddp_and_resumes_with_another_number_of_processes(tmp_path):
    import os

    base = ["-m", "diffsolve", "train", "--dataset", "moons", "--width", "16", "--depth", "1", "--n-data", "500",
            "--batch-size", "64", "--checkpoint-every", "10", "--lr-schedule", "constant", "--no-progress"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = _torchrun(tmp_path, *base, "--steps", "20", "--out", str(tmp_path / "two"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("reached step 20") == 1  # rank 0 alone reports
    one = subprocess.run([sys.executable, *base, "--steps", "20", "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert one.returncode == 0, one.stderr
    # The same global batch, its halves on two ranks with DDP averaging the gradients: the same
    # weights up to float reassociation (measured: 6e-8 at most after 20 steps; Adam can amplify it).
    two_w, one_w = _weights(tmp_path / "two"), _weights(tmp_path / "one")
    for k in one_w:
        if k.startswith(("model.", "ema.")):
            torch.testing.assert_close(two_w[k], one_w[k], rtol=0, atol=1e-4)
    torch.testing.assert_close(two_w["rng"], one_w["rng"])  # the generator does not depend on the ranks
    # resume the two-process run in one process
    more = subprocess.run([sys.executable, *base, "--steps", "30", "--allow-change", "steps", "--resume",
                           "--out", str(tmp_path / "two")], capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert more.returncode == 0, more.stderr
    assert "reached step 30 of 30 (10 in this run" in more.stdout
    assert not list((tmp_path / "two").glob(".*.tmp"))


@pytest.mark.slow
def test_ranks_launched_with_different_arguments_are_refused_by_name(tmp_path):
    # Two ranks started by hand with --seed 3 and --seed 4 both exited 0 and wrote a mix of two runs.
    import os
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank, seed in ((0, "3"), (1, "4")):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "DIFFSOLVE_DIST_TIMEOUT": "60"}  # fmt: skip
        cmd = [sys.executable, "-m", "diffsolve", "sample", "--n", "20", "--steps", "5", "--seed", seed,
               "--no-progress", "--out", str(tmp_path / "x.npy")]  # fmt: skip
        procs.append(
            subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 2, err
        assert "the ranks were launched with different arguments (--seed: rank 0 3, rank 1 4)" in err
    assert not (tmp_path / "x.npy").exists()
