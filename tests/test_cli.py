import subprocess
import sys

import numpy as np
import pytest
import torch

import diffsolve as ds
from diffsolve.cli import main


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "demo" in out and "solvers" in out


def test_demo_help_is_complete(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    out = capsys.readouterr().out
    for flag in ("--n", "--steps", "--tol", "--eps", "--seed", "--no-progress"):
        assert flag in out


@pytest.mark.parametrize("command", ["demo", "train", "compare", "sample", "likelihood", "convergence"])
def test_help_shows_real_defaults_only(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    # Options left unset (None) or flags say what happens in their own words, never "(default: None)".
    assert "(default: None)" not in out and "(default: False)" not in out
    if command == "sample":
        assert (
            "(default: sde:euler)" in out
            and "(default: the solver's own, listed by `diffsolve solvers`" in out
        )
        assert "(default: [])" not in out


def test_solvers_lists_the_registry(capsys, monkeypatch):
    assert main(["solvers"]) == 0
    out = capsys.readouterr().out
    assert "sde:euler" in out and "ode:dopri5" in out and "pc" in out
    assert all(f"\n{s.name} " in out for s in ds.solvers())
    # it fits the terminal (it was 372 columns wide): at most 100 columns, or the terminal's width
    assert max(map(len, out.splitlines())) <= 100
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["solvers"]) == 0
    assert max(map(len, capsys.readouterr().out.splitlines())) <= 80


def test_demo_small_budget(capsys):
    assert main(["demo", "--n", "500", "--steps", "50", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "sde:euler" in out and "ode:dopri5" in out and "sliced W2" in out


def test_bad_flag_value_is_explained():
    proc = subprocess.run(
        [sys.executable, "-m", "diffsolve.cli", "demo", "--steps", "0"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "--steps: expected a positive integer, got '0'" in proc.stderr


def test_train_and_resume(tmp_path, capsys):
    out = str(tmp_path / "ck")
    args = [
        "train",
        "--dataset",
        "moons",
        "--steps",
        "20",
        "--out",
        out,
        "--width",
        "16",
        "--depth",
        "1",
        "--n-data",
        "500",
        "--checkpoint-every",
        "10",
        "--lr-schedule",
        "constant",
        "--no-progress",
    ]
    assert main(args) == 0
    assert "reached step 20 of 20 (20 in this run" in capsys.readouterr().out
    # the default cosine schedule's length is --steps: changing it on resume is a usage error
    cosine = [a for a in args if a not in ("--lr-schedule", "constant")]
    assert main([*cosine, "--resume", "--allow-change", "steps"]) == 2
    assert "--allow-change steps needs --lr-schedule constant" in capsys.readouterr().err
    args[args.index("20")] = "30"
    # Another --steps is refused unless allowed; another --sde or --n-data always.
    assert main([*args, "--resume"]) == 2
    assert (
        "--steps (saved 20, given 30); give the saved values (or --allow-change steps)"
        in capsys.readouterr().err
    )
    assert main([*args, "--resume", "--sde", "ve", "--n-data", "400", "--allow-change", "steps"]) == 2
    err = capsys.readouterr().err
    assert "--sde (saved 'vp', given 've'); --n-data (saved 500, given 400)" in err and "Traceback" not in err
    assert main(args) == 2  # a second fresh run on the same --out
    assert (
        "already holds a training run; --resume continues it, --overwrite starts again"
        in capsys.readouterr().err
    )
    assert main([*args, "--resume", "--allow-change", "steps"]) == 0
    assert "reached step 30 of 30 (10 in this run" in capsys.readouterr().out
    from diffsolve import checkpoint

    model = checkpoint.load(out)
    assert model.checkpoint_config["metadata"]["dataset"] == "moons"


def test_conditional_training_and_guided_class_sampling(tmp_path, capsys):
    out, samples = str(tmp_path / "cond"), tmp_path / "s.npy"
    assert main(["train", "--dataset", "ring2d", "--conditional", "--steps", "400", "--width", "64", "--depth",
                 "2", "--n-data", "5000", "--out", out, "--no-progress"]) == 0  # fmt: skip
    from diffsolve import VPSDE, checkpoint, datasets, metrics

    assert checkpoint.load(out).net.num_classes == 8  # the ring's components are the classes
    fractions = []
    for w in ("0", "2"):
        assert main(["sample", "--model", out, "--class", "3", "--guidance", w, "--solver", "dpm_solver++2m",
                     "--steps", "20", "--n", "2000", "--out", str(samples), "--no-progress"]) == 0  # fmt: skip
        assert f"class 3, guidance w = {w}" in capsys.readouterr().out
        x = torch.from_numpy(np.load(samples)).double()
        fractions.append(metrics.component_weights(x, datasets.mixture("ring2d"), 1e-3, VPSDE())[0][3].item())
    # measured after 400 steps: 39% of the class-3 samples in component 3 unguided, 88% at w = 2 (prior 12.5%)
    assert fractions[0] > 0.25 and fractions[1] > 0.7
    common = ["--n", "8", "--out", str(samples), "--no-progress"]
    assert main(["sample", "--model", out, "--class", "8", *common]) == 2
    assert "--class must be in 0..7 (the checkpoint's classes), got 8" in capsys.readouterr().err
    assert main(["sample", "--guidance", "2", *common]) == 2
    assert "--guidance needs --class" in capsys.readouterr().err
    assert main(["sample", "--class", "1", *common]) == 2  # an analytic problem is no class-conditional model
    assert "--class needs a class-conditional checkpoint" in capsys.readouterr().err
    assert (
        main(["train", "--dataset", "moons", "--conditional", "--steps", "1", "--out", str(tmp_path / "m")])
        == 2
    )
    assert (
        "--conditional needs a labelled dataset (digits or a mixture); --dataset moons"
        in capsys.readouterr().err
    )


def test_compare_on_a_digits_model_reports_the_feature_distance_and_skips_the_exact_trace(tmp_path, capsys):
    out = str(tmp_path / "digits")
    assert main(["train", "--dataset", "digits", "--steps", "5", "--width", "16", "--depth", "1",
                 "--out", out, "--no-progress"]) == 0  # fmt: skip
    assert main(["compare", "--model", out, "--solvers", "ddim", "--budgets", "3", "--n", "50", "--no-progress",
                 "--out", str(tmp_path / "cmp")]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "digits_fd_z" in text and "exact-vs-exact null:" in text and "digits_fd" in text.split("null:")[1]
    assert "the exact trace is left out at d = 64" in text and "| exact |" not in text
    assert "| hutchinson, 4 probes |" in text


def test_train_unknown_dataset(capsys):
    assert main(["train", "--dataset", "spiral", "--steps", "1", "--out", "x"]) == 2
    assert "--dataset must be one of 8gaussians" in capsys.readouterr().err


def test_sample_takes_a_time_grid_and_solver_options(tmp_path, capsys):
    # The CLI's options reach the solver: with noise removal off, Euler–Maruyama's samples are the
    # plain scheme's, which differ from the default run's by the last step's noise only.
    out_a, out_b = tmp_path / "a.npy", tmp_path / "b.npy"
    common = ["sample", "--solver", "sde:euler", "--steps", "20", "--n", "64", "--no-progress"]
    assert main([*common, "--out", str(out_a)]) == 0
    assert main([*common, "--option", "noise_removal=false", "--out", str(out_b)]) == 0
    a, b = np.load(out_a), np.load(out_b)
    assert a.shape == b.shape == (64, 2) and not np.array_equal(a, b)
    assert main(["sample", "--solver", "unipc", "--steps", "6", "--time-grid", "quadratic", "--option",
                     "variant=bh1", "--n", "32", "--no-progress", "--out", str(out_a)]) == 0  # fmt: skip
    assert "unipc, n = 32, NFE 6" in capsys.readouterr().out
    assert main(["sample", "--solver", "ddim", "--option", "snr=1", "--n", "8", "--out", str(out_a)]) == 2
    assert "'ddim' does not take 'snr'" in capsys.readouterr().err
    assert main(["sample", "--option", "oops", "--n", "8", "--out", str(out_a)]) == 2
    assert "--option must be NAME=VALUE" in capsys.readouterr().err


@pytest.mark.slow
def test_a_second_train_process_on_the_same_out_is_refused(tmp_path):
    # Two real processes: the first holds --out's lock while it trains; the second is refused with
    # a usage error naming the holder, and the first finishes untouched.
    import subprocess
    import sys
    import time

    out = tmp_path / "ck"
    argv = [sys.executable, "-m", "diffsolve.cli", "train", "--dataset", "moons", "--width", "16", "--depth", "1",
            "--n-data", "500", "--out", str(out), "--no-progress"]  # fmt: skip
    # no checkpoint before the end, so the second run meets the lock and not a saved run
    first = subprocess.Popen(
        [*argv, "--steps", "1000000", "--checkpoint-every", "1000000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        lock = out / ".diffsolve.lock"
        deadline = time.monotonic() + 60
        while not (lock.is_file() and lock.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert lock.read_text().strip() == str(first.pid)
        second = subprocess.run([*argv, "--steps", "5"], capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        assert (
            f"is in use by another run (pid {first.pid})" in second.stderr
            and "Traceback" not in second.stderr
        )
        assert first.poll() is None  # still training
    finally:
        first.kill()
        first.wait(timeout=30)


def test_compare_against_a_converged_solve_of_the_same_score(tmp_path, capsys):
    # --reference converged: 2n points of a float64 dopri5 solve at 1e-8; only density-free columns
    args = ["compare", "--solvers", "ddim", "--budgets", "3,40", "--n", "300", "--reference", "converged",
            "--no-likelihood", "--no-progress", "--out", str(tmp_path)]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "judged against a converged float64 dopri5 reference of 600 points" in out
    assert "c2st_p" in out and "ks_logp" not in out


def test_a_unet_gets_its_own_default_width(tmp_path):
    # --width defaulted to the MLP's 256, which as the U-Net's base channels built a 36 M-weight network
    from diffsolve import checkpoint

    out = tmp_path / "unet"
    assert main(["train", "--dataset", "digits", "--model", "unet", "--steps", "1", "--batch-size", "8",
                 "--out", str(out), "--no-progress"]) == 0  # fmt: skip
    model = checkpoint.load(out)
    weights = sum(p.numel() for p in model.parameters())
    assert 0.4e6 < weights < 0.8e6, weights  # base 32: 0.58 M


def test_likelihood_takes_steps_for_a_fixed_step_solver(capsys):
    # It told the user to "give steps" but had no --steps option.
    assert main(["likelihood", "--solver", "rk4", "--n", "20", "--no-progress"]) == 2
    assert "--solver rk4 is a fixed-step solver: give --steps N" in capsys.readouterr().err
    assert main(["likelihood", "--solver", "ode:rk4", "--steps", "20", "--n", "20", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "ode:rk4" in out and "NFE 80" in out  # 20 steps x 4 stages
    assert main(["likelihood", "--solver", "dopri5", "--steps", "20", "--n", "20"]) == 2
    assert "use --rtol/--atol" in capsys.readouterr().err


def test_the_cli_page_counts_and_names_every_command():
    from pathlib import Path

    from diffsolve.cli import COMMANDS

    words = {6: "six", 7: "seven", 8: "eight", 9: "nine", 10: "ten"}
    page = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    assert f"with {words[len(COMMANDS)]} commands" in page
    assert all(f"`{name}`" in page for name in COMMANDS)


def _diffusers_model(directory, scheduler: str, **config):
    """A small random diffusers UNet saved with `save_pretrained` beside a scheduler of that class."""
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    )  # fmt: skip
    unet.save_pretrained(directory)
    getattr(diffusers, scheduler)(**config).save_pretrained(directory)


def test_compare_a_diffusers_model_with_its_own_scheduler(tmp_path, capsys):
    # Issue: `diffsolve compare --diffusers DIR` runs the model's scheduler (its own loop) next to the
    # solver match_scheduler pairs it with and diffsolve's samplers, against a converged solve of the model.
    _diffusers_model(tmp_path / "model", "DPMSolverMultistepScheduler")
    args = ["compare", "--diffusers", str(tmp_path / "model"), "--n", "16", "--budgets", "3,5", "--no-progress",
            "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    for name in ("diffusers:DPMSolverMultistepScheduler", "dpm_solver++2m", "ipndm", "deis", "unipc"):
        assert f"| {name} | steps=3 |" in out
    assert "judged against a converged float64 dopri5 reference of 32 points" in out
    assert "diffusers:DPMSolverMultistepScheduler" not in [s.name for s in ds.solvers()]  # unregistered after
    assert main(["compare", "--diffusers", str(tmp_path / "model"), "--sde", "vp", "--no-progress"]) == 2


def test_compare_a_diffusers_flow_matching_model(tmp_path, capsys):
    # A flow-matching model (FlowMatchEulerDiscreteScheduler) is compared on RectifiedFlow() (T = 0.999),
    # where every solver starts, flow matching's own Euler and Heun among them.
    _diffusers_model(tmp_path / "model", "FlowMatchEulerDiscreteScheduler", shift=3.0)
    args = ["compare", "--diffusers", str(tmp_path / "model"), "--n", "16", "--budgets", "3,5", "--no-progress",
            "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "a flow-matching model; the comparison runs on RectifiedFlow() (T = 0.999)" in out
    for name in ("flow_euler", "flow_heun", "ipndm", "unipc"):
        assert f"| {name} | steps=3 |" in out
