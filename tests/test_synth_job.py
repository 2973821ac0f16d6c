"""`ray-gait synth` on Ray, and the synthetic set through step 1 and step 2."""
from __future__ import annotations

import json

import numpy as np

from ray_gait import read_dataset
from ray_gait.cli import main
from ray_gait.io.safe_pickle import loads_arrays
from ray_gait.synth import SynthConfig, generate_sequence, plan_sequences


def test_synth_heatmap_link_end_to_end(ray_session, tmp_path, capsys):
    out = tmp_path / "synth"
    args = ["synth", "--out", str(out), "--ids", "6", "--train-ids", "3", "--views", "0,90", "--frames", "20:28",
            "--seed", "5"]
    assert main(args) == 0
    assert "96 sequences (96 written" in capsys.readouterr().out
    partition = json.loads((out / "partition.json").read_text())
    assert len(partition["TRAIN_SET"]) == 3 and len(partition["TEST_SET"]) == 3
    protocol = json.loads((out / "protocol.json").read_text())
    assert protocol["views"] == ["000", "090"] and set(protocol["probes"]) == {"NM", "BG", "CL"}
    assert (out / "preview.png").stat().st_size > 10_000
    spec = plan_sequences(SynthConfig(ids=6, train_ids=3, views=(0, 90), frames=(20, 28), seed=5))[7]
    pose, sil = generate_sequence(spec, SynthConfig(ids=6, train_ids=3, views=(0, 90), frames=(20, 28), seed=5))
    assert np.array_equal(loads_arrays((out / "pose" / spec.relpath).read_bytes()), pose)
    assert np.array_equal(loads_arrays((out / "sil" / spec.relpath).read_bytes()), sil)
    assert main(args) == 0
    assert "(0 written, 96 already there)" in capsys.readouterr().out

    assert main(["heatmap", "--pose_data_path", str(out / "pose"), "--save_root", str(tmp_path / "maps"),
                 "--dataset_name", "synth"]) == 0
    maps = tmp_path / "maps" / "synth_sigma_8.0_"
    assert main(["link", "--heatmap_data_path", str(maps), "--silhouette_data_path", str(out / "sil"),
                 "--output_path", str(tmp_path / "paired")]) == 0
    rows = list(read_dataset(str(tmp_path / "paired")))
    assert len(rows) == 96
    assert all(r["heatmap"].shape[0] == r["silhouette"].shape[0] for r in rows)
