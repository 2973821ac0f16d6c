"""ensure_ray's arguments, checked without starting Ray: a local Ray on 127.0.0.1, a cluster from RAY_ADDRESS."""
from __future__ import annotations

import inspect

import pytest
import ray
from ray._private import ray_constants

from ray_gait.console import Settings
from ray_gait.ray_layer import session


class _Recorder:
    """Stands in for ray.init: keeps the keyword arguments of each call, starts nothing."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, **kwargs: object) -> None:
        self.calls.append(kwargs)


@pytest.fixture
def fake_init(monkeypatch: pytest.MonkeyPatch) -> _Recorder:
    recorder = _Recorder()
    monkeypatch.setattr(session.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(session.ray, "init", recorder)
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
    monkeypatch.delenv(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR, raising=False)
    monkeypatch.setattr(session, "settings", lambda: Settings(verbose=True))
    return recorder


def test_local_init_kwargs_bind_a_new_ray_to_loopback():
    kwargs = session.local_init_kwargs(num_cpus=3)
    assert kwargs == {"address": "local", "num_cpus": 3, "log_to_driver": True,
                      "_node_ip_address": "127.0.0.1", "dashboard_host": "127.0.0.1"}


def test_ray_init_accepts_every_local_init_kwarg():
    params = inspect.signature(ray.init).parameters
    source = inspect.getsource(ray.init)
    for key in session.local_init_kwargs():
        assert key in params or f'kwargs.pop("{key}"' in source, key


def test_loopback_environment_is_the_switch_ray_reads():
    assert session.loopback_environment() == {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    assert ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR == "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def test_local_start_stays_on_loopback(fake_init, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    session.ensure_ray(num_cpus=2)
    assert fake_init.calls == [session.local_init_kwargs(2)]
    assert ray_constants.ENABLE_RAY_CLUSTER is False
    assert session.os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    from ray._private import services
    assert services.resolve_ip_for_localhost("127.0.0.1") == "127.0.0.1"   # what ray.init does to _node_ip_address


def test_cluster_in_ray_address_is_joined_as_given(fake_init, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    session.ensure_ray(num_cpus=2)
    assert fake_init.calls == [{"address": "10.0.0.5:6379", "log_to_driver": True}]
    assert ray_constants.ENABLE_RAY_CLUSTER is True
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in session.os.environ


def test_without_verbose_ray_output_stays_in_its_log_files(fake_init, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(session, "settings", lambda: Settings(verbose=False))
    calls: list[str] = []
    monkeypatch.setattr(session, "_quiet_ray_console", lambda: calls.append("quiet"))
    monkeypatch.setattr(session, "quiet_ray_loggers", lambda: calls.append("loggers"))
    monkeypatch.setattr(session, "drop_native_lines", calls.append)
    session.ensure_ray(num_cpus=2)
    assert fake_init.calls == [session.local_init_kwargs(2, log_to_driver=False)]
    assert calls == ["quiet", "loggers", session.RAY_NATIVE_LOG_LINE]


def test_ray_console_handlers_show_errors_only_and_files_keep_everything(monkeypatch):
    import logging
    logger = logging.getLogger("ray.ray_gait_test")
    console, file = logging.StreamHandler(), logging.FileHandler("/dev/null", delay=True)
    monkeypatch.setattr(logger, "handlers", [console, file])
    session.quiet_ray_loggers()
    assert console.level == logging.ERROR and file.level == logging.NOTSET


def test_nothing_happens_once_ray_is_up(fake_init, monkeypatch):
    monkeypatch.setattr(session.ray, "is_initialized", lambda: True)
    session.ensure_ray()
    assert fake_init.calls == []
