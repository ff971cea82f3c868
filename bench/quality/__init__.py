"""Quality benchmark (`python -m bench.quality`): language-model loss / bits-per-character on real text.

Data layer:
  * `bench.quality.data`       -- corpora (load_corpus), encoding, and resumable batch iterators.
  * `bench.quality.tokenizers` -- character-level and byte-level BPE tokenizers trained on the train split.

Nothing heavy is imported here so that `--help` and argument errors stay fast.
"""
