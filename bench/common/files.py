"""Every file a bench CLI writes or reads; a fault is one line and exit 2. Output folders are checked before any
work, then held under an fcntl.flock on <folder>/.lock (the kernel drops a killed run's lock). CSV rows are appended
whole and fsynced, so a crash cuts at most the last line, which may hold a cut number and so is never data
(read_table refuses or leaves it out, drop_cut_tail truncates it). Whole files are replaced atomically."""
from __future__ import annotations

import atexit
import csv
import fcntl
import io
import json
import os
import re
import sys
import tempfile
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Callable, Iterator

from bench.common.cli import AT_EXIT, RUN_DIRS, UsageError, squash

LOCK = ".lock"
# Per CSV the suite writes: (columns a reader needs, columns holding text, columns holding a count -> its least
# value: digits of a whole number, as the writer prints it, so it parses as an int and keys a row; nothing only where
# the column is not needed); every other column holds a number or nothing. timings.rank<k>.csv (torchrun part files)
# are timings.
SCHEMAS = {
    "timings.csv": (("method", "level", "pass", "seq_len", "status"), frozenset(
        {"method", "level", "pass", "device", "dtype", "status", "reason", "mem_method", "backend", "finished_at"}),
        dict.fromkeys(("seq_len", "batch", "heads", "head_dim"), 1)),
    "final.csv": (("method", "seed"), frozenset({"method", "mem_method"}),
                  dict.fromkeys(("seed", "best_step", "nonfinite_steps", "steps", "tokens", "d_ff", "oom"), 0)),
    "curves.csv": (("method", "seed", "step", "split"), frozenset({"method", "split"}),
                   dict.fromkeys(("seed", "step", "tokens"), 0)),
    "diagnostics.csv": (("check", "verdict"),
                        frozenset({"check", "layer", "head", "quantity", "threshold", "verdict"}), {}),
}
_HELD: dict[Path, int] = {}  # lock file -> its descriptor, for every folder this process claimed


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _writable_base(folder: Path, out: str | Path, flag: str) -> Path:
    """The nearest existing folder at or above `folder` (the rest is made later), refused for `flag` `out` when it
    is a file or cannot be written in. Creates nothing (the probe folder that tests writing is removed at once:
    os.access says yes to root on /proc, /sys, read-only mounts)."""
    base = folder
    while not base.exists():
        base = base.parent
    if not base.is_dir():
        where = "is a file, not a folder" if base == Path(out) else f"cannot be made: {str(base)!r} is a file"
        raise UsageError(f"{flag} {str(out)!r} {where}; choose another path")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".bench-probe-", dir=base))
    except OSError as exc:
        raise UsageError(f"{flag} {str(out)!r}: cannot write in {str(base)!r} ({_why(exc)})") from None
    return base


def check_out_dir(out: str | Path, *, resume: bool = False, resumable: bool = True) -> None:
    """Refuse an output folder that cannot take this run. Creates nothing."""
    path = Path(out)
    base = _writable_base(path, out, "--out")
    if not resume and base == path and any(p.name != LOCK for p in path.iterdir()):
        hint = f"use --resume {out}" if resumable else "delete it"
        raise UsageError(f"output folder {str(out)!r} already holds results; choose a new --out or {hint}")


def check_out_file(out: str | Path, flag: str = "--out") -> None:
    """Refuse a file path that cannot be written (a folder, under a file, not writable); its folder may be missing
    (the writer makes it). Creates nothing."""
    if Path(out).is_dir():
        raise UsageError(f"{flag} {str(out)!r} is a folder; give a file path")
    _writable_base(Path(out).parent, out, flag)


def claim_run_dir(out: str | Path | None, *, tag: str = "cpu", kind: str = "", resume: bool = False,
                  resumable: bool = True, main: bool = True, broadcast: Callable[[Any], Any] | None = None) -> Path:
    """Create the run folder (default results/runs/<time>_<sha>_<tag>[_<kind>]) once the inputs are valid and
    lock it until the process ends. Under torchrun rank 0 (`main`) claims and `broadcast` hands its answer to
    every rank, so all get the folder or the same one-line error, and none waits forever."""
    made = None
    if main:
        try:
            made = ("ok", str(_claim(out, tag, kind, resume, resumable)))
        except UsageError as exc:
            made = ("error", str(exc))
    status, text = broadcast(made) if broadcast is not None else made
    if status == "error":
        raise UsageError(text)
    RUN_DIRS.append(text)  # a Ctrl-C from here on names this folder to --resume
    return Path(text)


