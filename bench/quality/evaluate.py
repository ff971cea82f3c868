"""Metrics of a language model on one split: token-weighted loss, ppl, bpc and top-1 accuracy (primary), and the
paper's mean of per-batch mean losses (short last batches weigh as much as full ones)."""
from __future__ import annotations

import math
from itertools import islice

import torch
import torch.nn.functional as F

from bench.quality.data import IGNORE_INDEX
from bench.common.dist import Dist

PAPER_PPL_CAP = 20.0  # the published loop: PPL = exp(min(loss, 20))


def ppl(loss: float) -> float:
    """exp(loss); inf past exp's range, NaN for a NaN loss (a diverged evaluation)."""
    return math.exp(loss) if loss < 700 else float("inf") if loss >= 700 else math.nan


def bpc_from_loss(loss: float, tokens_per_char: float) -> float:
    """Bits per character from nats per token (tokens_per_char = split tokens / split characters)."""
    return loss / math.log(2) * tokens_per_char


def token_stats(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sum of cross-entropy, scored tokens, correct top-1) for logits (B, T, V), targets (B, T); float32 loss."""
    flat_t = targets.reshape(-1)  # (B*T,)
    flat_l = logits.reshape(-1, logits.shape[-1]).float()  # (B*T, V)
    loss_sum = F.cross_entropy(flat_l, flat_t, ignore_index=IGNORE_INDEX, reduction="sum")
    mask = flat_t != IGNORE_INDEX
    correct = ((flat_l.argmax(-1) == flat_t) & mask).sum()
    return loss_sum, mask.sum(), correct


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches, device: torch.device, tokens_per_char: float,
             max_batches: int, autocast, ctx: Dist) -> dict:
    """Metrics of `model` (unwrapped, not DDP) on an unshuffled batcher rewound to its first batch; max_batches = 0
    scores the whole split; under DDP the ranks take the batches round-robin."""
    was_training = model.training
    model.eval()
    batches.load_state_dict({"epoch": 0, "position": 0})
    # loss_sum, tokens, correct, sum of per-batch mean losses, batches
    sums = torch.zeros(5, dtype=torch.float64, device=device)
    for i, (x, y) in enumerate(islice(batches, max_batches or None)):
        if i % ctx.world != ctx.rank:
            continue
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast():
            logits, _ = model(x)  # (B, T, V)
        loss_sum, n, correct = token_stats(logits, y)  # every batch has targets (data.py drops empty pieces)
        sums += torch.stack([loss_sum.double(), n.double(), correct.double(), loss_sum.double() / n, sums.new_ones(())])
    ctx.all_reduce_sum(sums)
    model.train(was_training)
    loss_sum, n, correct, bm_sum, nb = sums.tolist()
    loss, bm_loss = loss_sum / n, bm_sum / nb
    return {"loss": loss, "ppl": ppl(loss), "bpc": bpc_from_loss(loss, tokens_per_char), "acc": correct / n,
            "batch_mean_loss": bm_loss, "batch_mean_ppl": math.exp(min(bm_loss, PAPER_PPL_CAP)),
            "tokens": int(n), "batches": int(nb)}
