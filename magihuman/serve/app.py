"""The ASGI app: fal's queue protocol for ``fal-ai/davinci-magihuman``, as ``fal-client`` speaks it.

One app listens on two ports, because fal tells the queue from the synchronous run by host:

=====  =============================================  ============================================
POST   ``/fal-ai/davinci-magihuman`` (queue port)     ``{request_id, response_url, status_url,
       ``?fal_webhook=URL``                            cancel_url, queue_position}``
POST   ``/fal-ai/davinci-magihuman`` (run port)       the result, once generated (``fal_client.run``)
GET    ``.../requests/{id}/status?logs=1``            ``IN_QUEUE`` + ``queue_position`` |
                                                      ``IN_PROGRESS`` + ``logs`` | ``COMPLETED`` +
                                                      ``logs``, ``metrics`` (and ``error``)
GET    ``.../requests/{id}``                          the result, or the request's error
PUT    ``.../requests/{id}/cancel``                   ``OK`` (was queued) | ``CANCELLATION_REQUESTED``
                                                      (running) | 400 ``ALREADY_COMPLETED``
GET    ``/files/{token}/{name}``                      the video (``video/mp4``)
=====  =============================================  ============================================

Every route needs ``Authorization: Key <id>:<secret>`` (401 otherwise) and a key sees only its
own requests and files (another key's id answers 404, like an unknown one). A body that fails
validation answers 422 naming each field before anything is queued; a full queue 429; a body
over the media cap 413.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import secrets
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from urllib.parse import urlparse

from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi import Request as HTTPRequest
from fastapi.responses import FileResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from . import hosted, webhooks
from .config import ServerConfig
from .keys import KeyRing
from .store import CANCELLED, COMPLETED, OK, QUEUED, QueueFull, Request, Store

APP_ID = "fal-ai/davinci-magihuman"
RUN_POLL_S = 0.1


class _BodyTooLarge(Exception):
    pass


def api_key(http: HTTPRequest, authorization: Annotated[str | None, Header()] = None) -> str:
    """The key id of the request's ``Authorization: Key <id>:<secret>``; 401 for any other."""
    key_id = http.app.state.keys.authenticate(authorization)
    if key_id is None:
        raise HTTPException(401, "invalid or missing API key: send 'Authorization: Key <id>:<secret>'",
                            headers={"WWW-Authenticate": "Key"})  # fmt: skip
    return key_id


Key = Annotated[str, Depends(api_key)]