def _claim(out: str | Path | None, tag: str, kind: str, resume: bool, resumable: bool) -> Path:
    try:
        if out is None:
            from bench.common.env import git_info

            sha = git_info()["sha_short"] or "nogit"
            name = f"{time.strftime('%Y%m%d-%H%M%S')}_{sha}_{tag}" + f"_{kind}" * bool(kind)
            for i in range(1000):  # -1, -2... for runs started in the same second; mkdir decides who gets which
                out = Path("results") / "runs" / (f"{name}-{i}" if i else name)
                with suppress(FileExistsError):
                    out.mkdir(parents=True)
                    break
        path = Path(out)
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create output folder {str(out)!r} ({_why(exc)})") from None
    _lock(path / LOCK)
    try:  # under the lock: a run that started and ended since the first check counts
        check_out_dir(path, resume=resume, resumable=resumable)
    except UsageError:
        release_run_dirs()
        raise
    return path


def _holder(fd: int) -> str:  # the pid its holder wrote in the lock file
    return os.read(fd, 32).decode(errors="replace").strip() or "unknown"


def _lock(lock: Path) -> None:
    if lock.resolve() in _HELD:  # claimed by an earlier run in this same process (tests call main() in turn)
        return
    for _ in range(10):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UsageError(f"cannot lock the output folder {str(lock.parent)!r} ({_why(exc)})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise UsageError(f"output folder {str(lock.parent)!r} is in use by another run (pid {holder}); wait "
                             "for it to finish or choose another folder") from None
        if lock.exists() and os.stat(lock).st_ino == os.fstat(fd).st_ino:  # not one its holder just removed
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            _HELD[lock.resolve()] = fd
            return
        os.close(fd)
    raise UsageError(f"could not lock {str(lock)!r}: other runs keep replacing it")


