"""The sequences of a config's split: its identities, its index (driver) and its reader (worker)."""
from __future__ import annotations

from ray_gait.data.index import SplitIndex, build_index
from ray_gait.data.reader import SequenceReader
from ray_gait.config import TrainConfig, heatmap_config
from ray_gait.models import input_columns
from ray_gait.data.partition import read_partition, split_ids

SPLITS = ("TRAIN_SET", "VAL_SET", "TEST_SET")


def model_columns(cfg: TrainConfig) -> tuple[str, ...]:
    """The inputs the configured model reads: ("heatmap",) or ("heatmap", "silhouette")."""
    return input_columns(cfg.model_cfg.get("model", ""), cfg.data_cfg.data_in_use)


def partition_splits(cfg: TrainConfig) -> dict[str, list[str]]:
    """TRAIN_SET / VAL_SET / TEST_SET identities of the configured partition and `data_cfg.val_ids`."""
    try:
        partition = read_partition(cfg.data_cfg.dataset_partition)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"data_cfg.dataset_partition: {err}") from err
    return split_ids(partition, cfg.data_cfg.val_ids)


def split_index(cfg: TrainConfig, split: str) -> SplitIndex:
    """The index of one split of the configured data set; ValueError when it holds no sequence."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: use one of {SPLITS}")
    data = cfg.data_cfg
    root = data.dataset_root
    index = build_index(root, partition_splits(cfg)[split], dataset_name=data.dataset_name,
                        silhouette_root=data.silhouette_root,
                        needs_silhouettes="silhouette" in model_columns(cfg))
    if not len(index):
        raise ValueError(f"no sequence of the partition's {split} found in {root}")
    return index


def dataset_index(cfg: TrainConfig, root: str) -> SplitIndex:
    """The index of every sequence of the data set `root`, read as the config's model reads it; ValueError when empty."""
    data = cfg.data_cfg
    index = build_index(root, None, dataset_name=data.dataset_name, silhouette_root=data.silhouette_root,
                        needs_silhouettes="silhouette" in model_columns(cfg))
    if not len(index):
        raise ValueError(f"no sequence found in {root}")
    return index


def make_reader(cfg: TrainConfig, index: SplitIndex, render_device: str | None = None,
                once: bool = False) -> SequenceReader:
    """A reader of `index` with the config's cache bound (`data_cfg.cache` / `cache_mb`) and heatmap config;
    `once`: every sequence is read once per pass (evaluation), so nothing is kept."""
    cache = 0 if once else None if cfg.data_cfg.cache else int(cfg.data_cfg.cache_mb * (1 << 20))
    return SequenceReader(index, model_columns(cfg), cache_bytes=cache, heatmap_config=heatmap_config(cfg),
                          render_device=render_device)
