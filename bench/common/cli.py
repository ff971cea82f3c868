"""Command-line plumbing: a user mistake is one line on stderr and exit code 2, never a traceback."""
from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import time
from typing import Any, Callable, Sequence

# called when run_cli returns: bench.common.files adds the unlocking of the folders a run claimed
AT_EXIT: list[Callable[[], None]] = []
# the output folders this run claimed, newest last (bench.common.files.claim_run_dir adds each): a Ctrl-C names
# the one to --resume; run_cli empties it when it returns
RUN_DIRS: list[str] = []


class UsageError(Exception):
    """Bad input from the user. The message is printed as one line; the process exits 2."""


def squash(value: Any) -> str:
    """str(value) on one line: each run of whitespace (line breaks too) becomes one space, none at the ends."""
    return " ".join(str(value).split())


# seconds a torchrun rank other than 0 waits before printing an error line (see _say)
RANK_WAIT_S = 10.0


def reporting_rank() -> bool:
    """Whether this process is rank 0 or not a torchrun worker at all (torchrun sets TORCHELASTIC_RUN_ID; a RANK left
    in the shell is not torchrun's); a RANK that is not a number counts: it is the error."""
    rank = os.environ.get("RANK", "")
    if not (os.environ.get("TORCHELASTIC_RUN_ID") and rank.isdigit()):
        return True
    return int(rank) == 0


def _say(line: str) -> None:
    """Print an error line once under torchrun, where every rank meets the same error: rank 0 prints it at once;
    another rank waits first, and torchrun stops it when rank 0 exits (an error of that rank alone still shows)."""
    if not reporting_rank():
        time.sleep(RANK_WAIT_S)
    print(line, file=sys.stderr)


class ArgParser(argparse.ArgumentParser):
    """argparse, but an error is a single line naming what is wrong (and the valid choices)."""

    def error(self, message: str):  # noqa: D401 - argparse API
        _say(f"{self.prog}: error: {squash(message)}")
        self.exit(2)


def one_line(exc: BaseException, limit: int = 300, named: bool = False) -> str:
    """An exception in one line of at most `limit` characters: "Type: message" when `named`, the type if empty."""
    text = squash(exc) or type(exc).__name__
    text = f"{type(exc).__name__}: {text}" if named and text != type(exc).__name__ else text
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _number(kind: type, bound: str = "") -> Callable[[str], float]:
    """An argparse type: a finite int or float; bound "positive" (> 0) or "nonneg" (>= 0)."""
    noun = "an integer" if kind is int else "a number"
    want = {"positive": f"expected a positive {noun.split()[1]}", "nonneg": f"expected {noun} >= 0"}.get(bound)

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}" + (f" ({want})" if want else "")) from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if bound and (value < 0 or (bound == "positive" and value == 0)):
            what = "not positive" if bound == "positive" else "negative"
            raise argparse.ArgumentTypeError(f"{value} is {what} ({want})")
        return value
    parse.__name__ = f"{bound}_{kind.__name__}" if bound else f"finite_{kind.__name__}"
    return parse


positive_int, nonneg_int, finite_float = _number(int, "positive"), _number(int, "nonneg"), _number(float)
positive_float, nonneg_float = _number(float, "positive"), _number(float, "nonneg")


MAX_SEED = 2**32 - 1  # numpy takes seeds below 2**32; the harnesses add offsets and torch takes 64 bits


def seed_int(text: str) -> int:
    """An argparse type for a seed: 0 to MAX_SEED."""
    value = nonneg_int(text)
    if value > MAX_SEED:
        raise argparse.ArgumentTypeError(f"{value} is out of range (valid: 0 to {MAX_SEED})")
    return value


def int_at_least(least: int, refusal: str) -> Callable[[str], int]:
    """An argparse type: a positive integer >= `least`; `refusal` (formatted with value and least) says why not."""
    def parse(text: str) -> int:
        value = positive_int(text)
        if value < least:
            raise argparse.ArgumentTypeError(refusal.format(value=value, least=least))
        return value
    return parse


def thread_count(text: str) -> int:
    """An argparse type for --threads: an integer >= 0 (0: torch's default) and at most 4x the cores here
    (torch starts every thread it is asked for: 100000 exhausts the memory)."""
    value, most = nonneg_int(text), 4 * (os.cpu_count() or 1)
    if value > most:
        raise argparse.ArgumentTypeError(f"{value} is more than 4x the {most // 4} cores here (at most {most})")
    return value


def is_count(value: Any, whole: bool = True) -> bool:
    """A number >= 0 as a JSON file holds it (an int when `whole`), never a bool: for values read back from a run's
    files, which argparse types (they parse text) do not fit."""
    kinds = int if whole else (int, float)
    return isinstance(value, kinds) and not isinstance(value, bool) and value >= 0


def env_value(name: str, parse: Callable[[str], Any], default: str) -> Any:
    """Environment variable `name` (`default` when unset or empty) through the argparse type `parse`; a bad value
    is a UsageError naming the variable and what it takes."""
    text = os.environ.get(name) or default
    try:
        return parse(text)
    except argparse.ArgumentTypeError as exc:
        raise UsageError(f"environment variable {name}: {exc}") from None


def choice_list(valid: Sequence[str], what: str, item: Callable[[str], Any] | None = None) -> Callable[[str], list]:
    """An argparse type for 'a,b,c': unique items in the order given, each one of `valid` (or, with
    `item`, whatever `item` accepts); an empty or unknown item names the valid choices."""
    def parse(text: str) -> list:
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if item is None and t not in valid]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"{f'unknown {what} {bad[0]!r}' if bad else f'empty {what} list'}; "
                                             f"valid choices: {', '.join(valid)}")
        return list(dict.fromkeys(map(item, items) if item else items))
    return parse


def is_oom(exc: BaseException) -> bool:
    """Out of memory: torch.cuda.OutOfMemoryError, a MemoryError, or torch's CPU allocator refusing."""
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc))


def run_cli(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None, prog: str = "bench",
            resumable: bool = False) -> int:
    """Run `main(argv)`; turn UsageError (and a file system refusal, or running out of memory) into one
    line + exit 2, Ctrl-C into exit 130; under torchrun each line shows once. Rows already written stay; claimed
    output folders are unlocked."""
    try:
        return int(main(argv) or 0)
    except UsageError as exc:
        msg = squash(exc)
    except OSError as exc:  # disk full, read-only, permissions: the machine's answer, not a bug
        where = f" {exc.filename!r}" if exc.filename else ""
        msg = f"cannot write or read{where}: {squash(exc.strerror or exc)}"
    except (MemoryError, RuntimeError) as exc:  # size checks are lower bounds: at the edge of memory, still one line
        if not is_oom(exc):
            raise
        where = " in a new --out (--resume keeps a run's sizes)" if resumable else ""
        msg = f"out of memory ({one_line(exc)}); choose smaller sizes{where}"
    except KeyboardInterrupt:
        folder = shlex.quote(RUN_DIRS[-1]) if RUN_DIRS else "DIR"
        hint = f"; rows already written are kept (use --resume {folder} to finish)" if resumable else ""
        if reporting_rank():  # Ctrl-C reaches every rank at once
            print(f"{prog}: interrupted{hint}", file=sys.stderr)
        return 130
    finally:
        RUN_DIRS.clear()
        for release in AT_EXIT:
            release()
    _say(f"{prog}: error: {msg}")
    return 2
