"""Served throughput: K clients send M requests through ``fal-client`` to a warm server, and the
same M requests run as M separate ``magihuman-generate`` processes, side by side in one run.

    python -m magihuman.serve.load --clients 3 --requests 6 [--workers 1] [hydra overrides...]

Reports requests per minute, p50/p95 queue wait (submit -> first IN_PROGRESS seen by the client,
polled every 0.1 s) and end-to-end latency for the server; wall time per request for the
one-process-per-request baseline (each pays interpreter start, model load and the clip).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from .process import ServerProcess, fal_client_for

APP = "fal-ai/davinci-magihuman"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _face_uri() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (96, 96), (200, 120, 80)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def served(clients: int, requests: int, workers: int, steps: int, duration: float, overrides: list[str],
           directory: Path) -> dict:  # fmt: skip
    """K client threads share M requests against one warm server (started, and its load timed, first)."""
    start = time.perf_counter()
    server = ServerProcess([f"server.state_dir={directory / 'state'}", "server.port=0", "server.run_port=0",
                            f"server.workers={workers}", *overrides], cwd=directory, workers=workers).start()  # fmt: skip
    startup_s = time.perf_counter() - start
    try:
        fal = fal_client_for(server.env)
        client = fal.SyncClient(key=server.env["FAL_KEY"])
        body = {"prompt": "A woman says hello.", "image_url": _face_uri(), "duration": duration,
                "num_inference_steps": steps}  # fmt: skip
        waits, latencies, lock = [], [], threading.Lock()
        todo = iter(range(requests))

        def client_loop():
            for seed in iter(lambda: next(todo, None), None):  # bounded: M requests in all
                submitted, started = time.perf_counter(), None

                def seen(status):
                    nonlocal started
                    if started is None and not isinstance(status, fal.Queued):
                        started = time.perf_counter()

                client.subscribe(APP, arguments={**body, "seed": seed}, on_queue_update=seen, client_timeout=3600)
                done = time.perf_counter()
                with lock:
                    waits.append((started or done) - submitted)
                    latencies.append(done - submitted)

        begin = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            for job in [pool.submit(client_loop) for _ in range(clients)]:
                job.result()
        wall = time.perf_counter() - begin
    finally:
        server.stop()
    return {"startup_s": startup_s, "wall_s": wall, "requests_per_min": 60 * requests / wall,
            "queue_wait_p50_s": statistics.median(waits), "queue_wait_p95_s": percentile(waits, 95),
            "latency_p50_s": statistics.median(latencies), "latency_p95_s": percentile(latencies, 95)}  # fmt: skip


def one_process_each(requests: int, steps: int, duration: float, overrides: list[str], directory: Path) -> dict:
    """The same requests as separate ``magihuman-generate`` runs, one after another."""
    latencies = []
    begin = time.perf_counter()
    for seed in range(requests):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "magihuman.cli.generate", "mode=ti2v", f"sampler.num_steps={steps}",
                        f"duration={duration}", f"seed={seed}", f"output={directory / f'clip{seed}.mp4'}",
                        *overrides], cwd=directory, check=True, capture_output=True, timeout=3600)  # fmt: skip
        latencies.append(time.perf_counter() - start)
    wall = time.perf_counter() - begin
    return {"wall_s": wall, "requests_per_min": 60 * requests / wall, "latency_p50_s": statistics.median(latencies),
            "latency_p95_s": percentile(latencies, 95)}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--requests", type=int, default=6)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--steps", type=int, default=1, help="num_inference_steps of every request")
    parser.add_argument("--duration", type=float, default=1.0)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for both (e.g. model=full model.paths=...)")
    args = parser.parse_args(argv)
    if min(args.clients, args.requests, args.workers, args.steps) < 1:
        parser.error("--clients, --requests, --workers and --steps must be >= 1")
    with tempfile.TemporaryDirectory(prefix="magihuman-load-") as tmp:
        directory = Path(tmp)
        server = served(args.clients, args.requests, args.workers, args.steps, args.duration, args.overrides,
                        directory)  # fmt: skip
        baseline = one_process_each(args.requests, args.steps, args.duration, args.overrides, directory)
    report = {"clients": args.clients, "requests": args.requests, "workers": args.workers, "served": server,
              "one_process_per_request": baseline,
              "throughput_ratio": server["requests_per_min"] / baseline["requests_per_min"]}  # fmt: skip
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
