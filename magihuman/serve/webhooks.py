"""Completion webhooks in fal's shape, delivered by the server process (never by a worker).

A request submitted with ``?fal_webhook=URL`` gets one POST when it completes::

    {"request_id": ..., "gateway_request_id": ..., "status": "OK", "payload": <the result>}
    {"request_id": ..., "gateway_request_id": ..., "status": "ERROR", "error": ..., "payload": {"detail": ...}}

The body is stored with the request's completion (one transaction), so a restart still
delivers it. A non-2xx answer or a network error is retried with exponential back-off up to
``webhook.max_attempts`` tries; each POST has its own timeout, and a slow receiver delays only
its own delivery.
"""

from __future__ import annotations

import asyncio
import json
import httpx

from . import hosted
from .config import WebhookConfig
from .store import OK, Store, Webhook

POLL_S = 0.2
MAX_IN_FLIGHT = 16


def body(request_id: str, outcome: str, result: dict | None, error: str | None, error_type: str | None) -> dict:
    """The webhook's JSON body (``video.url`` still relative: made absolute when sent)."""
    head = {"request_id": request_id, "gateway_request_id": request_id}
    if outcome == OK:
        return {**head, "status": "OK", "payload": result}
    return {**head, "status": "ERROR", "error": error, "payload": {"detail": error, "error_type": error_type}}


class WebhookSender:
    """Sends due webhooks from the store until ``stop`` is set."""

    def __init__(self, store: Store, config: WebhookConfig, base_url: str):
        self.store, self.config, self.base_url = store, config, base_url
        self.in_flight: set[str] = set()

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(timeout=self.config.timeout_s, follow_redirects=False) as client:
            tasks: set[asyncio.Task] = set()
            while not stop.is_set():
                due = await asyncio.to_thread(self.store.due_webhooks, MAX_IN_FLIGHT)
                for hook in due:
                    if hook.request_id not in self.in_flight and len(self.in_flight) < MAX_IN_FLIGHT:
                        self.in_flight.add(hook.request_id)
                        task = asyncio.create_task(self._send(client, hook))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                try:
                    await asyncio.wait_for(stop.wait(), POLL_S)
                except TimeoutError:
                    pass
            for task in tasks:
                task.cancel()

    async def _send(self, client: httpx.AsyncClient, hook: Webhook) -> None:
        try:
            payload = json.loads(hook.body)
            if payload["status"] == "OK":
                payload["payload"] = hosted.public_result(payload["payload"], self.base_url)
            error = None
            try:
                response = await client.post(hook.url, json=payload)
                if not response.is_success:
                    error = f"HTTP {response.status_code}"
            except httpx.HTTPError as why:
                error = f"{type(why).__name__}: {why}"
            attempt = hook.attempts + 1
            retry_in = None
            if error is not None and attempt < self.config.max_attempts:
                retry_in = min(self.config.backoff_s * 2 ** (attempt - 1), self.config.max_backoff_s)
            await asyncio.to_thread(self.store.webhook_attempted, hook.request_id, error is None, error, retry_in)
        finally:
            self.in_flight.discard(hook.request_id)

