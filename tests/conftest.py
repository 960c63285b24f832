"""Test-wide hooks: ``@pytest.mark.gpu`` tests skip cleanly where CUDA is absent (CI);
``@pytest.mark.slow`` tests (minutes on 2 CPU cores, e.g. inductor compiles) run with ``--runslow``."""

from __future__ import annotations

import pytest
import torch


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run @pytest.mark.slow tests")


def pytest_collection_modifyitems(config, items):
    skips = {}
    if not torch.cuda.is_available():
        skips["gpu"] = pytest.mark.skip(reason="needs a CUDA GPU")
    if not config.getoption("--runslow"):
        skips["slow"] = pytest.mark.skip(reason="slow (minutes on CPU): run with --runslow")
    for item in items:
        for marker, skip in skips.items():
            if marker in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module whose results are not timed: OpenMP oversubscription on a
    shared 2-core box stalls compiled and tiny runs by up to 100x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
