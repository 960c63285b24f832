"""The ``server`` block of ``configs/serve.yaml`` as typed objects (built by Hydra's ``instantiate``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from magihuman.api import MAX_MEDIA_BYTES


@dataclass(frozen=True)
class TLSConfig:
    """Certificate and key (PEM). Both null: a self-signed CA and a localhost certificate are
    made once in ``<state_dir>/tls`` and the CA is what clients trust (``SSL_CERT_FILE``)."""

    cert: str | None = None
    key: str | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ValueError("server.tls.cert and server.tls.key go together: give both, or neither for a "
                             "self-signed localhost certificate")  # fmt: skip


@dataclass(frozen=True)
class WebhookConfig:
    """Delivery of ``?fal_webhook=`` POSTs: ``max_attempts`` tries, the n-th retry after
    ``min(backoff_s * 2**(n-1), max_backoff_s)``; each POST times out after ``timeout_s``."""

    max_attempts: int = 8
    backoff_s: float = 1.0
    max_backoff_s: float = 300.0
    timeout_s: float = 15.0


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8443  # the queue host (FAL_QUEUE_RUN_HOST); 0: any free port
    run_port: int = 8444  # the synchronous host (FAL_RUN_HOST) for fal_client.run; 0: any free port
    tls: TLSConfig = field(default_factory=TLSConfig)
    api_keys_file: str | None = None  # null: <state_dir>/api_keys, made with one key on first start
    state_dir: str = "~/.cache/magihuman/serve"
    workers: int = 1  # one warm pipeline each: one per GPU, or CPU processes
    max_queue: int = 64  # queued (not yet running) requests; one more answers 429
    max_media_bytes: int = MAX_MEDIA_BYTES  # one decoded image / audio input
    media_roots: tuple[str, ...] = ()  # local paths readable by requests; () : data: URIs only
    run_timeout_s: float = 3600.0  # the run port waits at most this long for a result (then 504)
    max_attempts: int = 3  # a request whose worker dies this often fails instead of being retried
    preload: tuple[str, ...] = ("distill",)  # DiTs each worker loads at start (256p runs the distilled one)
    webhook: WebhookConfig = field(default_factory=WebhookConfig)

    def __post_init__(self) -> None:
        problems = []
        if self.workers < 1:
            problems.append(f"server.workers must be >= 1, got {self.workers}")
        if self.max_queue < 1:
            problems.append(f"server.max_queue must be >= 1, got {self.max_queue}")
        if self.max_media_bytes < 1:
            problems.append(f"server.max_media_bytes must be >= 1, got {self.max_media_bytes}")
        if self.port != 0 and self.port == self.run_port:
            problems.append(f"server.port and server.run_port must differ (fal tells queue from run by host), "
                            f"both are {self.port}")  # fmt: skip
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir).expanduser()

    @property
    def max_body_bytes(self) -> int:
        """A request body: two media inputs as base64 data: URIs (4 characters per 3 bytes) plus the
        JSON around them and a prompt (at most 10,000 characters, 4 bytes each as UTF-8)."""
        return 2 * (4 * self.max_media_bytes // 3 + 4) + 64 * 1024
