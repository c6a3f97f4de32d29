"""Run the bad-input matrix (tests/_matrix.py) and count the outcomes per entry point.

Each probe calls one public entry point with one bad argument, or runs one CLI command with one
bad option. Outcomes:

- clear: a ValueError/TypeError (or subclass) whose message names the argument; for the CLI, exit
  status 2 with a one-line `diffsolve COMMAND: error: ...` naming the option, no traceback;
- unnamed: such an error, but the message does not name the argument (or option);
- other: any other exception (a traceback from inside torch, an allocator failure, ...), or for the
  CLI another exit status or a traceback;
- silent: no error at all: a result came back from bad input (CLI: exit status 0).

The memory limit is set to 4 GiB, as in the tests, so the huge-size probes are judged the same
way on every machine. Usage: `python scripts/bad_input_campaign.py` (about 10 s); the table is
recorded in docs/reliability.md.
"""

from __future__ import annotations

import collections
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _matrix import ALIASES, CLI_ENTRIES, ENTRIES, cli_probes, probes  # noqa: E402

import diffsolve as ds  # noqa: E402

OUTCOMES = ("clear", "unnamed", "other", "silent")


class _Timeout(Exception):
    pass


def _alarm(*_: object) -> None:
    raise _Timeout


def judge(argument: str, call) -> tuple[str, str]:
    """The outcome of one probe and the message it produced (20 s at most per probe)."""
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(20)
    try:
        call()
        return "silent", ""
    except _Timeout:
        return "other", "timed out after 20 s"
    except (ValueError, TypeError) as err:
        names = ALIASES.get(argument, (argument,))
        return ("clear" if any(n in str(err) for n in names) else "unnamed"), str(err)
    except Exception as err:  # noqa: BLE001 - counting what escapes is the point
        return "other", f"{type(err).__name__}: {err}"
    finally:
        signal.alarm(0)


def judge_cli(command: str, option: str, argv: list[str], tmp: str) -> tuple[str, str]:
    """The outcome of one CLI probe: `diffsolve` run in-process with stderr captured."""
    import contextlib
    import io

    from diffsolve.cli import main as cli

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = cli([a.replace("{tmp}", tmp) for a in argv])
        except SystemExit as exit_:
            status = exit_.code
        except Exception as exc:  # noqa: BLE001 - a traceback is an outcome here
            return "other", f"{type(exc).__name__}: {exc}"
    text = err.getvalue()
    if status == 0:
        return "silent", ""
    one_line = f"diffsolve {command}: error: " in text and "Traceback" not in text
    named = option in text or option.lstrip("-").split("-")[0] in text
    if status != 2 or not one_line:
        return "other", f"exit {status}: {text.strip()[-160:]}"
    return ("clear" if named else "unnamed"), text.strip()


def main() -> int:
    import tempfile

    if hasattr(ds, "set_memory_limit"):
        ds.set_memory_limit("4GiB")
    counts: dict[str, collections.Counter] = {entry: collections.Counter() for entry in ENTRIES}
    counts.update({f"diffsolve {c}": collections.Counter() for c in CLI_ENTRIES})
    failures = []
    for entry, argument, label, call in probes():
        outcome, message = judge(argument, call)
        counts[entry][outcome] += 1
        if outcome != "clear":
            failures.append(f"- {entry}, {argument} = {label}: {outcome}: {message[:160]}")
    for command, option, label, argv in cli_probes():
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "file").write_text("a regular file")
            outcome, message = judge_cli(command, option, argv, tmp)
        counts[f"diffsolve {command}"][outcome] += 1
        if outcome != "clear":
            failures.append(f"- diffsolve {command} {option} = {label}: {outcome}: {message[:160]}")
    print("| entry point | probes | " + " | ".join(OUTCOMES) + " |")
    print("| --- | ---: |" + " ---: |" * len(OUTCOMES))
    total: collections.Counter = collections.Counter()
    for entry, c in counts.items():
        total.update(c)
        print(f"| `{entry}` | {sum(c.values())} | " + " | ".join(str(c[o]) for o in OUTCOMES) + " |")
    print(
        f"| **all** | **{sum(total.values())}** | " + " | ".join(f"**{total[o]}**" for o in OUTCOMES) + " |"
    )
    if failures:
        print("\nNot clear:\n" + "\n".join(failures))
    return 0 if total["clear"] == sum(total.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
