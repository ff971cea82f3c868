"""Command-line plumbing: a user mistake is one line on stderr and exit code 2, never a traceback."""
from __future__ import annotations

import argparse
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


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (expected a positive number)")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} is not positive (expected a positive number)")
    return value


def run_cli(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None, prog: str = "bench") -> int:
    """Run `main(argv)`; turn UsageError into one line + exit 2, Ctrl-C into exit 130.

    Results already written by `main` stay on disk in either case (harnesses flush row by row).
    """
    try:
        return int(main(argv) or 0)
    except UsageError as exc:
        msg = " ".join(str(exc).split())
        print(f"{prog}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; rows already written are kept (use --resume DIR to finish)", file=sys.stderr)
        return 130
