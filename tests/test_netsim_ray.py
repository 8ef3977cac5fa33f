"""A sweep on an in-process Ray instance gives the rows a local process pool gives."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator

import pytest

from netsim.grid import parse_axis, run_sweep

ray = pytest.importorskip("ray")

GRID = """
seed = 5
epochs = 3
jobs = 300
[nodes]
count = 8
[[nodes.strategy]]
kind = "adaptive"
share = 0.5
rate = 0.2
step = 0.2
[validators]
count = 6
lazy = 0.2
"""


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_sweep_on_ray_equals_the_process_pool(ray_instance: None) -> None:
    tree = tomllib.loads(GRID)
    axes = [parse_axis("p=0.05,0.3"), parse_axis("q=0.1,0.9")]
    local = run_sweep(tree, axes, seeds=2, workers=2)
    on_ray = run_sweep(tree, axes, seeds=2, ray=True)
    assert len(local) == 8 and all(r["status"] == "ok" for r in local)
    assert [r["seed"] for r in local] == [5, 6] * 4
    assert str(on_ray) == str(local)  # NaN-safe equality of every value
