"""Causal convolutions shared by the convolutional SSM variants (s4d, h3, hyena, mamba2).

`fft_conv` is the fast long convolution, O(T log T) per channel; `direct_conv_ref` computes the
same sum directly, O(T L), and is the reference the tests compare it with. Both take time as the
last dim: u (..., T) and a kernel k (..., L) whose leading dims broadcast against u's, and return
y_t = sum_{s=0}^{min(t, L-1)} k_s u_{t-s}. The FFT runs in float32 for any lower precision (half
precision FFTs lose too much) and in float64 for float64; the result is cast back.
`causal_depthwise_conv` is the short per-channel convolution that Mamba, Mamba-2 and Hyena put
before their mixers; `conv_window` is the decoding state such a convolution leaves after a
sequence (its last inputs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["causal_depthwise_conv", "conv_window", "direct_conv_ref", "fft_conv", "fft_len"]


def fft_len(n: int) -> int:
    """Smallest power of two >= n: a linear (not circular) convolution of lengths T and L needs
    n >= T + L - 1, and power-of-two FFTs are the fastest size on every backend."""
    return 1 << max(n - 1, 0).bit_length()


def _work_dtype(u: Tensor, k: Tensor) -> torch.dtype:
    """float32, or float64 when either operand is float64 (lower precisions compute in float32)."""
    return torch.promote_types(torch.promote_types(u.dtype, k.dtype), torch.float32)


def fft_conv(u: Tensor, k: Tensor) -> Tensor:
    """Causal convolution by FFT: u (..., T), k (..., L) broadcastable -> (..., T) in u's dtype."""
    t = u.shape[-1]
    k = k[..., :t]  # taps beyond T never reach an output
    n = fft_len(t + k.shape[-1] - 1)
    work = _work_dtype(u, k)
    u_f = torch.fft.rfft(u.to(work), n=n)  # (..., n/2 + 1) complex
    k_f = torch.fft.rfft(k.to(work), n=n)
    return torch.fft.irfft(u_f * k_f, n=n)[..., :t].to(u.dtype)


def direct_conv_ref(u: Tensor, k: Tensor) -> Tensor:
    """Reference for `fft_conv`: the same causal sum as a direct depthwise convolution."""
    t, dtype = u.shape[-1], u.dtype
    k = k[..., :t]
    lead = torch.broadcast_shapes(u.shape[:-1], k.shape[:-1])
    work = _work_dtype(u, k)
    u = u.to(work).expand(*lead, t).reshape(1, -1, t)  # (1, M, T), one channel per series
    w = k.to(work).expand(*lead, k.shape[-1]).reshape(-1, 1, k.shape[-1])  # (M, 1, L)
    # conv1d correlates, so the kernel is flipped; left padding makes it causal
    y = F.conv1d(F.pad(u, (w.shape[-1] - 1, 0)), w.flip(-1), groups=w.shape[0])
    return y.reshape(*lead, t).to(dtype)


def causal_depthwise_conv(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """Short causal conv on channels-last x (B, T, C) with weight (C, K), bias (C) or None.

    Written as K shifted multiply-adds, which beats `conv1d` on CPU for K of a few taps;
    weight[:, K - 1] multiplies the current input, weight[:, 0] the one K - 1 steps back.
    """
    t, k = x.shape[1], weight.shape[1]
    padded = F.pad(x, (0, 0, k - 1, 0))  # (B, K-1+T, C)
    y = padded[:, k - 1 :] * weight[:, k - 1]
    for i in range(k - 1):
        y = torch.addcmul(y, padded[:, i : i + t], weight[:, i])
    return y if bias is None else y + bias


def conv_window(x: Tensor, size: int) -> Tensor:
    """The last `size` inputs of channels-last x (B, T, C) as a decoding window (B, C, size),
    oldest first and zero-padded in front when T < size: what a causal conv of size + 1 taps,
    stepped one token at a time from a zero window, holds after x. A copy, so that it does not
    keep all of x alive."""
    t = x.shape[1]
    last = F.pad(x, (0, 0, max(size - t, 0), 0))[:, max(t - size, 0) :]  # (B, size, C)
    return last.transpose(1, 2).contiguous()
