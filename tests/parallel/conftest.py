"""One 2-rank CPU launch (gloo) per session, shared by every parallel test that needs ranks."""

import pytest

from tests.golden import golden_files


@pytest.fixture(scope="session")
def rank_results(tmp_path_factory) -> list[dict[str, object]]:
    """Per rank, the outputs of :func:`tests.parallel.ranks.rank_main` on every golden DiT."""
    from tests.parallel.ranks import launch

    return launch(golden_files("dit_*.safetensors"), tmp_path_factory.mktemp("parallel-ranks"))
