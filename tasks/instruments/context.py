"""What a task sees inside an isolated cell process: device, dtype, seed and a model factory."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

import architectures
from tasks.instruments import checkpoints

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
    # the kernel path of the last model built or loaded here (see :attr:`kernel_path`)
    _kernel_path: str | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def build_model(self, **overrides: Any) -> torch.nn.Module:
        """The cell's architecture, seeded, on the cell's device and dtype, in eval mode."""
        torch.manual_seed(self.seed)
        model = architectures.build(self.arch, **{**self.arch_config, **overrides})
        return self._record(model.to(device=self.torch_device, dtype=self.torch_dtype).eval())

    def _record(self, model: torch.nn.Module) -> torch.nn.Module:
        self._kernel_path = model.kernel_path
        return model

    @property
    def kernel_path(self) -> str:
        """The concrete kernels the cell's model runs (``model.kernel_path``): of the last model
        :meth:`build_model` or :meth:`model` made in this process. Where none was (a timed task
        builds its model in a forked child), the cell's architecture is built once on the
        ``meta`` device to read it: no memory, no compute, the global RNG untouched."""
        if self._kernel_path is None:
            with torch.random.fork_rng(devices=[]), torch.device("meta"):
                model = architectures.build(self.arch, **self.arch_config)
            self._kernel_path = model.kernel_path
        return self._kernel_path

    def checkpoint_path(self, spec: str) -> str | None:
        """The file a task config's ``checkpoint`` names: a path, or ``task:NAME`` for the
        model task NAME trained for this cell's architecture, config and seed (found in the
        checkpoint directory); None for an empty spec (a freshly seeded model)."""
        if not spec:
            return None
        if not spec.startswith("task:"):
            return spec

        producer = spec.removeprefix("task:")
        if not self.checkpoint_dir:
            raise ValueError(f"checkpoint {spec!r} needs a checkpoint directory")
        path = checkpoints.path_for(self.checkpoint_dir, producer, self.arch, self.arch_config,
                                    self.seed)
        if not path.is_file():
            raise ValueError(f"no {producer} checkpoint for {self.arch} seed {self.seed} at "
                             f"{path}; run the {producer} task first (same suite, listed "
                             "earlier)")
        return str(path)

    def model(self, checkpoint: str = "", **overrides: Any) -> torch.nn.Module:
        """The trained model ``checkpoint`` names (see :meth:`checkpoint_path`), on the cell's
        device and dtype, in eval mode; a freshly seeded one when ``checkpoint`` is empty."""
        path = self.checkpoint_path(checkpoint)
        if path is None:
            return self.build_model(**overrides)

        model = checkpoints.load(path, device=self.torch_device, dtype=self.torch_dtype)
        if model.variant != self.arch:
            raise ValueError(f"checkpoint {path} holds a {model.variant} model, but the cell's "
                             f"architecture is {self.arch}")
        return self._record(model)

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
