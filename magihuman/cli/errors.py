"""One line on stderr, exit status 2, for the errors a user's input causes: every console script.

    @cli_errors("magihuman-report")
    def main(argv=None): ...

    @cli_errors("magihuman-sweep")      # a config Hydra cannot compose
    @hydra.main(...)
    @cli_errors("magihuman-sweep")      # an input error inside the task
    def main(cfg): ...

The project's own input errors (a bad request, checkpoint, results store, eval input, bench
input or config value, a config Hydra cannot compose, a path that is missing or not
permitted) print ``PROG: error: MESSAGE`` on one line and exit 2; anything else is a bug and
keeps its traceback. ``--debug`` (anywhere on the command line, removed before the tool
parses it), ``MAGIHUMAN_DEBUG=1`` or ``HYDRA_FULL_ERROR=1`` show the traceback of an input
error too.

Hydra reports a task's exception itself (an "Error executing job" line, a partial traceback,
exit 1), so a Hydra app is wrapped on both sides of ``@hydra.main``: inside, an input error
exits before Hydra sees it; outside, composition errors are caught, with Hydra's documented
``HYDRA_FULL_ERROR`` set around the call so that it re-raises them instead of printing.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from contextlib import contextmanager
from typing import Iterator, NoReturn, TypeVar

DEBUG_FLAG = "--debug"
F = TypeVar("F", bound=Callable)


class ConfigError(ValueError):
    """A config value that names nothing valid (an unknown prompt_id, mode, ...)."""


def input_errors() -> tuple[type[BaseException], ...]:
    """The exception types that mean bad input rather than a bug (imported when one is raised:
    this module stays cheap to import for the modules that raise :class:`ConfigError`)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from magihuman.api import RequestError
    from magihuman.eval.errors import EvalInputError
    from magihuman.harness.bench import BenchError
    from magihuman.harness.store import StoreError
    from magihuman.model.checkpoint import CheckpointError

    return (ConfigError, RequestError, CheckpointError, StoreError, EvalInputError, BenchError, HydraException,
            OmegaConfBaseException, FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError,
            NotADirectoryError)  # fmt: skip


def one_line(error: BaseException) -> str:
    """The message on one line (Hydra's instantiation errors already carry the constructor's own)."""
    return " ".join(part.strip() for part in str(error).splitlines() if part.strip()) or type(error).__name__


def exit_bad_input(prog: str, error: BaseException) -> NoReturn:
    """Print ``PROG: error: MESSAGE`` on one line and exit 2 (also from where Hydra would only
    warn about an exception: its callbacks)."""
    print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
    raise SystemExit(2) from None


def debug_requested(argv: list[str]) -> bool:
    """``--debug`` in ``argv``, else ``MAGIHUMAN_DEBUG`` (which a wrapper sets for the call), else ``HYDRA_FULL_ERROR``."""
    switch = os.environ.get("MAGIHUMAN_DEBUG", os.environ.get("HYDRA_FULL_ERROR", ""))
    return DEBUG_FLAG in argv or switch not in ("", "0")


@contextmanager
def _environment(**values: str) -> Iterator[None]:
    previous = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def cli_errors(prog: str) -> Callable[[F], F]:
    """Decorate a console script's ``main`` (a Hydra app: on both sides of ``@hydra.main``):
    input errors become one line on stderr and ``SystemExit(2)``. ``--debug`` is taken off
    the ``argv`` list passed to ``main`` (else off ``sys.argv``) before ``main`` parses it; the
    verdict is passed on as ``MAGIHUMAN_DEBUG`` for the call (to an inner wrapper, to workers)."""

    def decorate(main: F) -> F:
        @functools.wraps(main)
        def run(*args, **kwargs):
            if args and isinstance(args[0], list):  # main(argv)
                argv = args[0]
                args = ([a for a in argv if a != DEBUG_FLAG], *args[1:])
            elif isinstance(kwargs.get("argv"), list):
                argv = kwargs["argv"]
                kwargs["argv"] = [a for a in argv if a != DEBUG_FLAG]
            else:  # the console script (or Hydra calling its task with a config): sys.argv
                argv = sys.argv[1:]
                sys.argv[1:] = [a for a in argv if a != DEBUG_FLAG]
            debug = debug_requested(argv)
            try:
                with _environment(HYDRA_FULL_ERROR="1", MAGIHUMAN_DEBUG="1" if debug else "0"):
                    return main(*args, **kwargs)
            except input_errors() as error:
                if debug:
                    raise
                exit_bad_input(prog, error)

        run.cli_prog = prog  # type: ignore[attr-defined]
        return run  # type: ignore[return-value]

    return decorate
