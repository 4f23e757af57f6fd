"""Datasets of the shipped lm-eval tasks, read from the JSONL files beside this module.

lm-eval imports this file through ``custom_dataset: !function loaders.<name>`` in the task YAML,
so the data is found wherever the package is installed and nothing is fetched from the Hub.
lm-eval calls the loader with the task's metadata and dataset_kwargs as keywords; only
``file`` is used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def jsonl(file: str = "", **_: Any) -> Any:
    """``{"test": Dataset}`` of the rows of ``HERE / file``; a malformed line is an error."""
    import datasets

    path = HERE / file
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{n}: not JSON: {err}") from None
    if not rows:
        raise ValueError(f"{path}: no rows")
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})
