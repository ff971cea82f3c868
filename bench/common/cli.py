"""Command-line plumbing: a user mistake is one line on stderr and exit code 2, never a traceback."""
from __future__ import annotations

import argparse
import math
import sys
from typing import Callable, Sequence


class UsageError(Exception):
    """Bad input from the user. The message is printed as one line; the process exits 2."""


class ArgParser(argparse.ArgumentParser):
    """argparse, but an error is a single line naming what is wrong (and the valid choices)."""

    def error(self, message: str):  # noqa: D401 - argparse API
        message = " ".join(str(message).split())
        self.exit(2, f"{self.prog}: error: {message}\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer (expected a positive integer)")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} is not positive (expected a positive integer)")
    return value


def nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer (expected an integer >= 0)")
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative (expected an integer >= 0)")
    return value


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number")
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} is not positive (expected a positive number)")
    return value


def nonneg_float(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative (expected a number >= 0)")
    return value


def run_cli(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None, prog: str = "bench",
            resumable: bool = True) -> int:
    """Run `main(argv)`; turn UsageError (and a file system refusal) into one line + exit 2, Ctrl-C
    into exit 130. Output folders the run claimed are unlocked on the way out.

    Results already written by `main` stay on disk in either case (harnesses flush row by row).
    """
    from bench.common.files import release_run_dirs

    try:
        return int(main(argv) or 0)
    except UsageError as exc:
        msg = " ".join(str(exc).split())
        print(f"{prog}: error: {msg}", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, read-only, permissions: the machine's answer, not a bug
        where = f" {exc.filename!r}" if exc.filename else ""
        print(f"{prog}: error: cannot write or read{where}: {' '.join(str(exc.strerror or exc).split())}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as exc:
        # the size checks are lower bounds: a run at the edge of memory still ends in one line
        if not isinstance(exc, MemoryError) and "can't allocate memory" not in str(exc) \
                and type(exc).__name__ != "OutOfMemoryError":
            raise
        print(f"{prog}: error: out of memory ({' '.join(str(exc).split())[:160]}); choose smaller sizes", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = "; rows already written are kept (use --resume DIR to finish)" if resumable else ""
        print(f"{prog}: interrupted{hint}", file=sys.stderr)
        return 130
    finally:
        release_run_dirs()