def create_app(store: Store, keys: KeyRing, config: ServerConfig, queue_port: int, run_port: int,
               background: list[Callable[[asyncio.Event], Awaitable[None]]] = ()) -> FastAPI:  # fmt: skip
    """The app; ``background`` coroutines (e.g. the webhook sender) run for its lifetime."""
    media = hosted.media_policy(tuple(config.media_roots), config.max_media_bytes)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        stop = asyncio.Event()
        tasks = [asyncio.create_task(job(stop)) for job in background]
        yield
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)

    app = FastAPI(title="magihuman-serve", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)

    app.state.keys = keys

    def queue_urls(http: HTTPRequest, request_id: str) -> dict[str, str]:
        base = f"https://{http.url.hostname}:{queue_port}/{APP_ID}/requests/{request_id}"
        return {"response_url": base, "status_url": base + "/status", "cancel_url": base + "/cancel"}

    def base_url(http: HTTPRequest) -> str:
        return str(http.base_url).rstrip("/")

    def not_found() -> JSONResponse:
        return JSONResponse({"detail": "request not found", "status": "NOT_FOUND"}, status_code=404)

    @app.post(f"/{APP_ID}")
    async def submit(http: HTTPRequest, key_id: Key, fal_webhook: str | None = None):
        try:
            raw = await _read_body(http, config.max_body_bytes)
        except _BodyTooLarge:
            return JSONResponse({"detail": f"request body over {config.max_body_bytes} bytes (media inputs are "
                                           f"capped at {config.max_media_bytes} bytes each)"}, status_code=413)  # fmt: skip
        problems = []
        try:
            payload = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as why:
            return _invalid([(["body"], f"is not JSON: {why}")])
        if fal_webhook is not None and not _is_http_url(fal_webhook):
            problems.append((["query", "fal_webhook"], f"must be an http(s) URL, got {fal_webhook!r}"))
        try:
            durable = await run_in_threadpool(hosted.validate, payload, media)
        except hosted.RequestError as why:
            problems += [(["body"] if field == "request" else ["body", field], msg)
                         for field, msg in why.problems.items()]  # fmt: skip
        if problems:
            return _invalid(problems)
        request_id = str(uuid.uuid4())
        try:
            position = await run_in_threadpool(store.submit, request_id, key_id, durable, secrets.token_urlsafe(24),
                                               fal_webhook, config.max_queue)  # fmt: skip
        except QueueFull as why:
            return JSONResponse({"detail": str(why)}, status_code=429, headers={"Retry-After": "5"})
        if http.scope["server"][1] == run_port:
            return await wait_for_result(http, request_id, key_id)
        return {"request_id": request_id, **queue_urls(http, request_id), "queue_position": position}

    async def wait_for_result(http: HTTPRequest, request_id: str, key_id: str):
        """The synchronous run: wait for the queued request (bounded), cancel it if the client leaves."""
        deadline = asyncio.get_running_loop().time() + config.run_timeout_s
        while True:
            request = await run_in_threadpool(store.get, request_id)
            if request.status == COMPLETED:
                return result_response(http, request)
            if await http.is_disconnected() or asyncio.get_running_loop().time() > deadline:
                await run_in_threadpool(store.cancel, request_id, key_id, webhooks.body)
                return JSONResponse({"detail": f"no result within server.run_timeout_s={config.run_timeout_s:g} s; "
                                     "the request was cancelled"}, status_code=504)  # fmt: skip
            await asyncio.sleep(RUN_POLL_S)

    def result_response(http: HTTPRequest, request: Request) -> JSONResponse:
        headers = {"x-fal-request-id": request.id}
        if request.outcome == OK:
            return JSONResponse(hosted.public_result(request.result, base_url(http)), headers=headers)
        code = 400 if request.outcome == CANCELLED else 500
        return JSONResponse({"detail": request.error, "error_type": request.error_type}, status_code=code,
                            headers=headers)  # fmt: skip

    @app.get(f"/{APP_ID}/requests/{{request_id}}/status")
    def status(http: HTTPRequest, request_id: str, key_id: Key, logs: str | None = None):
        request = store.get(request_id, key_id)
        if request is None:
            return not_found()
        body: dict[str, Any] = {"status": request.status, "request_id": request.id, **queue_urls(http, request.id)}
        body["logs"] = [_log_entry(entry) for entry in store.logs(request.id)] if _truthy(logs) else None
        if request.status == QUEUED:
            body["queue_position"] = store.queue_position(request)
        if request.status == COMPLETED:
            body["metrics"] = {} if request.inference_time is None else {"inference_time": request.inference_time}
            if request.outcome != OK:
                body.update(error=request.error, error_type=request.error_type)
        return JSONResponse(body, status_code=200 if request.status == COMPLETED else 202)

    @app.get(f"/{APP_ID}/requests/{{request_id}}")
    def result(http: HTTPRequest, request_id: str, key_id: Key):
        request = store.get(request_id, key_id)
        if request is None:
            return not_found()
        if request.status != COMPLETED:
            return JSONResponse({"detail": f"request is {request.status}; poll its status_url"}, status_code=400)
        return result_response(http, request)

    @app.put(f"/{APP_ID}/requests/{{request_id}}/cancel")
    def cancel(request_id: str, key_id: Key):
        outcome = store.cancel(request_id, key_id, webhooks.body)
        if outcome is None:
            return not_found()
        if outcome == "ALREADY_COMPLETED":
            return JSONResponse({"status": outcome, "detail": "the request has already completed"}, status_code=400)
        if outcome == "CANCELLED":
            return JSONResponse({"status": "OK"})
        return JSONResponse({"status": outcome}, status_code=202)

    @app.get("/files/{token}/{name}")
    def file(token: str, name: str, key_id: Key):
        request = store.by_file_token(token, key_id)
        if request is None or request.outcome != OK or request.result["video"]["file_name"] != name:
            return JSONResponse({"detail": "file not found"}, status_code=404)
        path = config.state_path / "files" / token / name
        return FileResponse(path, media_type=request.result["video"]["content_type"], filename=name)

    return app


async def _read_body(http: HTTPRequest, limit: int) -> bytes:
    """The body, refused (before reading it all) once it is over ``limit`` bytes."""
    declared = http.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _BodyTooLarge
    chunks, size = [], 0
    async for chunk in http.stream():
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _invalid(problems: list[tuple[list[str], str]]) -> JSONResponse:
    """422 in FastAPI's shape: one ``{loc, msg, type}`` per bad field."""
    detail = [{"loc": loc, "msg": msg, "type": "value_error"} for loc, msg in problems]
    return JSONResponse({"detail": detail}, status_code=422)


def _is_http_url(url: str) -> bool:
    parsed = urlparse(url)
    return parsed.scheme in ("http", "https") and bool(parsed.hostname)


def _truthy(flag: str | None) -> bool:
    return flag is not None and flag.lower() in ("1", "true", "yes")


def _log_entry(entry: dict[str, Any]) -> dict[str, Any]:
    stamp = dt.datetime.fromtimestamp(entry["at"], dt.timezone.utc).isoformat()
    return {"message": entry["message"], "level": entry["level"], "source": "worker", "timestamp": stamp}
