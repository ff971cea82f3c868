"""Pieces every bench CLI shares: argument errors, env.json, result folders, devices."""
from bench.common.cli import ArgParser, UsageError, run_cli
from bench.common.env import collect_env, write_env, git_info, device_tag
from bench.common.rundir import new_run_dir
from bench.common.device import resolve_device, resolve_dtype, DTYPES

__all__ = [
    "ArgParser", "UsageError", "run_cli", "collect_env", "write_env", "git_info", "device_tag",
    "new_run_dir", "resolve_device", "resolve_dtype", "DTYPES",
]
