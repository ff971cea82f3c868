"""Quality benchmark (`python -m bench.quality`): WaveFieldLM against StandardLM on real text; docs/quality.md
lists the modules. Nothing heavy is imported here so that `--help` and argument errors stay fast."""
