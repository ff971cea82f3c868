"""python -m bench.diagnostics [--checkpoint PATH]: physics diagnostics and causality audit. Exit codes: 0 every
model check passed and every leak demonstration showed its leak; 1 one did not (a leak demonstration that shows
no leak is a broken probe); 2 bad input (missing checkpoint, bad flags)."""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from bench.common.cli import (ArgParser, UsageError, int_at_least, one_line, positive_float, positive_int, run_cli,
                              seed_int, thread_count)

PROG = "python -m bench.diagnostics"
RANDOM_INIT_DEFAULTS = {"d_model": 256, "n_layers": 6, "n_heads": 8, "field_stride": 4.0, "vocab_size": 256}
# What a summary names besides the CSV; recorded in env.json so a later version's defaults cannot change it.
SUMMARY_SETTINGS = ("probe_dtype", "probe_len", "model_probe_len", "leak_len", "role_thresholds")


def role_thresholds(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not two numbers LOCAL,LONG (e.g. 4,32; reach in tokens)")
    if not (0 < lo < hi and math.isfinite(hi)):
        raise argparse.ArgumentTypeError(f"{text!r}: need finite 0 < LOCAL < LONG (e.g. 4,32)")
    return lo, hi


# A causality probe needs a token with a later one (at N = 1 the full-model probe crashed, an IndexError).
# The leak demonstrations need 3: before token 2 the s = 1.29 and clamping configurations cannot leak (its
# deposit is the first to reach a cell an earlier token reads), and the run failed as 'probe broken'.
probe_len = int_at_least(2, "{value} is too short for a causality probe (at least {least} tokens)")
leak_len = int_at_least(3, "{value} is too short to show every leak (at least {least} tokens)")


def build_parser() -> ArgParser:
    p = ArgParser(prog=PROG, description="Wave Field physics diagnostics: per-head reach and roles, kernels and "
                  "measured impulse responses, coupling matrices, energy flow, the conservation bound, causality "
                  "probes with leak demonstrations. Writes env.json, diagnostics.csv, summary.md, plots/.")
    m = p.add_argument_group("model (a checkpoint, or a random-init WaveFieldLM)")
    m.add_argument("--checkpoint", metavar="PATH", help="a bench.common.checkpoint file written by bench.quality")
    m.add_argument("--d-model", type=positive_int, help="random init: width D (default 256)")
    m.add_argument("--n-layers", type=positive_int, help="random init: blocks (default 6)")
    m.add_argument("--n-heads", type=positive_int, help="random init: heads H (default 8)")
    m.add_argument("--field-stride", type=positive_float, help="random init: cells per token s (default 4; "
                   "exactly causal strides only: integers >= 1 or any value >= 2)")
    m.add_argument("--vocab-size", type=int_at_least(2, "{value} leaves the token-id causality probe no other "
                                                     "token to change to (at least {least})"),
                   help="random init: vocabulary, at least 2 (default 256 = bytes)")
    d = p.add_argument_group("data and probes")
    d.add_argument("--seq-len", type=positive_int, default=256, help="tokens per text sequence (default 256)")
    d.add_argument("--batch-size", type=positive_int, default=4, help="sequences in the text batch (default 4)")
    d.add_argument("--text-file", metavar="PATH", help="UTF-8 text for the energy batch (default: "
                   "tests/fixtures/tiny_corpus.txt)")
    d.add_argument("--probe-len", type=probe_len, default=2048,
                   help="N of the per-layer causality probes (default 2048, at least 2)")
    d.add_argument("--model-probe-len", type=probe_len, default=1024,
                   help="N of the full-model causality probes (default 1024, at least 2)")
    d.add_argument("--leak-len", type=leak_len, default=128, help="N of the leak demonstrations on the float64 "
                   "reference (default 128, at least 3; the clamping demo sizes its field for 3N/4 tokens)")
    d.add_argument("--probe-dtype", default="float64", choices=("float64", "float32"),
                   help="dtype of the probe copies (default float64; leak threshold 1e-9, float32: 1e-4)")
    d.add_argument("--no-leak-demos", action="store_true", help="skip the leak demonstrations")
    c = p.add_argument_group("thresholds")
    c.add_argument("--role-thresholds", type=role_thresholds, default=(4.0, 32.0), metavar="LOCAL,LONG",
                   help="reach in tokens: < LOCAL local, < LONG medium, else long-range (default 4,32)")
    c.add_argument("--conservation-tol", type=positive_float, default=1e-5,
                   help="FAIL when ||k*x||_p/||x||_p > 1 + tol (default 1e-5, fp32 rounding)")
    r = p.add_argument_group("run")
    r.add_argument("--seed", type=seed_int, default=0, help="seed for init, text windows and probes (default 0)")
    r.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    r.add_argument("--threads", type=thread_count, help="CPU threads for torch (default or 0: torch's choice)")
    r.add_argument("--out", metavar="DIR",
                   help="result folder (default results/runs/<time>_<sha>_<device>_diagnostics)")
    return p


def load_model(args, device):
    """(model, description dict, tokenizer, tokenizer description). The model's size and the probes'
    are checked against free memory before the model is built."""
    import torch

    from bench.common.checkpoint import build_model, load_weights, read_checkpoint
    from wavefield_core.kernel import check_stride

    given = [f"--{k.replace('_', '-')}" for k in RANDOM_INIT_DEFAULTS if getattr(args, k) is not None]
    if args.checkpoint:
        if given:
            raise UsageError(f"{', '.join(given)} cannot be combined with --checkpoint (the checkpoint fixes the "
                             "model)")
        ckpt = read_checkpoint(args.checkpoint)
        if ckpt["kind"] != "wave":
            raise UsageError(f"checkpoint {args.checkpoint!r} holds a {ckpt['kind']!r} model; "
                             "diagnostics need a wave model (kind 'wave')")
        config = ckpt["config"]
        if config.get("mode") == "triton":  # its kernels take no float64 (every causality probe) and need CUDA
            config = dict(config, mode="scan")  # the same recurrence in PyTorch, on the same weights
    else:
        cfg = {k: v if getattr(args, k) is None else getattr(args, k) for k, v in RANDOM_INIT_DEFAULTS.items()}
        if cfg["d_model"] % cfg["n_heads"]:
            raise UsageError(f"--d-model {cfg['d_model']} is not divisible by --n-heads {cfg['n_heads']}")
        try:
            check_stride(cfg["field_stride"])
        except ValueError as exc:
            raise UsageError(f"--field-stride: {exc}")
        config = dict(cfg, d_ff=4 * cfg["d_model"])
    try:
        with torch.device("meta"):  # sizes only
            sized = build_model("wave", config)
    except (TypeError, ValueError, RuntimeError) as exc:  # RuntimeError: sizes past torch's shape arithmetic
        raise UsageError(f"{args.checkpoint or 'the model'}: its config does not build a wave model "
                         f"({one_line(exc, 200)})") from None
    check_memory(args, sized.config_dict(), sum(t.numel() for t in sized.parameters()), device)
    torch.manual_seed(args.seed)
    model = build_model("wave", config)

    def listed(d: dict) -> str:
        return ", ".join(f"{k}={v}" for k, v in d.items() if isinstance(v, (int, float, str)))

    if not args.checkpoint:
        info = {"model": f"random init (seed {args.seed})", "config": listed(model.config_dict())}
        return model.to(device).eval(), info, None, ""
    load_weights(model, ckpt, args.checkpoint)
    meta = ckpt.get("meta") or {}
    tok, tok_desc = tokenizer_from_meta(meta, args.checkpoint)
    if tok is not None and tok.vocab_size != model.config.vocab_size:
        tok, tok_desc = None, (f"tokenizer vocab {tok.vocab_size} != model vocab {model.config.vocab_size}")
    info = {"model": f"checkpoint {args.checkpoint}", "config": listed(config), "checkpoint meta": listed(meta)[:400]}
    if ckpt["config"].get("mode") == "triton":
        info["model"] += " (trained with mode triton, diagnosed with mode scan: the same operator in PyTorch)"
    return model.to(device).eval(), info, tok, tok_desc


def check_memory(args, config: dict, params: int, device) -> None:
    """Refuse sizes that cannot fit: the model and its probe copy, plus the largest of the energy
    batch, the full-model probe and the per-layer probe (whose autograd rows measured about twice
    lm_bytes' training bound at D=16, N=400k)."""
    from bench.common.memory import check_fits, lm_bytes
    from wavefield_core.fftconv import field_cells

    d, layers, vocab, s, d_ff = (config[k] for k in ("d_model", "n_layers", "vocab_size", "field_stride", "d_ff"))
    elem = 8 if args.probe_dtype == "float64" else 4

    def model(batch: int, n: int, train: bool, size: int) -> float:
        return lm_bytes(0, batch, n, d, layers, d_ff, vocab, field_cells(n, s), train, size)

    phases = [model(args.batch_size, args.seq_len, False, 4), model(1, args.model_probe_len, True, elem),
              2 * lm_bytes(0, 1, args.probe_len, d, 1, 0, 0, field_cells(args.probe_len, s), True, elem)]
    check_fits(params * (4 + elem) + max(phases), device,
               f"diagnostics of a D={d}, {layers}-layer model (--seq-len {args.seq_len}, --batch-size "
               f"{args.batch_size}, --probe-len {args.probe_len}, --model-probe-len {args.model_probe_len})",
               "lower --d-model, --seq-len, --batch-size or the probe lengths")


def tokenizer_from_meta(meta: dict, ckpt_path: str):
    """(the checkpoint's tokenizer, its path) or (None, why not): meta's name (relative to bench.quality's run
    folder) beside the checkpoint and two folders up, then as given, then a tokenizer.json in those folders."""
    from bench.quality.tokenizers import load_tokenizer

    bases = [Path(ckpt_path).parent, *list(Path(ckpt_path).parent.parents)[:2]]
    named = [v for v in (meta.get(k) for k in ("tokenizer_path", "tokenizer")) if isinstance(v, str) and v]
    for p in [b / v for v in named for b in bases] + [Path(v) for v in named] + [b / "tokenizer.json" for b in bases]:
        if p.is_file():
            try:
                return load_tokenizer(p), str(p)
            except Exception:  # noqa: BLE001 - a file that is not a tokenizer: try the next candidate
                continue
    return None, "no tokenizer found (meta tokenizer / tokenizer_path, or tokenizer.json beside the checkpoint)"


def text_batch(args, vocab_size: int, tokenizer, tokenizer_desc: str, device) -> tuple:
    """(idx (B, N) int64, description, is_real_text): seeded windows of --text-file, encoded with the
    checkpoint's tokenizer or, at random init with vocab >= 256, as UTF-8 bytes; else random tokens, said so."""
    import numpy as np
    import torch

    rng = np.random.default_rng(args.seed)
    path = Path(args.text_file or Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "tiny_corpus.txt")
    text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None
    ids, why = None, f"text does not fit vocab {vocab_size}"
    if text is None:
        why = f"{path} not found"
    elif tokenizer is not None:
        ids = np.asarray(tokenizer.encode(text), dtype=np.int64)
        desc = f"{path.name} encoded with the checkpoint's tokenizer ({tokenizer_desc})"
    elif args.checkpoint:
        why = tokenizer_desc
    elif vocab_size >= 256:
        ids = np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)
        desc = f"UTF-8 bytes of {path.name} (random-init model, vocab {vocab_size} >= 256)"
    if ids is None or ids.size < 2 or ids.max() >= vocab_size:
        x = torch.from_numpy(rng.integers(0, vocab_size, size=(args.batch_size, args.seq_len))).long()
        return x.to(device), f"RANDOM TOKENS (no real text: {why})", False
    if ids.size < args.seq_len + 1:  # short text: repeat it
        ids = np.tile(ids, args.seq_len // ids.size + 2)
        desc += " (repeated to fill the window)"
    starts = rng.integers(0, ids.size - args.seq_len, size=args.batch_size)
    x = np.stack([ids[s:s + args.seq_len] for s in starts])
    return torch.from_numpy(x).long().to(device), desc, True


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    # Cheap input checks first: a typo should not wait for torch, a model and a results folder.
    for what, path in (("checkpoint", args.checkpoint), ("--text-file", args.text_file)):
        if path is not None and not Path(path).is_file():
            raise UsageError(f"{what} {path!r} {'is not a file' if Path(path).exists() else 'does not exist'}")
    from bench.common.files import check_out_dir, claim_run_dir, replacing, write_json

    if args.out is not None:
        check_out_dir(args.out, resumable=False)
    t_start = time.perf_counter()
    import torch

    from bench.common.device import resolve_device
    from bench.common.env import collect_env, device_tag
    from bench.diagnostics.run import DiagConfig, run_diagnostics

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model, info, tok, tok_desc = load_model(args, device)
    idx, text_desc, real = text_batch(args, model.embed.num_embeddings, tok, tok_desc, device)
    cfg = DiagConfig(seq_len=args.seq_len, seed=args.seed,
                     role_thresholds=args.role_thresholds, conservation_tol=args.conservation_tol,
                     probe_len=args.probe_len, model_probe_len=args.model_probe_len, leak_len=args.leak_len,
                     probe_dtype=getattr(torch, args.probe_dtype), leak_demos=not args.no_leak_demos)
    run_dir = claim_run_dir(args.out, tag=device_tag(device), kind="diagnostics", resumable=False)
    env = collect_env(argv=[PROG] + list(sys.argv[1:] if argv is None else argv), seed=args.seed,
                      harness="bench.diagnostics", device=str(device), text=text_desc, real_text=real, **info,
                      settings={k: getattr(args, k) for k in SUMMARY_SETTINGS})

    torch.manual_seed(args.seed)
    res = run_diagnostics(model, idx, cfg, device)
    from bench.diagnostics import plots, report  # pandas and matplotlib: only once there is something to write
    write_json(run_dir / "env.json", env)  # only now: a run that fails or is stopped leaves an empty folder
    with replacing(run_dir / "diagnostics.csv") as tmp:
        df = report.write_csv(res.rows, tmp)
    lines = write_summary(run_dir)
    plots.plot_all(res.arrays, df, run_dir / "plots", text_desc, provenance(env), cfg.probe_dtype)
    print("\n".join(lines))
    timing = ", ".join(f"{k} {v:.1f}s" for k, v in res.timings.items())
    print(f"wrote {run_dir} ({time.perf_counter() - t_start:.1f}s: {timing})")
    return 1 if res.failed else 0


def provenance(env: dict) -> str:
    """The machine, torch, commit and time of a run, printed under its tables and plots."""
    from bench.common.env import machine

    git = env["git"]
    sha = f"{git['sha_short'] or 'none'}{' (dirty)' if git['dirty'] else ''}"
    return f"{machine(env)}; torch {env['torch']}; git {sha}; {env['created']}"


def run_settings(env: dict) -> dict:
    """The settings a run's summary names, as env.json recorded them. A run that did not record them
    (older versions) has its command line read with this version's flags and defaults instead: a flag
    since dropped is ignored, a value that no longer parses is a ValueError (the old summary stays)."""
    if isinstance(env.get("settings"), dict) and set(SUMMARY_SETTINGS) <= set(env["settings"]):
        return env["settings"]
    try:
        args = build_parser().parse_known_args(env["argv"][1:])[0]
    except SystemExit:
        raise ValueError("the run's command line does not parse with this version's flags") from None
    return {k: getattr(args, k) for k in SUMMARY_SETTINGS}


def write_summary(run_dir, plots: bool = False) -> list[str]:
    """(Re)write <run>/summary.md from diagnostics.csv and env.json alone (the run and bench.report both
    do); `plots` changes nothing: they are drawn from the model, which the folder does not hold."""
    from bench.common.files import read_json
    from bench.diagnostics import report

    run_dir = Path(run_dir)
    env = read_json(run_dir / "env.json")
    s = run_settings(env)
    df = report.read_csv(run_dir / "diagnostics.csv")
    header = {k: env[k] for k in ("model", "config", "checkpoint meta", "device", "text") if k in env}
    header |= {"probe dtype": s["probe_dtype"], "probe lengths": f"per layer N={s['probe_len']}, full model "
               f"N={s['model_probe_len']}, leak demos N={s['leak_len']}", "provenance": provenance(env)}
    return report.write_summary(df, run_dir / "summary.md", header, s["role_thresholds"])


if __name__ == "__main__":
    sys.exit(run_cli(main, prog=PROG))
