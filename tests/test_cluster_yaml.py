"""cluster.yaml is a valid Ray autoscaler configuration and secure by default (offline: no credentials, no Ray)."""
from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _validate(cfg: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config
    prepared = prepare_config(copy.deepcopy(cfg))
    validate_config(prepared)
    return prepared


@pytest.fixture
def cluster() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_cluster_yaml_validates_against_rays_schema(cluster):
    prepared = _validate(cluster)
    types = prepared["available_node_types"]
    assert prepared["head_node_type"] == "head"
    assert types["gpu_worker"]["resources"]["GPU"] >= 1 and types["cpu_worker"]["resources"]["CPU"] >= 8
    assert types["cpu_worker"]["min_workers"] <= types["cpu_worker"]["max_workers"]
    assert prepared["idle_timeout_minutes"] > 0
    assert any("pip install" in c and "ray_gait" in c for c in prepared["setup_commands"])


@pytest.mark.parametrize("mutate, error, message", [
    (lambda c: c.update(head_node_typo="head"), "ValidationError", "'head_node_typo' was unexpected"),
    (lambda c: c.update(head_node_type="nonexistent"), "ValueError", "must be one of `available_node_types`"),
    (lambda c: c["available_node_types"]["cpu_worker"].pop("resources") and None, "ValidationError",
     "'resources' is a required property"),
])
def test_validation_catches_broken_configs(cluster, mutate, error, message):
    from jsonschema.exceptions import ValidationError
    mutate(cluster)
    with pytest.raises((ValidationError, ValueError)) as caught:
        _validate(cluster)
    assert type(caught.value).__name__ == error and message in str(caught.value)


# Secure by default: token authentication on every node, the dashboard and Jobs API on the head's loopback,
# IMDSv2 on every node type, and no token in the file.  Each check returns its problems (empty: none).

TOKEN_FILE = "~/.ray/auth_token"
IMDSV2 = {"HttpTokens": "required", "HttpEndpoint": "enabled", "HttpPutResponseHopLimit": 2}
START_KEYS = ("head_start_ray_commands", "worker_start_ray_commands")


@pytest.fixture
def cluster_text() -> str:
    return (ROOT / "cluster.yaml").read_text()


def _ray_start_commands(cluster: dict, key: str) -> list[str]:
    """The commands of cluster[key] that run `ray start`."""
    return [c for c in cluster.get(key) or [] if re.search(r"\bray start\b", c)]


def _env_before_ray_start(command: str) -> dict[str, str]:
    """NAME=value assignments (plain or exported) that precede `ray start` in one shell command line."""
    prefix = command[:re.search(r"\bray start\b", command).start()]
    return dict(re.findall(r"(?:^|[\s;])([A-Z_][A-Z0-9_]*)=(\S+?)(?=[\s;]|$)", prefix))


def _token_mounts(cluster: dict) -> list[str]:
    """The node paths that file_mounts fills from the user's token file."""
    return [remote for remote, local in (cluster.get("file_mounts") or {}).items() if local == TOKEN_FILE]


def _token_literals(text: str) -> list[str]:
    """What looks like a token written into the file: a RAY_AUTH_TOKEN value, or a long run of hex digits."""
    assigned = re.findall(r"RAY_AUTH_TOKEN\s*[=:]\s*\S+", text)
    return assigned + re.findall(r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{32,}(?![0-9A-Fa-f])", text)


def _auth_problems(cluster: dict, key: str) -> list[str]:
    """Why the `ray start` commands of cluster[key] would not run in token mode with the mounted token."""
    commands = _ray_start_commands(cluster, key)
    mounts = _token_mounts(cluster)
    problems = [] if commands else [f"{key} starts no Ray"]
    for command in commands:
        env = _env_before_ray_start(command)
        if env.get("RAY_AUTH_MODE") != "token":
            problems.append(f"no RAY_AUTH_MODE=token before: {command}")
        if env.get("RAY_AUTH_TOKEN_PATH") not in mounts:
            problems.append(f"RAY_AUTH_TOKEN_PATH is not the token mounted from {TOKEN_FILE}: {command}")
    return problems


def _token_source_problems(cluster: dict, text: str) -> list[str]:
    """Why the token would not come from the user's machine alone (one file mount, nothing in the file)."""
    mounts = _token_mounts(cluster)
    problems = [] if len(mounts) == 1 else [f"file_mounts must copy {TOKEN_FILE} to every node once: {mounts}"]
    return problems + [f"token literal in cluster.yaml: {leak[:20]}..." for leak in _token_literals(text)]


def _dashboard_problems(cluster: dict, text: str) -> list[str]:
    """Why the dashboard and Jobs API could be reached other than on the head's 127.0.0.1."""
    commands = _ray_start_commands(cluster, "head_start_ray_commands")
    problems = [f"dashboard not on 127.0.0.1: {c}" for c in commands
                if re.findall(r"--dashboard-host[= ](\S+)", c) != ["127.0.0.1"]]
    return problems + (["0.0.0.0 in cluster.yaml"] if "0.0.0.0" in text else [])


def _imds_problems(cluster: dict) -> list[str]:
    """The node types that do not require IMDSv2 with hop limit 2."""
    return [name for name, node_type in cluster["available_node_types"].items()
            if node_type["node_config"].get("MetadataOptions") != IMDSV2]


@pytest.mark.parametrize("key", START_KEYS)
def test_every_node_starts_ray_with_token_authentication(cluster, key):
    assert _auth_problems(cluster, key) == []


def test_the_token_comes_from_the_users_machine_not_this_file(cluster, cluster_text):
    assert _token_source_problems(cluster, cluster_text) == []
    assert _token_mounts(cluster)[0].startswith("/")


def test_dashboard_and_job_api_only_on_the_heads_loopback(cluster, cluster_text):
    assert _dashboard_problems(cluster, cluster_text) == []


def test_every_node_type_requires_imdsv2(cluster):
    assert _imds_problems(cluster) == []


def test_secure_settings_survive_rays_validation(cluster):
    prepared = _validate(cluster)
    assert _imds_problems(prepared) == []
    assert all(_auth_problems(prepared, key) == [] for key in START_KEYS)
    assert TOKEN_FILE in prepared["file_mounts"].values()


def _strip_env(name: str, key: str) -> Callable[[dict], None]:
    """A mutation: drop NAME=... from the `ray start` commands of cluster[key]."""
    def mutate(c: dict) -> None:
        c[key] = [re.sub(rf"\s{name}=\S+?(?=[\s;])", "", cmd) for cmd in c[key]]
    return mutate


def _set_metadata(node_type: str, **options: object) -> Callable[[dict], None]:
    """A mutation: change one node type's MetadataOptions, or remove them (no options)."""
    def mutate(c: dict) -> None:
        config = c["available_node_types"][node_type]["node_config"]
        if options:
            config["MetadataOptions"] = {**IMDSV2, **options}
        else:
            del config["MetadataOptions"]
    return mutate


def _head_start(edit: Callable[[str], str]) -> Callable[[dict], None]:
    """A mutation: edit every head start command."""
    def mutate(c: dict) -> None:
        c["head_start_ray_commands"] = [edit(cmd) for cmd in c["head_start_ray_commands"]]
    return mutate


CHECKS: dict[str, Callable[[dict, str], list[str]]] = {
    "auth": lambda c, text: _auth_problems(c, START_KEYS[0]) + _auth_problems(c, START_KEYS[1]),
    "token source": _token_source_problems,
    "dashboard": _dashboard_problems,
    "imds": lambda c, text: _imds_problems(c),
}


@pytest.mark.parametrize("mutate, check", [
    pytest.param(_strip_env("RAY_AUTH_MODE", "head_start_ray_commands"), "auth", id="head-without-token-mode"),
    pytest.param(_strip_env("RAY_AUTH_MODE", "worker_start_ray_commands"), "auth", id="worker-without-token-mode"),
    pytest.param(_strip_env("RAY_AUTH_TOKEN_PATH", "worker_start_ray_commands"), "auth", id="worker-without-token"),
    pytest.param(lambda c: c["file_mounts"].pop("/home/ubuntu/.ray/auth_token"), "auth", id="no-mount-auth"),
    pytest.param(lambda c: c["file_mounts"].pop("/home/ubuntu/.ray/auth_token"), "token source", id="no-mount"),
    pytest.param(lambda c: c["setup_commands"].append("echo " + "ab12" * 16 + " > ~/.ray/auth_token"),
                 "token source", id="token-in-file"),
    pytest.param(_head_start(lambda x: x.replace("127.0.0.1", "0.0.0.0")), "dashboard", id="dashboard-everywhere"),
    pytest.param(_head_start(lambda x: re.sub(r"\s--dashboard-host=\S+", "", x)), "dashboard", id="dashboard-default"),
    pytest.param(_set_metadata("head"), "imds", id="head-without-imdsv2"),
    pytest.param(_set_metadata("gpu_worker", HttpTokens="optional"), "imds", id="gpu-imdsv1-allowed"),
    pytest.param(_set_metadata("cpu_worker", HttpPutResponseHopLimit=1), "imds", id="cpu-hop-limit-1"),
])
def test_each_check_catches_its_regression(cluster, mutate, check):
    mutate(cluster)
    assert CHECKS[check](cluster, yaml.safe_dump(cluster))


@pytest.mark.parametrize("leak", ["RAY_AUTH_TOKEN=" + "ab12" * 16, "RAY_AUTH_TOKEN: hunter2", "# " + "0f" * 32])
def test_token_literal_check_catches_a_written_token(cluster_text, leak):
    assert _token_literals(cluster_text + "\n" + leak + "\n")


# The nodes install what README installs, and README's cluster examples use only what the cluster has.

README = ROOT / "README.md"


def _install_problems(cluster: dict, readme: str) -> list[str]:
    """How the nodes' set-up differs from README's: torch at README's pin first, then the project."""
    pinned = re.search(r"pip install (torch==\S+) && pip install -e \.", readme)
    if pinned is None:
        return ["README has no `pip install torch==X && pip install -e .` command"]
    setup = [c for c in cluster.get("setup_commands") or [] if "pip install" in c]
    torch_at = [i for i, c in enumerate(setup) if re.search(rf"pip install (--quiet )?{re.escape(pinned[1])}$", c)]
    project_at = [i for i, c in enumerate(setup) if re.search(r"pip install (--quiet )?-e /home/ubuntu/ray_gait$", c)]
    if not torch_at or not project_at:
        return [f"setup_commands lack `pip install {pinned[1]}` or the project's `pip install -e`: {setup}"]
    problems = [f"torch is installed after the project: {setup}"] if torch_at[0] > project_at[0] else []
    return problems + [f"another torch pin: {c}" for c in setup if "torch" in c and pinned[1] not in c]


def _readme_cluster_paths(readme: str) -> list[str]:
    """The path arguments of README's `ray job submit` examples (shell lines joined at their backslashes)."""
    joined = readme.replace("\\\n", " ")
    paths = []
    for line in joined.splitlines():
        command = re.search(r"ray job submit .* -- python (jobs/.*)", line)
        if command:
            words = command[1].replace("`", " ").split()
            paths += [value for flag, value in zip(words, words[1:])
                      if re.fullmatch(r"--(out|data|checkpoint|gallery|probe|save_root|dataset_partition|dataset_protocol|\w+_path)",
                                                  flag)
                      and value != "..."]
    return paths


def _path_problems(cluster: dict, readme: str) -> list[str]:
    """README cluster paths that are neither object storage nor a file of the uploaded project."""
    mounted = tuple(cluster.get("file_mounts") or {})
    return [p for p in _readme_cluster_paths(readme) if not re.match(r"(s3|gs)://", p)
            and not (ROOT / p).exists() and not p.startswith(mounted)]


def test_nodes_install_the_versions_readme_installs(cluster):
    assert _install_problems(cluster, README.read_text()) == []


def test_readme_cluster_examples_use_only_paths_the_cluster_has(cluster):
    readme = README.read_text()
    assert _readme_cluster_paths(readme), "README has no ray job submit example with paths"
    assert _path_problems(cluster, readme) == []


def test_install_and_path_checks_catch_their_regressions(cluster):
    readme = README.read_text()
    broken = copy.deepcopy(cluster)
    broken["setup_commands"] = [c.replace("torch==2.13.0", '"torch>=2.4,<=2.14.1"') for c in cluster["setup_commands"]]
    assert _install_problems(broken, readme)
    example = ("ray job submit --working-dir . -- python jobs/pipeline.py \\\n    --out s3://b/x "
               "--silhouette_data_path /mnt/CCPG-sils --dataset_partition configs/nothing.json\n")
    assert _path_problems(cluster, example) == ["/mnt/CCPG-sils", "configs/nothing.json"]
