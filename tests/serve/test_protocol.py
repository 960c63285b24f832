"""The fal queue protocol as the official Python client speaks it, against one server per module."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av
import httpx
import pytest

from .conftest import ALICE, APP, BOB, arguments, face_uri, start_server, use_server

MAX_MEDIA = 256 * 1024
JS_CLIENT_VERSION = "1.10.1"  # a small media cap, so that a 413 costs little


@pytest.fixture(scope="module")
def server(tmp_path_factory, restore_client_env):
    process = start_server(tmp_path_factory.mktemp("serve"), f"server.max_media_bytes={MAX_MEDIA}")
    yield process
    assert process.stop() == 0, "".join(process.output)


@pytest.fixture(scope="module")
def fal(server):
    return use_server(server)


def wait_until(check, timeout: float = 120.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (value := check()) is not None:
            return value
        time.sleep(interval)
    raise TimeoutError(f"not done within {timeout} s")


class Listener(BaseHTTPRequestHandler):
    """A webhook receiver whose first delivery fails (503), so the server has to retry."""

    calls = 0
    received: list[dict] = []

    def do_POST(self):  # noqa: N802
        Listener.calls += 1
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if Listener.calls > 1:
            Listener.received.append(body)
        self.send_response(200 if Listener.calls > 1 else 503)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def three_clients(fal):
    """Three clients at once, each its own way: subscribe with logs, run, submit + poll + webhook."""
    listener = ThreadingHTTPServer(("127.0.0.1", 0), Listener)
    threading.Thread(target=listener.serve_forever, daemon=True).start()
    hook_url = f"http://127.0.0.1:{listener.server_address[1]}/hook"

    def subscribe():
        updates = []
        result = fal.SyncClient(key=ALICE).subscribe(APP, arguments=arguments(seed=11), with_logs=True,
                                                     on_queue_update=updates.append, client_timeout=300)  # fmt: skip
        return result, updates

    def run():
        return fal.SyncClient(key=BOB).run(APP, arguments=arguments(seed=9))

    def submit():
        client = fal.SyncClient(key=ALICE)
        handle = client.submit(APP, arguments(seed=5), webhook_url=hook_url)
        status = wait_until(lambda: s if isinstance(s := handle.status(with_logs=True), fal.Completed) else None, 300)
        return handle, status, client.result(APP, handle.request_id)

    try:
        with ThreadPoolExecutor(3) as pool:
            jobs = {name: pool.submit(job) for name, job in (("subscribe", subscribe), ("run", run), ("submit", submit))}
            results = {name: job.result(timeout=400) for name, job in jobs.items()}
        wait_until(lambda: Listener.received or None, timeout=30)
    finally:
        listener.shutdown()
    return results


def test_subscribe_streams_logs_and_returns_a_video_that_downloads(fal, three_clients):
    result, updates = three_clients["subscribe"]
    assert result["seed"] == 11 and result["duration"] == 1.0
    completed = updates[-1]
    assert isinstance(completed, fal.Completed) and completed.error is None
    assert completed.metrics["inference_time"] > 0
    messages = [log["message"] for log in completed.logs]
    assert any("model is warm" in m for m in messages)
    assert "base_denoise: step 1/1" in messages
    assert any(m.startswith("image_encode done") for m in messages)
    assert all(isinstance(u, (fal.Queued, fal.InProgress, fal.Completed)) for u in updates)

    video = result["video"]
    assert video["content_type"] == "video/mp4" and video["url"].startswith("https://127.0.0.1:")
    # The client's own transport (httpx, trusting SSL_CERT_FILE) fetches the file with the key.
    response = httpx.get(video["url"], headers={"Authorization": f"Key {ALICE}"})
    assert response.status_code == 200 and response.headers["content-type"] == "video/mp4"
    assert len(response.content) == video["file_size"]
    with av.open(io.BytesIO(response.content)) as container:
        streams = {s.type: s for s in container.streams}
        assert streams["video"].codec_context.name == "h264" and streams["audio"].codec_context.name == "aac"
        assert streams["video"].frames == 25  # 1 s at 25 fps
        assert container.duration / 1e6 == pytest.approx(1.0, abs=0.1)
    # Another key cannot fetch it, and the directory is not listed.
    assert httpx.get(video["url"], headers={"Authorization": f"Key {BOB}"}).status_code == 404
    assert httpx.get(video["url"].rsplit("/", 1)[0] + "/", headers={"Authorization": f"Key {ALICE}"}).status_code == 404


def test_run_answers_on_the_run_host(three_clients):
    result = three_clients["run"]
    assert result["seed"] == 9 and result["video"]["file_size"] > 0


def test_submit_status_result_and_a_retried_webhook(three_clients):
    handle, status, result = three_clients["submit"]
    assert handle.status_url.endswith(f"/requests/{handle.request_id}/status")
    assert status.error is None and status.logs and result["seed"] == 5
    assert Listener.calls == 2  # the first delivery got a 503 and was retried
    hook = Listener.received[0]
    assert hook["request_id"] == handle.request_id and hook["status"] == "OK" and hook["payload"] == result


def test_three_concurrent_clients_got_three_videos(three_clients):
    urls = {three_clients["subscribe"][0]["video"]["url"], three_clients["run"]["video"]["url"],
            three_clients["submit"][2]["video"]["url"]}  # fmt: skip
    assert len(urls) == 3


def test_cancel_a_queued_and_a_running_request(fal):
    client = fal.SyncClient(key=ALICE)
    running = client.submit(APP, arguments(num_inference_steps=100))
    queued = client.submit(APP, arguments())
    assert isinstance(queued.status(), fal.Queued)
    queued.cancel()
    status = queued.status()
    assert isinstance(status, fal.Completed) and status.error_type == "request_cancelled"
    with pytest.raises(fal.client.FalClientHTTPError) as error:
        queued.get()
    assert error.value.status_code == 400

    def stepping():
        status = running.status(with_logs=True)
        steps = [log for log in (status.logs or []) if "base_denoise: step" in log["message"]]
        return status if steps else None

    wait_until(stepping)
    running.cancel()  # stops before the next sampler step
    done = wait_until(lambda: s if isinstance(s := running.status(with_logs=True), fal.Completed) else None, 60)
    assert done.error_type == "request_cancelled"
    assert sum("base_denoise: step" in log["message"] for log in done.logs) < 100
    with pytest.raises(fal.client.FalClientHTTPError) as error:
        running.cancel()
    assert error.value.status_code == 400 and "already completed" in str(error.value)


def test_keys_and_isolation(fal):
    with pytest.raises(fal.client.FalClientHTTPError) as error:
        fal.SyncClient(key="alice:" + "x" * 32).submit(APP, arguments())
    assert error.value.status_code == 401
    handle = fal.SyncClient(key=ALICE).submit(APP, arguments(num_inference_steps=1))
    for call in (lambda: fal.SyncClient(key=BOB).status(APP, handle.request_id),
                 lambda: fal.SyncClient(key=BOB).cancel(APP, handle.request_id)):  # fmt: skip
        with pytest.raises(fal.client.FalClientHTTPError) as error:
            call()
        assert error.value.status_code == 404
    with pytest.raises(fal.client.FalClientHTTPError) as error:
        fal.SyncClient(key=ALICE).status(APP, "00000000-0000-4000-8000-000000000000")
    assert error.value.status_code == 404
    fal.SyncClient(key=ALICE).cancel(APP, handle.request_id)


def test_invalid_requests_are_refused_before_queueing(fal):
    client = fal.SyncClient(key=ALICE)
    with pytest.raises(fal.client.FalClientHTTPError) as error:
        client.submit(APP, {"image_url": face_uri(), "resolution": "4k", "seed": -1, "colour": 1})
    assert error.value.status_code == 422
    named = {tuple(item["loc"]) for item in error.value.message}
    assert named == {("body", "prompt"), ("body", "resolution"), ("body", "seed"), ("body",)}
    with pytest.raises(fal.client.FalClientHTTPError) as error:
        client.submit(APP, arguments(), webhook_url="ftp://example/hook")
    assert error.value.status_code == 422 and error.value.message[0]["loc"] == ["query", "fal_webhook"]
    big = "data:image/png;base64," + "A" * (3 * MAX_MEDIA)  # two such would fit the cap; one this size does not
    with pytest.raises(fal.client.FalClientHTTPError) as error:
        client.submit(APP, arguments(image_url=big, audio_url=big))
    assert error.value.status_code == 413
    with pytest.raises(fal.client.FalClientHTTPError) as error:
        client.submit(APP, arguments(image_url="/etc/passwd"))
    assert error.value.status_code == 422 and "image_url" in str(error.value.message)


def js_client_dir() -> Path | None:
    """``@fal-ai/client`` installed once from the npm registry into the cache; None without node/npm."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return None
    directory = Path.home() / ".cache" / "magihuman" / "npm"
    if not (directory / "node_modules" / "@fal-ai" / "client").is_dir():
        directory.mkdir(parents=True, exist_ok=True)
        try:
            subprocess.run(["npm", "install", "--prefix", str(directory), "--no-audit", "--no-fund",
                            f"@fal-ai/client@{JS_CLIENT_VERSION}"], check=True, capture_output=True, timeout=180)  # fmt: skip
        except (subprocess.SubprocessError, OSError):
            return None
    return directory / "node_modules"


def test_the_javascript_client_subscribes(server):
    modules = js_client_dir()
    if modules is None:
        pytest.skip("node, npm or the @fal-ai/client package (npm registry) is not available")
    env = {**os.environ, "FAL_KEY": ALICE, "FAL_QUEUE_RUN_HOST": server.env["FAL_QUEUE_RUN_HOST"],
           "NODE_EXTRA_CA_CERTS": server.env["SSL_CERT_FILE"], "FAL_JS_CLIENT_DIR": str(modules),
           "FAL_INPUT": json.dumps(arguments(seed=13))}  # fmt: skip
    done = subprocess.run(["node", str(Path(__file__).with_name("subscribe.mjs"))], env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    output = json.loads(done.stdout.strip().splitlines()[-1])
    assert output["data"]["seed"] == 13 and output["data"]["video"]["content_type"] == "video/mp4"
    assert output["statuses"][-1] == "COMPLETED" and output["requestId"]
