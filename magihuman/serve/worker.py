"""A worker process: one warm pipeline, pulling requests from the durable queue until its parent exits.

The model loads once, when the worker starts (``server.preload`` names the DiTs loaded then;
others load on first use and stay). Between sampler steps the worker logs progress and checks
whether the request was cancelled; a cancelled request stops there, its partial file removed.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import hosted, webhooks
from .store import CANCELLED, ERROR, OK, Request, Store

POLL_S = 0.05  # an idle worker looks for a new request this often


@dataclass(frozen=True)
class WorkerSpec:
    index: int
    device: str | None  # None: cuda:<index> where CUDA is, else cpu
    model: dict[str, Any]  # the resolved ``model`` group (a Hydra ``_target_`` config)
    preload: tuple[str, ...]  # DiTs loaded at start (e.g. distill: what 256p requests run)
    state_dir: str
    cpu_threads: int  # torch threads of a CPU worker (the cores shared among CPU workers)


class Cancelled(Exception):
    """The request was cancelled; raised between two sampler steps."""


class StepWatch:
    """Calls ``on_step(stage, step, timer)`` before every denoise step of ``pipeline``.

    It wraps the pipeline's per-step timer (``MagiHumanPipeline._timed``, which every sampler
    stage's velocity passes through) on this one instance, so no pipeline code changes and the
    hook runs outside any compiled region. The pipeline itself is not changed otherwise.
    """

    def __init__(self, pipeline):
        timed = type(pipeline)._timed
        self.on_step: Callable[[str, int, Any], None] | None = None

        def watched_timed(velocity, timer, stage: str):
            inner, steps = timed(velocity, timer, stage), itertools.count(1)

            def step(video, audio, sigma):
                if self.on_step is not None:
                    self.on_step(stage, next(steps), timer)
                return inner(video, audio, sigma)

            return step

        pipeline._timed = watched_timed


class Progress:
    """Logs a request's stages and steps into the store, and stops it once cancelled."""

    def __init__(self, store: Store, request: Request):
        self.store, self.request = store, request
        self.steps = hosted.num_steps(request.payload)
        self.logged: set[str] = set()

    def __call__(self, stage: str, step: int, timer) -> None:
        if self.store.cancel_requested(self.request.id):
            raise Cancelled
        if step == 1:  # the stages before this denoise stage are done: log their times once
            for name, seconds in timer.stages().items():
                if name not in self.logged:
                    self.logged.add(name)
                    self.store.log(self.request.id, f"{name} done in {seconds:.2f} s")
        total = f"/{self.steps}" if stage == "base_denoise" else ""
        self.store.log(self.request.id, f"{stage}: step {step}{total}")
        if stage == "base_denoise" and step == self.steps:
            self.store.log(self.request.id, "last base step; then SR (if the resolution has it), decode and mux")


def main(spec: WorkerSpec) -> None:
    """The worker process: load the pipeline once, then serve requests until the parent exits."""
    _die_with_parent()
    parent = os.getppid()
    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    device = spec.device or (f"cuda:{spec.index % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu")
    if device == "cuda":
        device = f"cuda:{spec.index % torch.cuda.device_count()}"
    if device == "cpu":
        torch.set_num_threads(spec.cpu_threads)
    store = Store(Path(spec.state_dir) / "queue.sqlite3")
    start = time.perf_counter()
    pipeline = instantiate(OmegaConf.create({**spec.model, "device": device}))
    for name in spec.preload:
        pipeline.dit(name)
    load_s = time.perf_counter() - start
    watch = StepWatch(pipeline)
    store.worker_ready(spec.index, os.getpid(), device, load_s)
    while os.getppid() == parent:  # bounded by the server's life
        request = store.claim(spec.index)
        if request is None:
            time.sleep(POLL_S)
            continue
        run(store, pipeline, watch, request, Path(spec.state_dir) / "files", f"worker {spec.index} ({device})", load_s)


def run(store: Store, pipeline, watch: StepWatch, request: Request, files: Path, worker: str, load_s: float) -> None:
    """Generate one claimed request and record its outcome (and webhook) in the store."""
    output_dir = files / request.file_token
    shutil.rmtree(output_dir, ignore_errors=True)  # what an attempt cut short by a crash left
    store.log(request.id, f"{worker} took the request (attempt {request.attempts}); the model is warm "
                          f"(loaded in {load_s:.1f} s when the worker started)")  # fmt: skip
    watch.on_step = Progress(store, request)
    start = time.perf_counter()
    outcome, result, error, error_type = OK, None, None, None
    try:
        result = hosted.generate(pipeline, request.payload, output_dir)
    except Cancelled:
        outcome, error, error_type = CANCELLED, "cancelled while running", "request_cancelled"
    except hosted.RequestError as why:  # checked at submit; only a changed rule gets here
        outcome, error, error_type = ERROR, str(why), "validation_error"
    except Exception as why:  # noqa: BLE001 -- a failed request must not take the worker down
        outcome, error, error_type = ERROR, f"{type(why).__name__}: {why}", "generation_error"
        store.log(request.id, traceback.format_exc(limit=8), level="ERROR")
    finally:
        watch.on_step = None
    seconds = time.perf_counter() - start
    if result is not None:
        name = result["video"]["file_name"]
        result["video"]["url"] = f"/files/{request.file_token}/{name}"  # made absolute per client by the app
        store.log(request.id, f"done in {seconds:.2f} s: {name} ({result['video']['file_size']} bytes)")
    else:
        store.log(request.id, f"{error_type}: {error}", level="ERROR" if outcome == ERROR else "WARN")
    store.complete(request, outcome, result, error, error_type, seconds, webhooks.body)


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when the server dies (even by kill -9), so no orphan keeps a
    model (and a GPU) busy; the claim loop also stops when the parent pid changes."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
