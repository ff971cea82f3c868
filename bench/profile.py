"""python -m bench.profile --method NAME --seq-len N: where one benchmark cell spends its time. Builds the cell as
the scaling sweep does (its registry and CellSpec), warms it up, times it, then runs it under torch.profiler.
Exit codes: 0 every cell measured, or out of memory (a line of the report); 1 a cell failed for another reason, or
none was measured; 2 bad input (unknown method, unsupported level/pass, device or dtype); 130 Ctrl-C."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Sequence

import torch

from bench.common.cli import (ArgParser, UsageError, choice_list, is_oom, nonneg_int, one_line, positive_float,
                              positive_int, run_cli)
from bench.common.device import DTYPES, resolve_device, resolve_dtype
from bench.common.env import cpu_model, git_info
from bench.common.memory import free_memory
from bench.common.timing import synchronize, time_calls
from bench.scaling.grid import DEVICE_DEFAULTS, CellSpec
from bench.scaling.registry import METHODS, stride_refusal
from bench.scaling.schema import LEVELS, PASSES

os.environ.setdefault("KINETO_LOG_LEVEL", "99")  # kineto's start/stop lines would interleave with the report
PROG = "python -m bench.profile"


def build_parser() -> ArgParser:
    p = ArgParser(prog=PROG, description="Profile one cell of the scaling benchmark (one method, one length): time "
                  "per call (CUDA events on a GPU, wall clock on CPU), device or CPU self time per call, kernel "
                  "launches per call and the top ops.")
    a = p.add_argument
    a("--method", type=choice_list(["names of python -m bench.scaling --list-methods"], "method", str), required=True,
      help="a method of python -m bench.scaling --list-methods, or a comma list (e.g. wave,softmax-sdpa): each is "
      "profiled at each length")
    a("--seq-len", type=choice_list(["positive integers, e.g. 2048,32768"], "length", positive_int), required=True,
      help="sequence length N, or a comma list (e.g. 2048,32768)")
    a("--device", default="auto", help="auto (CUDA when available, else CPU), cpu, cuda or cuda:N (default auto)")
    a("--dtype", choices=list(DTYPES), help="input dtype (default: float32 on CPU, bfloat16 on CUDA)")
    a("--batch", type=positive_int, help="batch B (default: 1 on CPU, 8 on CUDA)")
    a("--heads", type=positive_int, default=8, help="heads H (default 8)")
    a("--head-dim", type=positive_int, default=64, help="head width d at core/layer level (default 64)")
    a("--field-stride", type=positive_float, default=4.0, help="wave field stride s (default 4)")
    a("--level", choices=LEVELS, default="core", help="benchmark level (default core)")
    a("--pass", dest="pass_", choices=PASSES, default="fwd", help="fwd or fwdbwd (default fwd)")
    a("--warmup", type=nonneg_int, default=3, help="untimed calls first (default 3)")
    a("--reps", type=positive_int, default=10, help="calls timed, and calls profiled (default 10)")
    a("--top", type=positive_int, default=15, help="ops listed (default 15)")
    a("--out", help="also write the report to this text file (its folder must exist)")
    return p


def _method(name: str, args, device: torch.device, dtype: torch.dtype):
    if name not in METHODS:
        raise UsageError(f"unknown method {name!r}; valid choices: {', '.join(METHODS)}")
    method = METHODS[name]
    if not method.supports(args.level, args.pass_):
        raise UsageError(f"method {name!r} has no {args.level}/{args.pass_} cell; it runs levels "
                         f"{', '.join(method.levels)} and passes {', '.join(method.passes)}")
    if why := method.why_unavailable(device, dtype):
        raise UsageError(f"method {name!r} is not available here: {why}")
    return method


def profile_cell(fn, device: torch.device, warmup: int, reps: int):
    """Seconds per call of `reps` calls (the suite's clock: CUDA events on a GPU, time.perf_counter on CPU) and the
    profiler's key_averages of `reps` more."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(warmup):
        fn()
    per_call = time_calls(fn, device, reps)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(reps):
            fn()
        synchronize(device)
    return per_call, prof.key_averages()


def provenance(device: torch.device) -> str:
    """One line saying what produced the report: the commit (+dirty: with uncommitted changes), torch, the device."""
    git = git_info()
    commit = f"{git['sha_short']}{'+dirty' if git['dirty'] else ''}" if git["sha"] else "unknown (no git metadata)"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    return f"{PROG}: commit {commit}, torch {torch.__version__}, device {device} ({name})"


def report(averages, call_s: float, device: torch.device, reps: int, top: int) -> list[str]:
    on_cuda = device.type == "cuda"
    if on_cuda:  # device-side events only: an aten op's device time is its kernels' time again
        from torch.autograd import DeviceType

        timed = [(e, float(getattr(e, "self_device_time_total", 0.0) or 0.0)) for e in averages
                 if getattr(e, "device_type", None) == DeviceType.CUDA]
    else:
        timed = [(e, float(e.self_cpu_time_total)) for e in averages if e.self_cpu_time_total > 0]
    total_us = sum(t for _, t in timed)
    where = "device (CUDA) time" if on_cuda else "CPU self time (under the profiler)"
    clock = "time per call (CUDA events)" if on_cuda else "wall time per call (time.perf_counter)"  # time_calls' clocks
    lines = [f"{clock}: {call_s * 1e3:.3f} ms", f"{where} per call: {total_us / reps / 1e3:.3f} ms"]
    if on_cuda:  # memcpy / memset are device events but not kernel launches
        launches = sum(e.count for e, _ in timed if not e.key.lower().startswith(("memcpy", "memset")))
        lines.append(f"kernel launches per call: {launches / reps:.1f}")
    else:
        ops = sum(e.count for e in averages if e.key.startswith("aten::"))
        lines.append(f"kernel launches per call: n/a on cpu (aten ops per call, nested included: {ops / reps:.1f})")
    lines.append(f"top {top} {'kernels' if on_cuda else 'ops'} by {where.split(' (under')[0]}:")
    rows = sorted(timed, key=lambda et: et[1], reverse=True)[:top]
    width = max([len("op")] + [min(len(e.key), 70) for e, _ in rows])
    lines.append(f"  {'op':<{width}}  {'calls/call':>10}  {'ms/call':>9}  {'share':>6}")
    for e, t in rows:
        name = e.key if len(e.key) <= 70 else e.key[:67] + "..."
        share = 100.0 * t / total_us if total_us > 0 else 0.0
        lines.append(f"  {name:<{width}}  {e.count / reps:>10.1f}  {t / reps / 1e3:>9.3f}  {share:>5.1f}%")
    return lines


def emit(block: list[str], out) -> None:
    """Print a block of the report and write it to --out at once: a block printed is a block kept."""
    for stream in (sys.stdout, out):
        print("\n".join(block), end="\n\n", file=stream, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = resolve_device(args.device)
    defaults = DEVICE_DEFAULTS[device.type]  # the sweep's: dtype, B, and the LM depth at the model level
    dtype = resolve_dtype(args.dtype or defaults["dtype"], device)
    methods = [_method(name, args, device, dtype) for name in args.method]  # every name checked before any work
    if args.out and (Path(args.out).is_dir() or not Path(args.out).parent.is_dir()):
        raise UsageError(f"--out {args.out!r} must name a file in an existing folder")
    # values that parse but cannot run: refused here, as python -m bench.scaling does, not per cell
    if why := stride_refusal(args.field_stride, [m.name for m in methods]):
        raise UsageError(why)
    if args.level == "model" and CellSpec.model_dim % args.heads:
        raise UsageError(f"--level model: the LM width {CellSpec.model_dim} is not divisible by --heads {args.heads}")

    batch = args.batch or defaults["batch"]  # positive when given
    measured, out_of_memory, broken = 0, 0, 0  # cells; broken: failed for a reason other than memory
    with open(args.out or os.devnull, "w", encoding="utf-8") as out:  # --out as it goes: a stopped run keeps it
        emit([provenance(device)], out)
        for method in methods:
            for n in args.seq_len:
                spec = CellSpec(args.level, args.pass_, batch, args.heads, args.head_dim, n, device, dtype,
                                args.field_stride, model_layers=defaults["model_layers"])
                depth = f", {spec.model_layers} layers" if spec.level == "model" else ""
                head = (f"{method.name}: level {spec.level}, pass {spec.pass_}, device {device}, dtype "
                        f"{str(dtype).removeprefix('torch.')}, B={spec.batch} H={spec.heads} d={spec.row_head_dim} "
                        f"N={spec.seq_len}, stride {spec.field_stride:g}{depth}; {args.warmup} warm-up calls, "
                        f"{args.reps} timed and {args.reps} profiled calls")
                try:
                    built = method.build(spec)
                    call_s, averages = profile_cell(built.fn, device, args.warmup, args.reps)
                except Exception as exc:  # noqa: BLE001 - one failed cell (an OOM) is a line, the others still run
                    block = [head, f"failed: {one_line(exc, named=True)}"]
                    if is_oom(exc):
                        out_of_memory += 1
                    else:
                        broken += 1
                else:
                    measured += 1
                    try:
                        backend = built.backend()
                    except Exception as exc:  # noqa: BLE001 - the backend name is informative only
                        backend = f"unknown ({type(exc).__name__})"
                    block = [head, f"backend: {backend}", *report(averages, call_s, device, args.reps, args.top)]
                emit(block, out)
                built = None  # the cell's tensors (a failed cell's too: an OOM's) go before the next cell is built
                free_memory(device)
    if broken or not measured:
        print(f"{PROG}: {measured} of {measured + out_of_memory + broken} cells measured; {broken} failed, "
              f"{out_of_memory} out of memory (see the 'failed:' lines)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main, prog=PROG))
