"""Config files made to exhaust memory: YAML alias bombs, `${...}` reference chains.

The hostile loads run in a subprocess limited to 1 GiB of address space, so that a loader that
expands them fails with MemoryError (or runs past the timeout) instead of taking the machine down;
the child reports the error, the seconds and the memory the load itself took.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ray_gait.heatmap.config import load_heatmap_config
from ray_gait.yaml_config import ConfigError, parse_override, read_yaml, resolve_references

ROOT = Path(__file__).resolve().parents[1]
ADDRESS_SPACE = 1 << 30
CHILD_TIMEOUT_S = 60

LOADERS = {
    "read_yaml": "from ray_gait.yaml_config import read_yaml as load",
    "heatmap": "from ray_gait.heatmap.config import load_heatmap_config as load",
    "train": "from ray_gait.config import load_train_config as load",
    "search": "from ray_gait.tuning.space import load_search_spec as load",
}

CHILD = """
import json, resource, sys, time
{import_line}
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
try:
    load(sys.argv[1])
    outcome = {{"error": None, "message": ""}}
except BaseException as exc:
    outcome = {{"error": type(exc).__name__, "message": str(exc)[:2000]}}
outcome["seconds"] = time.perf_counter() - started
outcome["grown_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps(outcome))
"""


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def load_in_child(loader: str, path: Path) -> dict:
    """Run one config loader on `path` in a 1 GiB subprocess; its outcome (error, message, seconds, grown_mb)."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    try:
        done = subprocess.run([sys.executable, "-c", CHILD.format(import_line=LOADERS[loader]), str(path)],
                              capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, env=env,
                              preexec_fn=_limit_memory, cwd=str(ROOT))
    except subprocess.TimeoutExpired:
        pytest.fail(f"{loader}: still loading {path.name} after {CHILD_TIMEOUT_S} s")
    assert done.returncode == 0, f"{loader}: the child died (rc {done.returncode}): {done.stderr[-2000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def alias_bomb() -> str:
    """About 300 bytes of YAML whose nine levels of aliases expand to 9**9 (387 million) strings."""
    lines = ["a: &a [x,x,x,x,x,x,x,x,x]"]
    previous = "a"
    for name in "bcdefghi":
        lines.append(f"{name}: &{name} [{','.join([f'*{previous}'] * 9)}]")
        previous = name
    return "\n".join(lines) + "\n"


def reference_chain(keys: list[str], width: int, head: dict | None = None) -> str:
    """YAML of a list of `width` zeros at keys[0], then at each key `width` references to the key before it.

    Once expanded it holds width ** len(keys) values; dotted keys are written as nested sections.
    """
    tree: dict = dict(head or {})
    for i, dotted in enumerate(keys):
        *sections, name = dotted.split(".")
        node = tree
        for section in sections:
            node = node.setdefault(section, {})
        node[name] = [0] * width if i == 0 else [f"${{{keys[i - 1]}}}"] * width
    return yaml.safe_dump(tree, default_flow_style=None, width=1 << 16, sort_keys=False)


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_an_alias_bomb_is_refused_fast_and_small(tmp_path, loader):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(alias_bomb())
    assert bomb.stat().st_size < 500
    outcome = load_in_child(loader, bomb)
    assert outcome["error"] == "ConfigError", outcome
    assert str(bomb) in outcome["message"] and "aliases" in outcome["message"]
    assert outcome["seconds"] < 5 and outcome["grown_mb"] < 50, outcome


def test_an_alias_in_an_override_is_refused():
    with pytest.raises(ConfigError, match=r"override x: .*aliases \(&a\)"):
        parse_override("x=[&a [1, 2], *a, *a]")


def test_a_config_nested_too_deeply_is_a_config_error(tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("a: " + "[" * 20000 + "]" * 20000 + "\n")
    with pytest.raises(ConfigError, match="deep.yaml"):
        read_yaml(str(deep))


def test_unknown_keys_are_refused_before_references_are_expanded(tmp_path):
    chain = tmp_path / "chain.yaml"
    chain.write_text(reference_chain(["junk_a", "junk_b", "junk_c", "junk_d", "junk_e"], 50,
                                     head={"norm_args": {"heatmap_image_height": 128}}))
    assert chain.stat().st_size < 4096
    outcome = load_in_child("heatmap", chain)
    assert outcome["error"] == "ConfigError", outcome
    assert "unknown key(s) junk_a, junk_b" in outcome["message"] and str(chain) in outcome["message"]
    assert outcome["seconds"] < 5 and outcome["grown_mb"] < 50, outcome


def test_a_reference_chain_between_known_keys_is_bounded(tmp_path):
    chain = tmp_path / "known.yaml"
    chain.write_text(reference_chain(["norm_args.heatmap_image_height", "heatmap_generator_args.img_h",
                                      "heatmap_generator_args.img_w", "align_args.final_img_size",
                                      "align_args.heatmap_image_size"], 50))
    outcome = load_in_child("heatmap", chain)
    assert outcome["error"] == "ConfigError", outcome
    assert "references expand the config to more than 100000 values" in outcome["message"]
    assert outcome["seconds"] < 5 and outcome["grown_mb"] < 50, outcome


def test_the_node_bound_counts_the_values_references_produce():
    tree = {"a": list(range(99)), "b": ["${a}"] * 10}          # about 1,100 values once expanded
    assert len(resolve_references(tree, max_nodes=2000)["b"]) == 10
    with pytest.raises(ConfigError, match="more than 1000 values"):
        resolve_references(tree, max_nodes=1000)


def test_every_packaged_config_loads_without_aliases():
    files = sorted((ROOT / "configs").rglob("*.yaml")) + sorted((ROOT / "tests" / "data").glob("*.yaml"))
    assert len(files) > 10
    for path in files:
        assert isinstance(read_yaml(str(path)), dict), path


def test_a_legitimate_config_with_references_still_loads(tmp_path):
    source = tmp_path / "heatmap.yaml"
    source.write_text((ROOT / "configs" / "heatmap.yaml").read_text())
    cfg = load_heatmap_config(str(source), {"norm_args.heatmap_image_height": 96, "padkeypoints_args.use_conf": False})
    assert cfg.heatmap_generator_args.img_h == cfg.heatmap_generator_args.img_w == 96
    assert cfg.align_args.heatmap_image_size == 96 and cfg.heatmap_generator_args.use_score is False
    wide = {"a": list(range(1000)), "b": "${a}", "c": ["${b}"] * 50}
    assert resolve_references(wide)["c"][49] == list(range(1000))


def test_a_missing_or_unreadable_yaml_file_is_named(tmp_path):
    """`ray-gait train --cfgs typo.yaml` printed `[Errno 2] ...`; a binary file printed the codec's complaint
    without the file."""
    with pytest.raises(FileNotFoundError, match=f"YAML file not found: {tmp_path / 'typo.yaml'}"):
        read_yaml(str(tmp_path / "typo.yaml"))
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00junk")
    for path in (tmp_path / "binary.yaml", tmp_path):
        with pytest.raises(ConfigError, match=f"{path}: not a readable YAML file"):
            read_yaml(str(path))

