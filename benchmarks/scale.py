"""Peak memory and time of large runs, in one batch and in chunks (`batch_size=`).

Each configuration runs in a fresh subprocess, so its peak resident memory (`ru_maxrss`) is its own.
Printed: peak RSS, seconds, and the chunked run's ratio to the one-batch run measured in the same
invocation; also whether the chunked samples equal the one-batch samples bit for bit.

Usage: `python benchmarks/scale.py` (n = 10^6 samples, about 2 minutes on 2 cores), or
`--small` (n = 10^5, for CI-sized checks). Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import hashlib, json, resource, sys, time
import torch
import diffsolve as ds
n, solver, steps, batch = json.loads(sys.argv[1])
torch.set_num_threads(1)
sde, ring = ds.VPSDE(), ds.GaussianMixture.ring2d()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
res = ds.sample(ring.score_fn(sde), sde, n, solver=solver, steps=steps, seed=0, batch_size=batch)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
digest = hashlib.sha256(res.samples.numpy().tobytes()).hexdigest()
print(json.dumps({"peak_mib": peak / 1024, "import_mib": base / 1024, "seconds": seconds, "digest": digest,
                  "nfe": res.nfe}))
"""


def run(n: int, solver: str, steps: int, batch: int | None) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps([n, solver, steps, batch])],
        capture_output=True, text=True, check=True, timeout=1800,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="n = 10^5 instead of 10^6")
    args = parser.parse_args()
    n = 10**5 if args.small else 10**6
    print(f"ring2d, VP, exact score, n = {n:,}, one thread, each run in a fresh process\n")
    print(
        "| solver | steps | batch_size | peak RSS (MiB) | seconds | peak vs one batch | time vs one batch | same bits |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for solver, steps in (("sde:euler", 100), ("ode:rk4", 20)):
        one = run(n, solver, steps, None)
        rows = [(None, one)] + [(b, run(n, solver, steps, b)) for b in (n // 10, n // 100)]
        for batch, r in rows:
            print(
                f"| `{solver}` | {steps} | {batch or 'one batch'} | {r['peak_mib']:.0f} | {r['seconds']:.1f} | "
                f"{r['peak_mib'] / one['peak_mib']:.2f} | {r['seconds'] / one['seconds']:.2f} | "
                f"{'yes' if r['digest'] == one['digest'] else 'no'} |"
            )
    print(
        f"\n(peak RSS includes about {one['import_mib']:.0f} MiB of Python, torch and diffsolve themselves)"
    )


if __name__ == "__main__":
    main()
