"""FLOPs per token, counted by `torch.utils.flop_counter.FlopCounterMode`, not timed.

Forward: one parallel forward over a (B, T) batch; training: that forward, a cross-entropy loss
and its backward (no optimizer step); each divided by B * T. The counter adds up matrix
multiplies, convolutions and attention kernels only: elementwise ops (gates, activations,
norms, exponentials, in-place scan updates) and FFTs count zero, so scan, elementwise-recurrence
and FFT-convolution mixers are undercounted against attention and projections. Attention is
counted dense (the causal mask does not halve it), as torch counts it on every device. Kernels
torch leaves out (CPU flash attention, fused LSTM/GRU on CPU and cuDNN) are added here with the
same conventions: 2 FLOPs per multiply-add, a backward twice its forward's matmuls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

import tasks
from tasks.base import Metric, MetricSpec, Task
from tasks.instruments.context import CellContext

FORWARD = MetricSpec("forward_flops_per_token", "FLOP/token", False,
                     "FLOP of one forward pass per token, counted by torch's FlopCounterMode",
                     role="forward_flop_per_token")
TRAIN = MetricSpec("train_flops_per_token", "FLOP/token", False,
                   "FLOP of one forward and backward pass per token (FlopCounterMode)")
METHOD = (
    "torch.utils.flop_counter.FlopCounterMode, one {what} over (B, T) tokens / (B*T); counts "
    "matmul, convolution and attention FLOPs only (2 per multiply-add, attention dense): "
    "elementwise ops and FFTs are not counted, so scans, elementwise recurrences and FFT "
    "convolutions are undercounted"
)
_aten = torch.ops.aten


def _cpu_sdpa(q: Any, k: Any, v: Any, *args: Any, out_shape: Any = None, **kw: Any) -> int:
    return sdpa_flop_count(q, k, v)


def _cpu_sdpa_backward(grad: Any, q: Any, k: Any, v: Any, *args: Any, out_shape: Any = None,
                       **kw: Any) -> int:
    return sdpa_backward_flop_count(grad, q, k, v)


def _rnn(input_shape: Any, weights: list[Any], passes: int) -> int:
    """Fused RNN: every input and recurrent weight matrix (2-D) multiplies every token once;
    the backward is two such passes (gradients of inputs and of weights), like a matmul's."""
    tokens = math.prod(input_shape) // input_shape[-1]
    return 2 * passes * tokens * sum(math.prod(w) for w in weights if len(w) == 2)


def _mkldnn_rnn(x: Any, w_ih: Any, w_hh: Any, *args: Any, out_shape: Any = None,
                **kw: Any) -> int:
    return _rnn(x, [w_ih, w_hh], 1)


def _mkldnn_rnn_backward(x: Any, w_ih: Any, w_hh: Any, *args: Any, out_shape: Any = None,
                         **kw: Any) -> int:
    return _rnn(x, [w_ih, w_hh], 2)


def _cudnn_rnn(x: Any, weights: list[Any], *args: Any, out_shape: Any = None, **kw: Any) -> int:
    return _rnn(x, weights, 1)


def _cudnn_rnn_backward(x: Any, weights: list[Any], *args: Any, out_shape: Any = None,
                        **kw: Any) -> int:
    return _rnn(x, weights, 2)


# torch registers neither its CPU attention kernel nor fused RNN kernels: they would count zero
EXTRA_FORMULAS = {
    _aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa,
    _aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward,
    _aten.mkldnn_rnn_layer: _mkldnn_rnn,
    _aten.mkldnn_rnn_layer_backward: _mkldnn_rnn_backward,
    _aten._cudnn_rnn: _cudnn_rnn,
    _aten._cudnn_rnn_backward: _cudnn_rnn_backward,
}


@dataclass(frozen=True)
class Config:
    batch_size: int = 1
    seq_len: int = 512
    checkpoint: str = ""  # a checkpoint file or "task:NAME" (task:lm_bpb); "": a fresh model

    def validate(self) -> None:
        if self.batch_size < 1 or self.seq_len < 1:
            raise ValueError("batch_size and seq_len must be >= 1")


def count(fn: Any) -> tuple[int, dict[str, int]]:
    """FLOPs of running `fn()` and their split by aten op."""
    with FlopCounterMode(display=False, custom_mapping=EXTRA_FORMULAS) as counter:
        fn()
    by_op = counter.get_flop_counts().get("Global", {})
    return counter.get_total_flops(), {str(op): int(n) for op, n in sorted(by_op.items(), key=str)}


def forward_flops(model: torch.nn.Module, tokens: torch.Tensor) -> tuple[int, dict[str, int]]:
    with torch.no_grad():
        return count(lambda: model(tokens))


def train_flops(model: torch.nn.Module, tokens: torch.Tensor,
                targets: torch.Tensor) -> tuple[int, dict[str, int]]:
    """Forward + cross-entropy + backward; gradients are dropped afterwards, nothing is stepped."""

    def step() -> None:
        logits = model(tokens)  # (B, T, V)
        F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten()).backward()

    with torch.enable_grad():
        total = count(step)
    model.zero_grad(set_to_none=True)
    return total


def run(cfg: Config, ctx: CellContext) -> list[Metric]:
    model = ctx.model(cfg.checkpoint)
    vocab = model.config["vocab_size"]
    tokens = ctx.random_tokens(cfg.batch_size, cfg.seq_len, vocab)
    targets = ctx.random_tokens(cfg.batch_size, cfg.seq_len, vocab, offset=1)
    n_tokens = cfg.batch_size * cfg.seq_len
    fwd, fwd_ops = forward_flops(model, tokens)
    train, train_ops = train_flops(model.train(), tokens, targets)
    extra = {"batch_size": cfg.batch_size, "seq_len": cfg.seq_len,
             "checkpoint": ctx.checkpoint_path(cfg.checkpoint)}
    return [
        FORWARD.metric(fwd / n_tokens, method=METHOD.format(what="forward"),
               extra={**extra, "total_flops": fwd, "by_op": fwd_ops}),
        TRAIN.metric(train / n_tokens, method=METHOD.format(what="forward + backward"),
               extra={**extra, "total_flops": train, "by_op": train_ops}),
    ]


TASK = tasks.register(Task(
    name="flops", kind="efficiency", version=1, config_cls=Config, run=run,
    headline="forward_flops_per_token", doc=__doc__ or "", needs_causal=False, needs_peak=True,
    metrics=(FORWARD, TRAIN), sweep_key="seq_len",
))
