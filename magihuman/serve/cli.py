"""``magihuman-serve``: the hosted API over HTTPS for the official fal client (Hydra app).

    magihuman-serve                                   # tiny model, self-signed TLS, a new key
    magihuman-serve model=full model.paths=/ckpt server.workers=8 server.port=443

Composes the same groups as ``magihuman-generate`` (``configs/serve.yaml``: ``generate`` plus a
``server`` block). Prints the environment a client needs, then serves until interrupted.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import socket
import sys
from pathlib import Path

import hydra
import uvicorn
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from magihuman.cli.errors import cli_errors

from .app import create_app
from .config import ServerConfig
from .keys import KeyRing, KeysFileError, create_keys_file
from .store import Store
from .tls import TLSFiles, self_signed
from .webhooks import WebhookSender, body
from .worker import WorkerSpec
from .worker import main as worker_main

CONFIG_PATH = "pkg://magihuman.configs"
SUPERVISE_S = 0.5


class Workers:
    """The worker processes: started, watched (a dead one's request is requeued and the worker
    restarted; one that dies before it is ready stops the server) and stopped."""

    def __init__(self, specs: list[WorkerSpec], store: Store, config: ServerConfig):
        self.specs, self.store, self.config = specs, store, config
        self.context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked server state
        self.processes: dict[int, multiprocessing.Process] = {}
        self.ready: set[int] = set()
        self.failed: str | None = None
        self.on_fatal = lambda: None  # set by the server: stop serving

    def start(self, index: int) -> None:
        process = self.context.Process(target=worker_main, args=(self.specs[index],), name=f"magihuman-worker-{index}",
                                       daemon=True)  # fmt: skip
        process.start()
        self.processes[index] = process

    async def supervise(self, stop: asyncio.Event) -> None:
        for index in range(len(self.specs)):
            self.start(index)
        while not stop.is_set():
            await asyncio.to_thread(self.check)
            if self.failed:
                self.on_fatal()
                return
            try:
                await asyncio.wait_for(stop.wait(), SUPERVISE_S)
            except TimeoutError:
                pass

    def check(self) -> None:
        pids = {index: process.pid for index, process in self.processes.items()}
        for index, load_s in self.store.ready_workers(pids).items():
            if index not in self.ready:
                self.ready.add(index)
                print(f"magihuman-serve: worker {index} ready (model loaded in {load_s:.1f} s)", flush=True)
        for index, process in self.processes.items():
            if process.is_alive():
                continue
            if index not in self.ready:
                self.failed = f"worker {index} exited with code {process.exitcode} before its model was loaded"
                return
            requeued = self.store.recover(self.config.max_attempts, body, worker=index)
            print(f"magihuman-serve: worker {index} exited (code {process.exitcode}); requeued {len(requeued)} "
                  "request(s); restarting it", file=sys.stderr, flush=True)  # fmt: skip
            self.ready.discard(index)
            self.start(index)

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            process.join(timeout=10)
            if process.is_alive():
                process.kill()


def worker_specs(cfg: DictConfig, config: ServerConfig) -> list[WorkerSpec]:
    model = OmegaConf.to_container(cfg.model, resolve=True)
    cpu_threads = max(1, (os.cpu_count() or 1) // config.workers)
    device = cfg.get("device")
    return [WorkerSpec(index=i, device=device, model=model, preload=tuple(config.preload),
                       state_dir=str(config.state_path), cpu_threads=cpu_threads)
            for i in range(config.workers)]  # fmt: skip


def api_keys(config: ServerConfig) -> tuple[KeyRing, str | None]:
    """The key ring, and the key to print when the server made the keys file itself."""
    if config.api_keys_file is not None:
        return KeyRing.load(config.api_keys_file), None
    path = config.state_path / "api_keys"
    if not path.exists():
        create_keys_file(path)
    first = next(line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#"))
    return KeyRing.load(path), first


def bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # rebind at once after a restart
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(cfg: DictConfig, config: ServerConfig) -> int:
    if cfg.parallel.get("cp_size", 1) > 1 or cfg.parallel.get("cfg_parallel") or cfg.parallel.get("fsdp"):
        raise ValueError("parallel: the server runs one pipeline per worker process; use parallel=none and "
                         "server.workers=N (one per GPU)")  # fmt: skip
    state = config.state_path
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    keys, new_key = api_keys(config)
    tls = self_signed(state / "tls") if config.tls.cert is None else TLSFiles(Path(config.tls.cert),
                                                                               Path(config.tls.key), None)
    store = Store(state / "queue.sqlite3")
    requeued = store.recover(config.max_attempts, body)
    queue_sock, run_sock = bind(config.host, config.port), bind(config.host, config.run_port)
    queue_port, run_port = queue_sock.getsockname()[1], run_sock.getsockname()[1]
    workers = Workers(worker_specs(cfg, config), store, config)
    sender = WebhookSender(store, config.webhook, f"https://{config.host}:{queue_port}")
    app = create_app(store, keys, config, queue_port, run_port, background=[workers.supervise, sender.run])
    host = f"[{config.host}]" if ":" in config.host else config.host
    print(f"magihuman-serve: state in {state}; {len(requeued)} request(s) requeued from the last run", flush=True)
    if new_key is not None:
        print(f"magihuman-serve: API key from {state / 'api_keys'} (0600; add lines '<id>:<secret>' for more keys)")
    print("# for fal-client (Python or JS):")
    if new_key is not None:
        print(f"export FAL_KEY={new_key}")
    print(f"export FAL_QUEUE_RUN_HOST={host}:{queue_port}")
    print(f"export FAL_RUN_HOST={host}:{run_port}")
    if tls.ca is not None:
        print(f"export SSL_CERT_FILE={tls.ca}")
    print(flush=True)
    server = uvicorn.Server(uvicorn.Config(app, ssl_certfile=str(tls.cert), ssl_keyfile=str(tls.key),
                                           log_level="warning", lifespan="on", timeout_graceful_shutdown=5))  # fmt: skip
    workers.on_fatal = lambda: setattr(server, "should_exit", True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # TERM stops as cleanly as Ctrl-C
    try:
        server.run(sockets=[queue_sock, run_sock])
    except KeyboardInterrupt:  # uvicorn re-raises the signal once it has shut down
        pass
    finally:
        workers.stop()
    if workers.failed:
        print(f"magihuman-serve: {workers.failed}", file=sys.stderr)
        return 1
    return 0


@cli_errors("magihuman-serve")
@hydra.main(config_path=CONFIG_PATH, config_name="serve", version_base="1.3")
@cli_errors("magihuman-serve")
def main(cfg: DictConfig) -> None:
    try:
        config: ServerConfig = instantiate(cfg.server)
        code = serve(cfg, config)
    except (ValueError, KeysFileError, OSError) as error:  # bad configuration: one line, exit 2
        print(f"magihuman-serve: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    raise SystemExit(code)


if __name__ == "__main__":
    main()
