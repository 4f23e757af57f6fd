"""What a task sees inside an isolated cell process: device, dtype, seed and a model factory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class CellContext:
    arch: str
    arch_config: dict[str, Any]
    seed: int
    device: str
    dtype: str
    threads: int
    cell_id: str | None = None
    checkpoint_dir: str | None = None  # where tasks that train may save their model

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def build_model(self, **overrides: Any) -> torch.nn.Module:
        """The cell's architecture, seeded, on the cell's device and dtype, in eval mode."""
        import architectures

        torch.manual_seed(self.seed)
        model = architectures.build(self.arch, **{**self.arch_config, **overrides})
        return model.to(device=self.torch_device, dtype=self.torch_dtype).eval()

    def generator(self, offset: int = 0) -> torch.Generator:
        """A local RNG (never the global one) for task data; ``offset`` separates streams."""
        g = torch.Generator(device="cpu")
        g.manual_seed(self.seed * 1_000_003 + offset)
        return g

    def sync(self) -> None:
        if self.torch_device.type == "cuda":
            torch.cuda.synchronize(self.torch_device)

    def random_tokens(self, batch: int, length: int, vocab: int, offset: int = 0) -> torch.Tensor:
        tokens = torch.randint(0, vocab, (batch, length), generator=self.generator(offset))
        return tokens.to(self.torch_device)
