"""Shared tiny release for the component tests: built once per session in a temp dir."""

import pytest

from magihuman.components import Components, ReleaseLayout, load_components
from magihuman.components.tiny import ensure_tiny_release


@pytest.fixture(scope="session")
def tiny_cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny-cache")


@pytest.fixture(scope="session")
def tiny_release(tiny_cache_dir) -> ReleaseLayout:
    return ensure_tiny_release(tiny_cache_dir)


@pytest.fixture(scope="session")
def tiny_components(tiny_release) -> Components:
    return load_components(tiny_release)
