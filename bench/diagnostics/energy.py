"""Energy flow: per-token RMS norms of activations through the model, and of the field before and
after the wave convolution.

attention_intermediates re-implements WaveFieldAttention.forward from the layer's own submodules and
returns every intermediate; energy_flow compares its output with the layer's (so a drift of this copy
from the model code shows up as a failed check). Tables report the mean and max over all tokens.
"""
from __future__ import annotations

import torch

from bench.diagnostics.causality import nan_max
from wavefield_core.attention import WaveFieldAttention, wave_conv_bhdn

# In the order they flow through one block (table columns, plot legend); energy_flow defines each.
QUANTITIES = ("residual_in", "attn_input", "field_u", "field_conv", "field_mixed", "gate", "attn_out", "residual_out")


def attention_intermediates(layer: WaveFieldAttention, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Instrumented forward of `layer` on x (B, N, D). Returns a dict of intermediates:
    u, conv (B, H, d, N); mixed, gate, out (B, N, D). Same math as WaveFieldAttention.forward."""
    B, N, D = x.shape
    H, d = layer.n_heads, layer.head_dim
    _q, k, v = layer.qkv(x).split(D, dim=-1)  # q unused, as in V3.5
    k = k.view(B, N, H, d)
    u = (v.view(B, N, H, d) * torch.linalg.vector_norm(k, dim=-1, keepdim=True)).permute(0, 2, 3, 1).contiguous()
    conv = wave_conv_bhdn(u, layer.frequency, layer.damping, layer.phase, layer.field_stride, layer.path,
                          layer.norm_cells)
    mix = torch.softmax(layer.coupling.float(), dim=-1).to(conv.dtype)  # (H, H)
    mixed = torch.einsum("hg,bgdn->bnhd", mix, conv).reshape(B, N, D)
    gate = torch.sigmoid(layer.gate(x))
    return {"u": u, "conv": conv, "mixed": mixed, "gate": gate, "out": layer.out(mixed * gate)}


def token_rms(t: torch.Tensor) -> torch.Tensor:
    """Per-token RMS, (B, N): over D of a (B, N, D) activation, over (H, d) of a (B, H, d, N) field."""
    return t.detach().double().pow(2).mean(dim=(1, 2) if t.dim() == 4 else -1).sqrt()


def energy_flow(model, idx: torch.Tensor) -> dict:
    """Run `model` (WaveFieldLM) on idx (B, N) and measure the flow.

    Returns {"per_token": {layer: {quantity: (B, N) tensor}}, "fields": {layer: (u, conv)},
             "instrumentation_max_rel_diff": float}.
    The residual stream "after block i" is what enters block i+1 (or the final LayerNorm), so it
    includes the field-interference module that follows every 3rd block.
    """
    blocks = list(model.blocks)
    res_in, attn_in, attn_out = {}, {}, {}  # per block: its input, its attention's input and output

    def keep(store, i, pre=True):  # a hook that stores the module's input (pre) or output
        def hook(_mod, args, out=None):
            store[i] = (args[0] if pre else out).detach()
        return hook

    handles = [model.ln_f.register_forward_pre_hook(keep(res_in, len(blocks)))]
    for i, blk in enumerate(blocks):
        handles += [blk.register_forward_pre_hook(keep(res_in, i)),
                    blk.attn.register_forward_pre_hook(keep(attn_in, i)),
                    blk.attn.register_forward_hook(keep(attn_out, i, pre=False))]
    try:
        with torch.no_grad():
            model(idx)
    finally:
        for h in handles:
            h.remove()

    per_token, fields, diffs = {}, {}, []
    for i, blk in enumerate(blocks):
        with torch.no_grad():
            inter = attention_intermediates(blk.attn, attn_in[i])
        ref = attn_out[i]
        diffs.append(((inter["out"] - ref).norm() / ref.norm().clamp_min(1e-30)).item())
        acts = {"residual_in": res_in[i], "attn_input": attn_in[i], "field_u": inter["u"], "field_conv": inter["conv"],
                "field_mixed": inter["mixed"], "gate": inter["gate"], "attn_out": ref, "residual_out": res_in[i + 1]}
        per_token[i] = {q: token_rms(a) for q, a in acts.items()}
        fields[i] = (inter["u"], inter["conv"])
    # nan_max: a NaN output matches nothing, and Python's max would drop it (max(0.0, nan) is 0.0)
    return {"per_token": per_token, "fields": fields, "instrumentation_max_rel_diff": nan_max(diffs)}
