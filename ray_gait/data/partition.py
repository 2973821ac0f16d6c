"""Partitions: OpenGait's partition JSON and the train / validation / test identities of a config."""
from __future__ import annotations

import json

from ray_gait.io import fs


def read_partition(path: str) -> dict[str, list[str]]:
    """OpenGait's partition JSON {"TRAIN_SET": [...], "TEST_SET": [...]}, ids as strings."""
    loc = fs.resolve(path)
    if not fs.exists(loc) or fs.is_dir(loc):
        raise FileNotFoundError(f"partition file not found: {path}")
    try:
        data = json.loads(fs.read_bytes(loc).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a partition JSON ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a partition is a mapping of TRAIN_SET / TEST_SET to ids")
    for key in ("TRAIN_SET", "TEST_SET"):
        if key not in data:
            raise ValueError(f"{path}: partition needs {key}")
    splits = {k: [str(i) for i in v] for k, v in data.items() if isinstance(v, list)}
    for key, ids in splits.items():
        for ident in ids:
            fs.safe_component(ident, f"{key} id in {path}")
    return splits


def split_ids(partition: dict[str, list[str]], val_ids: int = 0) -> dict[str, list[str]]:
    """TRAIN / VAL / TEST identities: the partition's VAL_SET, else the last `val_ids` of TRAIN_SET (sorted)."""
    train = sorted(set(partition["TRAIN_SET"]))
    if "VAL_SET" in partition:
        val = sorted(set(partition["VAL_SET"]))
        train = [i for i in train if i not in set(val)]
    elif val_ids > 0:
        if val_ids >= len(train):
            raise ValueError(f"data_cfg.val_ids {val_ids} leaves no training identity (TRAIN_SET has {len(train)})")
        train, val = train[:-val_ids], train[-val_ids:]
    else:
        val = []
    return {"TRAIN_SET": train, "VAL_SET": val, "TEST_SET": list(partition["TEST_SET"])}
