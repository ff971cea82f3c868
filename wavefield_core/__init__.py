"""The Wave Field mechanism (V3.5) and its language model.

Public: causal_fft_conv, WaveFieldAttention, WaveFieldLM, wave_mix (the core on ready k, v),
wave_kernel, and float64 references in wavefield_core.reference.
"""
from wavefield_core.fftconv import causal_fft_conv, causal_conv_direct, fast_fft_size, fft_floor, floor_spectrum
from wavefield_core.kernel import check_stride, reach_cells, stride_is_exact, v35_init, wave_kernel
from wavefield_core.attention import MODES, WaveFieldAttention, field_geometry, resolve_mode, wave_conv, wave_mix
from wavefield_core.model import FieldInterference, WaveFieldLM, WaveFieldLMConfig

__all__ = [
    "causal_fft_conv", "causal_conv_direct", "fast_fft_size", "fft_floor", "floor_spectrum",
    "check_stride", "reach_cells", "stride_is_exact", "v35_init", "wave_kernel",
    "MODES", "WaveFieldAttention", "field_geometry", "resolve_mode", "wave_conv", "wave_mix",
    "FieldInterference", "WaveFieldLM", "WaveFieldLMConfig",
]
