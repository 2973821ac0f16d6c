"""The restricted loader accepts numpy arrays and refuses (without executing) anything else."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from ray_gait import load_pose
from ray_gait.io.safe_pickle import UnsafePickleError, loads_arrays


class _Exploit:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_arrays_load_with_every_protocol(protocol):
    arr = np.arange(17 * 3 * 4, dtype=np.float32).reshape(4, 17, 3)
    assert np.array_equal(loads_arrays(pickle.dumps(arr, protocol=protocol)), arr)


def test_containers_of_arrays_load():
    obj = {"a": [np.zeros(3), (np.ones((2, 2), dtype=np.uint8),)]}
    out = loads_arrays(pickle.dumps(obj))
    assert out["a"][1][0].dtype == np.uint8


def test_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(UnsafePickleError, match="system"):
        loads_arrays(pickle.dumps(_Exploit(str(marker))))
    assert not marker.exists()
    # the same payload through plain pickle would have run it: the test is not vacuous
    pickle.loads(pickle.dumps(_Exploit(str(marker))))
    assert marker.exists()


@pytest.mark.parametrize("obj", [{"a": 1}, "text", [1, 2], np.array([object(), 1], dtype=object)])
def test_non_arrays_are_refused(obj):
    try:
        data = pickle.dumps(obj)
    except Exception:
        pytest.skip("not picklable")
    with pytest.raises(ValueError):
        loads_arrays(data)


def test_truncated_pickle_is_a_clear_error():
    data = pickle.dumps(np.zeros((5, 17, 3)))
    with pytest.raises(ValueError, match="truncated|corrupt"):
        loads_arrays(data[: len(data) // 2])


def test_load_pose_names_the_file(tmp_path):
    path = tmp_path / "bad.pkl"
    path.write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(ValueError, match="bad.pkl"):
        load_pose(str(path))


def test_load_pose_grew_rows(tmp_path):
    rows = np.random.default_rng(0).random((6, 2 + 17 * 3)).astype(np.float32)
    path = tmp_path / "g.pkl"
    path.write_bytes(pickle.dumps(rows))
    pose = load_pose(str(path), dataset_name="GREW")
    assert pose.shape == (6, 17, 3)
    assert np.allclose(pose[:, 0], rows[:, 2:5])
