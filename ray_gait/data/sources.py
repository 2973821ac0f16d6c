"""Sequence sources: what training batches and embeddings are built from (in memory, or a data set reader)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass
class SequenceSet:
    """Sequences held in memory (tests, benchmarks, notebooks): the source interface of `SequenceReader`."""

    columns: tuple[str, ...]
    inputs: list[list[np.ndarray]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    keys: list[tuple[str, str, str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def add(self, row: dict[str, Any]) -> None:
        """Add a decoded data set row (its arrays are kept, not copied)."""
        self.inputs.append([row[c] for c in self.columns])
        self.labels.append(str(row["id"]))
        self.keys.append((str(row["id"]), str(row["type"]), str(row["view"]), str(row["seq"])))

    def arrays(self, i: int) -> list[np.ndarray]:
        """Sequence `i` as aligned arrays [T, ...]."""
        return self.inputs[i]

    def model_arrays(self, collated: list[np.ndarray]) -> list[np.ndarray]:
        """Collated arrays are already what the model input is built from."""
        return collated


class SequenceSource(Protocol):
    """What batches are built from: labels, and the arrays of a sequence when asked (SequenceSet, SequenceReader)."""

    labels: list[str]

    def arrays(self, i: int) -> list[np.ndarray]:
        """Sequence `i` as aligned arrays [T, ...]."""

    def model_arrays(self, collated: list[np.ndarray]) -> list[np.ndarray]:
        """Collated sampled frames -> the arrays the model input is built from."""
