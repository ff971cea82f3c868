"""Softmax-attention baselines: attention kernels, the attention module and the standard LM."""
from baselines.attention import (
    SDPA_BACKENDS,
    SOFTMAX_IMPLS,
    SoftmaxAttention,
    flash_attn_available,
    sdpa_backend_that_runs,
    softmax_flash_attn,
    softmax_naive,
    softmax_sdpa,
)
from baselines.model import StandardLM, StandardLMConfig, count_params, param_matched_config

__all__ = [
    "SoftmaxAttention", "StandardLM", "StandardLMConfig", "softmax_naive", "softmax_sdpa", "softmax_flash_attn",
    "flash_attn_available", "sdpa_backend_that_runs", "SOFTMAX_IMPLS", "SDPA_BACKENDS", "count_params",
    "param_matched_config",
]
