"""One 2-rank CPU launch (gloo) per session, shared by every parallel test that needs ranks."""

import pytest

from tests.parallel.cases import ensure_cases, parallel_params


@pytest.fixture(scope="session")
def rank_results(tmp_path_factory) -> list[dict[str, object]]:
    """Per rank, the outputs of :func:`tests.parallel.ranks.rank_main` on every golden DiT and the one-KV-group DiT."""
    from tests.parallel.ranks import launch

    cases = ensure_cases(parallel_params())
    return launch(cases, tmp_path_factory.mktemp("parallel-ranks"))
