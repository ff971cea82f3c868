"""Quality benchmark (`python -m bench.quality`): language-model loss / bits-per-character on real text.

Trains WaveFieldLM and StandardLM (the paper's pairing and a parameter-matched one) under the same
budget and reports the gap in perplexity, bits per character and accuracy over seeds.

Data layer:
  * `bench.quality.data`       -- corpora (load_corpus), encoding, and resumable batch iterators.
  * `bench.quality.tokenizers` -- character-level and byte-level BPE tokenizers trained on the train split.
Harness:
  * `presets`  -- named Preset dataclasses (tiny, cpu-small, paper-char, paper-bpe); every field is a flag.
  * `cli`      -- the command line (flags generated from Preset), validation, --resume settings.
  * `methods`  -- the compared methods as data (wave, standard, standard-matched).
  * `train`    -- one (method, seed) job: schedule, non-finite skipping, resumable state, DDP.
  * `evaluate` -- token-weighted loss/ppl/bpc/accuracy and the paper's batch-mean loss.
  * `schema`, `stats` -- CSV columns, seed statistics.
  * `report`, `plots` -- summary.md and figures, derived from env.json, curves.csv and final.csv.

Nothing heavy is imported here so that `--help` and argument errors stay fast.
"""
