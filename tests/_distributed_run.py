"""Run under `python -m torch.distributed.run --nproc-per-node 2 tests/_distributed_run.py OUT MODE`
(by tests/test_distributed.py): every rank solves its shard; rank 0 writes the gathered results.

MODE "solve": sample and log_likelihood with several solvers, gathered on every rank and on rank 0.
MODE "die": rank 1 exits at once; rank 0's gather must fail within the group's timeout, not hang."""

import datetime
import os
import sys
import warnings

import numpy as np
import torch
import torch.distributed as dist

import diffsolve as ds

out, mode = sys.argv[1], sys.argv[2]
torch.set_num_threads(1)
dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=30))
rank = dist.get_rank()
vp, ring = ds.VPSDE(), ds.GaussianMixture.ring2d()
score = ring.score_fn(vp)

if mode == "die":
    if rank == 1:
        os._exit(3)
    ds.sample(score, vp, 41, solver="ddim", steps=4, seed=0)  # the gather meets a dead peer
    sys.exit(0)

# Every fixed-step, batch-invariant solver the registry holds (tests/test_distributed.py reads the same
# list), and dopri5, whose steps differ per shard; chunks of 9 inside each rank's shard.
OPTIONS = {"pc": {"step_size": "sample"}}
FIXED = [s.name for s in ds.solvers() if not s.adaptive and s.is_batch_invariant(OPTIONS.get(s.name))]
results = {}
for solver in [*FIXED, "ode:dopri5"]:
    budget = {} if solver == "ode:dopri5" else {"steps": 6}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ode:explicit_adams warns of its instability
        res = ds.sample(
            score, vp, 41, solver=solver, seed=3, batch_size=9, **budget, **OPTIONS.get(solver, {})
        )
    results[f"sample-{solver}"] = res.samples.numpy()
    results[f"nfe_per_rank-{solver}"] = np.array(res.settings["nfe_per_rank"])
x = ring.sample(23, seed=1)
lik = ds.log_likelihood(score, vp, x, divergence="hutchinson", probes=2, seed=4, solver="rk4", steps=10)
results["loglik-hutchinson"] = lik.log_prob.numpy()
results["loglik-exact"] = ds.log_likelihood(score, vp, x).log_prob.numpy()
only = ds.sample(score, vp, 41, solver="ddim", steps=6, seed=3, gather="rank0").samples
results[f"rank0-shape-{rank}"] = np.array(only.shape)
shapes = [None, None]
shape = torch.tensor(only.shape)
parts = [torch.zeros_like(shape) for _ in range(2)]
dist.all_gather(parts, shape)
if rank == 0:
    results["rank0-shapes"] = torch.stack(parts).numpy()
    np.savez(os.path.join(out, "results.npz"), **results)
dist.destroy_process_group()
