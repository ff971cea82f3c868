"""Energy flow: per-token RMS norms of activations through the model, and of the field before and
after the wave convolution.

Two pieces:
- attention_intermediates(layer, x): a small instrumented re-implementation of
  WaveFieldAttention.forward built from the layer's own submodules and wavefield_core's
  wave_conv_bhdn, returning every intermediate. Its output is compared with layer(x) (a check:
  if the model code changes and this copy drifts, the run says so).
- energy_flow(model, idx): forward hooks capture the residual stream entering each block and the
  layer-normed input of each attention layer; the intermediates are then recomputed per layer.

"Per-token RMS" of a (B, N, D) activation is sqrt(mean over D of x^2) for every (b, n); for the
field (B, H, d, N) it is taken over (H, d). Tables report the mean and max over all tokens.
"""
from __future__ import annotations

import torch

from wavefield_core.attention import WaveFieldAttention, wave_conv_bhdn

# Order in which the quantities flow through one layer (table rows / plot legend).
QUANTITIES = (
    ("residual_in", "residual stream entering the block"),
    ("attn_input", "LN(residual): the attention input"),
    ("field_u", "deposits u = v * ||k|| (field before the wave convolution)"),
    ("field_conv", "field after the wave convolution (before head coupling)"),
    ("field_mixed", "after head coupling softmax(C)"),
    ("gate", "content gate sigmoid(W_g x)"),
    ("attn_out", "attention output (after out projection)"),
    ("residual_out", "residual stream after the block (and interference module, if any)"),
)


def attention_intermediates(layer: WaveFieldAttention, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Instrumented forward of `layer` on x (B, N, D). Returns a dict of intermediates:
    u, conv (B, H, d, N); mixed, gate, out (B, N, D). Same math as WaveFieldAttention.forward."""
    B, N, D = x.shape
    H, d = layer.n_heads, layer.head_dim
    qkv = layer.qkv(x)  # (B, N, 3D)
    _q, k, v = qkv.split(D, dim=-1)  # q unused, as in V3.5
    k = k.view(B, N, H, d)
    v = v.view(B, N, H, d)
    u = (v * torch.linalg.vector_norm(k, dim=-1, keepdim=True)).permute(0, 2, 3, 1).contiguous()  # (B, H, d, N)
    conv = wave_conv_bhdn(u, layer.frequency, layer.damping, layer.phase, layer.field_stride, layer.path,
                          layer.norm_cells)
    mix = torch.softmax(layer.coupling.float(), dim=-1).to(conv.dtype)  # (H, H)
    mixed = torch.einsum("hg,bgdn->bnhd", mix, conv).reshape(B, N, D)  # (B, N, D)
    gate = torch.sigmoid(layer.gate(x))  # (B, N, D)
    out = layer.out(mixed * gate)
    return {"u": u, "conv": conv, "mixed": mixed, "gate": gate, "out": out}


def token_rms(t: torch.Tensor, layout: str) -> torch.Tensor:
    """Per-token RMS: (B, N, D) -> (B, N) over D; (B, H, d, N) 'field' -> (B, N) over (H, d)."""
    t = t.detach().double()
    if layout == "bnd":
        return t.pow(2).mean(-1).sqrt()
    return t.pow(2).mean(dim=(1, 2)).sqrt()


def energy_flow(model, idx: torch.Tensor) -> dict:
    """Run `model` (WaveFieldLM) on idx (B, N) and measure the flow.

    Returns {"per_token": {layer: {quantity: (B, N) tensor}}, "fields": {layer: (u, conv)},
             "instrumentation_max_rel_diff": float, "layers": n}.
    The residual stream "after block i" is what enters block i+1 (or the final LayerNorm), so it
    includes the field-interference module that follows every 3rd block.
    """
    blocks = list(model.blocks)
    captured: dict[str, dict[int, torch.Tensor]] = {"res_in": {}, "attn_in": {}, "attn_out": {}, "final": {}}
    handles = []

    def keep(store, i, pre=True):  # a hook that stores the module's input (pre) or output
        def hook(_mod, args, out=None):
            store[i] = (args[0] if pre else out).detach()
        return hook

    for i, blk in enumerate(blocks):
        handles.append(blk.register_forward_pre_hook(keep(captured["res_in"], i)))
        handles.append(blk.attn.register_forward_pre_hook(keep(captured["attn_in"], i)))
        handles.append(blk.attn.register_forward_hook(keep(captured["attn_out"], i, pre=False)))
    handles.append(model.ln_f.register_forward_pre_hook(keep(captured["final"], 0)))
    try:
        with torch.no_grad():
            model(idx)
    finally:
        for h in handles:
            h.remove()

    per_token: dict[int, dict[str, torch.Tensor]] = {}
    fields: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    worst = 0.0
    for i, blk in enumerate(blocks):
        x = captured["attn_in"][i]
        with torch.no_grad():
            inter = attention_intermediates(blk.attn, x)
        ref = captured["attn_out"][i]
        rel = ((inter["out"] - ref).norm() / ref.norm().clamp_min(1e-30)).item()
        worst = max(worst, rel)
        res_out = captured["res_in"][i + 1] if i + 1 < len(blocks) else captured["final"][0]
        per_token[i] = {
            "residual_in": token_rms(captured["res_in"][i], "bnd"),
            "attn_input": token_rms(x, "bnd"),
            "field_u": token_rms(inter["u"], "field"),
            "field_conv": token_rms(inter["conv"], "field"),
            "field_mixed": token_rms(inter["mixed"], "bnd"),
            "gate": token_rms(inter["gate"], "bnd"),
            "attn_out": token_rms(ref, "bnd"),
            "residual_out": token_rms(res_out, "bnd"),
        }
        fields[i] = (inter["u"], inter["conv"])
    return {"per_token": per_token, "fields": fields, "instrumentation_max_rel_diff": worst, "layers": len(blocks)}


def field_energy_ratio(u: torch.Tensor, conv: torch.Tensor) -> float:
    """||conv||_2 / ||u||_2 over the whole field of one layer (all tokens, heads, channels)."""
    return (conv.double().norm() / u.double().norm().clamp_min(1e-30)).item()
