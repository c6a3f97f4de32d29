"""Run the bad-input matrix (tests/_matrix.py) and count the outcomes per entry point.

Each probe calls one public entry point with one bad argument. Outcomes:

- clear: a ValueError/TypeError (or subclass) whose message names the argument;
- unnamed: such an error, but the message does not name the argument;
- other: any other exception (a traceback from inside torch, an allocator failure, ...);
- silent: no error at all: a result came back from bad input.

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

from _matrix import ALIASES, ENTRIES, probes  # noqa: E402

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


def main() -> int:
    ds.set_memory_limit("4GiB")
    counts: dict[str, collections.Counter] = {entry: collections.Counter() for entry in ENTRIES}
    failures = []
    for entry, argument, label, call in probes():
        outcome, message = judge(argument, call)
        counts[entry][outcome] += 1
        if outcome != "clear":
            failures.append(f"- {entry}, {argument} = {label}: {outcome}: {message[:160]}")
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
