"""Shared fixtures: one local Ray for the session (2 CPUs, loopback only), pose trees on disk."""
from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")

DATA = Path(__file__).parent / "data"
HEATMAP_FIXTURES = DATA / "opengait_heatmap"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked `gpu` when no CUDA device is present."""
    try:
        import torch
        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def _free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray with 2 CPUs on 127.0.0.1, its own short temp dir; yields the GCS address."""
    import ray
    tmp = tempfile.mkdtemp(prefix="rg", dir="/tmp")
    os.environ["RAY_TMPDIR"] = tmp
    tests = str(Path(__file__).parent)
    path = os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH", "")) if p)
    # The dashboard serves the state API that Ray Train's placement-group cleaner polls: without it,
    # the workers of a Tune trial stopped early keep their CPUs and later trials never start.
    ray.init(num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=_free_port(),
             _temp_dir=tmp, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    import ray.data
    ray.data.DataContext.get_current().enable_progress_bars = False
    address = ray.get_runtime_context().gcs_address
    yield address
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def fixture_poses() -> dict[str, np.ndarray]:
    """OpenGait's test poses (COCO-17 walks and COCO-18 walks)."""
    with np.load(HEATMAP_FIXTURES / "poses.npz") as data:
        return {k: data[k] for k in data.files}


def write_pose_tree(root: Path, sequences: dict[str, np.ndarray]) -> Path:
    """Write {"id/type/view/seq": array} as pickles in OpenGait's layout below root."""
    for rel, pose in sequences.items():
        path = root / f"{rel}.pkl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:
            pickle.dump(pose, handle)
    return root


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Two cores, shared with Ray workers: intra-op threads only oversubscribe them."""
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        pass


@pytest.fixture(scope="session")
def synth_maps(ray_session, tmp_path_factory):
    """A small synthetic set rendered to heatmaps and paired: (data folder, paired data set)."""
    root = tmp_path_factory.mktemp("train")
    data, maps = root / "data", root / "maps"
    assert _cli(["synth", "--out", str(data), "--ids", "8", "--train-ids", "4", "--views", "0,90",
                 "--frames", "16:24", "--no-preview"]) == 0
    assert _cli(["heatmap", "--pose_data_path", str(data / "pose"), "--save_root", str(maps),
                 "--dataset_name", "synth"]) == 0
    assert _cli(["link", "--heatmap_data_path", str(maps / "synth_sigma_8.0_"), "--silhouette_data_path",
                 str(data / "sil"), "--output_path", str(root / "paired")]) == 0
    return data, root / "paired"


def _cli(argv: list[str]) -> int:
    from ray_gait.cli import main
    return main(argv)