def in_use(folder: str | Path) -> str | None:
    """The pid of a run that holds `folder` locked right now, else None."""
    try:
        fd = os.open(Path(folder) / LOCK, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        return _holder(fd)
    finally:
        os.close(fd)


@atexit.register
def release_run_dirs() -> None:
    """Remove the lock files this process holds (while still holding them), then unlock."""
    while _HELD:
        lock, fd = _HELD.popitem()
        lock.unlink(missing_ok=True)
        os.close(fd)


AT_EXIT.append(release_run_dirs)


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """A temp path in the same folder, moved over `path` when the block ends without error. A file system
    refusal names `path`, the file the user asked for, not the temp file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{os.urandom(4).hex()}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno is None:  # not the file system's answer (a library's own OSError): as it is
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    finally:
        with suppress(OSError):  # a read-only file system refuses even this: the error above is the one to tell
            tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def read_json(path: str | Path, what: str = "") -> dict:
    """A JSON object; UsageError naming the file (or `what`) and what is wrong with it."""
    name = what or str(path)
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read {name} ({_why(exc)})") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise UsageError(f"{name} is cut or not JSON ({squash(exc)})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{name} holds a JSON {type(data).__name__}, not an object")
    return data


def read_env(run_dir: str | Path) -> dict:
    """A run folder's env.json as a dict; {} when missing or unreadable (callers say 'unknown')."""
    with suppress(UsageError):
        return read_json(Path(run_dir) / "env.json")
    return {}


def read_run_env(run_dir: str | Path, prog: str) -> dict:
    """The env.json of a folder given to --resume; UsageError (one line) when it is not a run of `prog`."""
    p = Path(run_dir)
    if not (p / "env.json").is_file():
        where = "no env.json there" if p.is_dir() else "a file, not a folder" if p.exists() else "no such folder"
        raise UsageError(f"--resume {str(run_dir)!r}: {where}; give a run folder written by {prog}")
    return read_json(p / "env.json", f"--resume {str(run_dir)!r}: env.json")


def note_resume(run_dir: Path, env: dict, **facts: Any) -> None:
    """Record in env.json when, how and by which commit a run was resumed; warn on stderr when that commit is not
    the one the run started at (env.json's git), whose rows the new ones join."""
    from bench.common.env import git_info  # imports torch, which a resumed run has loaded already

    git, started = git_info(), (env.get("git") or {}).get("sha")
    if git["sha"] != started:
        print(f"warning: --resume {str(run_dir)!r} runs commit {git['sha_short'] or 'unknown'}, but the run started "
              f"at {str(started or 'unknown')[:8]}: its rows will come from both (env.json records each resume's "
              "commit)", file=sys.stderr)
    env.setdefault("resumes", []).append({"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "git": git, **facts})
    write_json(Path(run_dir) / "env.json", env)


def cell(value: Any) -> str:
    """One CSV field: floats round-trip (repr), None is empty, text is one line."""
    if isinstance(value, float):
        return repr(float(value))  # a numpy float's own repr is "np.float64(...)"
    return "" if value is None else squash(value)


class CsvLog:
    """An appended CSV with a fixed header; every row is written whole and synced to disk."""

    def __init__(self, path: str | Path, columns: list[str], fmt: Callable[[Any], str] = cell):
        self.path, self.columns, self.fmt = Path(path), list(columns), fmt

    def _text(self, rows: list[dict], header: bool) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerows(([self.columns] if header else []) + [[self.fmt(r.get(c)) for c in self.columns] for r in rows])
        return buf.getvalue()

    def append(self, row: dict) -> None:
        with open(self.path, "a", encoding="utf-8", newline="") as fh:
            fh.write(self._text([row], header=fh.tell() == 0))  # append mode starts at the end: 0 means empty
            fh.flush()
            os.fsync(fh.fileno())

    def rewrite(self, rows: list[dict]) -> None:
        """Replace the whole file (header and `rows`) atomically."""
        write_text(self.path, self._text(rows, header=True))


def _cut(path: Path, data: bytes) -> tuple[int, str] | None:
    """(where the complete lines end, a sentence naming the cut last line) or None."""
    end = data.rfind(b"\n") + 1
    if end == len(data):
        return None
    text, line = data[end:].decode("utf-8", errors="replace"), data.count(b"\n") + 1
    return end, (f"{path}: line {line} is cut off (no newline at its end; the run stopped while writing it): "
                 f"{text if len(text) <= 60 else text[:57] + '...'!r}")


def drop_cut_tail(path: str | Path) -> str | None:
    """Truncate a cut last line away before appending again; returns what was dropped, as a sentence."""
    path = Path(path)
    cut = _cut(path, path.read_bytes()) if path.is_file() else None
    if cut is None:
        return None
    with open(path, "rb+") as fh:
        fh.truncate(cut[0])
        os.fsync(fh.fileno())
    return cut[1] + "; dropped, that row is measured again"


def read_table(path: str | Path, *, required: tuple[str, ...] | None = None, schema: str | None = None,
               cut: str = "error") -> list[dict]:
    """Rows of a CSV the suite wrote, as dicts of strings ([] without a file). The header must name `required`
    and every row must have its field count and in each column what its schema says (SCHEMAS[schema], by default
    the file's name), else UsageError. A cut last line is a UsageError too (cut="error") or left out ("drop")."""
    path = Path(path)
    schema = re.sub(r"\.rank\d+\.csv$", ".csv", path.name) if schema is None else schema
    req, text, counts = SCHEMAS.get(schema, ((), frozenset(), {}))
    required = req if required is None else required
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise UsageError(f"cannot read {path} ({_why(exc)})") from None
    tail = _cut(path, data)
    if tail is not None and cut != "drop":
        raise UsageError(tail[1] + "; resume the run that wrote it or delete that line")
    try:
        lines = enumerate(csv.reader(io.StringIO(data[: tail[0] if tail else None].decode("utf-8"))), 1)
        records = [(n, rec) for n, rec in lines if rec]  # blank lines are no rows
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"{path} is not a CSV written by bench ({exc})") from None
    header = records[0][1] if records else list(required)
    missing = [c for c in required if c not in header]
    if missing or len(set(header)) != len(header):
        what = f"lacks column(s) {', '.join(missing)}" if missing else "repeats a column name"
        raise UsageError(f"{path}: the header {what} (is it a file written by bench?)")
    numbers = [i for i, c in enumerate(header) if c not in text]
    for line, rec in records[1:]:
        if len(rec) != len(header):
            raise UsageError(f"{path}: line {line} has {len(rec)} fields where the header has {len(header)}")
        for i in numbers:
            try:
                float(rec[i] or 0)
            except ValueError:
                raise UsageError(f"{path}: line {line}: {header[i]} = {rec[i]!r} is not a number") from None
            least = counts.get(header[i])
            if least is None or not (rec[i] or header[i] in required):
                continue
            if not re.fullmatch("0|[1-9][0-9]*", rec[i]) or int(rec[i]) < least:
                raise UsageError(f"{path}: line {line}: {header[i]} = {rec[i]!r} is not a whole number >= {least} "
                                 "(digits only)")
    return [dict(zip(header, rec)) for _, rec in records[1:]]
