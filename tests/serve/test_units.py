"""The server's pieces without a server: keys file, certificate, durable queue."""

from __future__ import annotations

import ssl

import pytest

from magihuman.serve.keys import KeyRing, KeysFileError, create_keys_file
from magihuman.serve.store import CANCELLED, COMPLETED, ERROR, QUEUED, QueueFull, Store
from magihuman.serve.tls import self_signed
from magihuman.serve.webhooks import body


@pytest.mark.parametrize(("content", "mode", "says"), [
    (None, 0o600, "does not exist"), ("", 0o600, "holds no key"), ("# only a comment\n", 0o600, "holds no key"),
    ("alice:" + "a" * 32, 0o644, "chmod 600"), ("alice:" + "a" * 32, 0o660, "chmod 600"),
    ("alice:short", 0o600, "expected '<id>:<secret>'"), ("a:" + "a" * 16 + "\na:" + "b" * 16, 0o600, "appears twice"),
])  # fmt: skip
def test_bad_keys_files_are_refused_saying_why(tmp_path, content, mode, says):
    path = tmp_path / "keys"
    if content is not None:
        path.write_text(content)
        path.chmod(mode)
    with pytest.raises(KeysFileError, match=says):
        KeyRing.load(path)


def test_keys_authenticate_only_the_exact_header(tmp_path):
    path = tmp_path / "keys"
    key = create_keys_file(path)
    assert path.stat().st_mode & 0o777 == 0o600
    ring = KeyRing.load(path)
    key_id, secret = key.split(":")
    assert ring.authenticate(f"Key {key}") == key_id
    for header in (None, "", key, f"Bearer {key}", f"Key {key_id}:{secret}x", f"Key {key_id}", f"Key other:{secret}"):
        assert ring.authenticate(header) is None
    with pytest.raises(FileExistsError):
        create_keys_file(path)  # never over an existing keys file


def test_self_signed_certificate_verifies_for_localhost(tmp_path):
    files = self_signed(tmp_path)
    assert files.key.stat().st_mode & 0o777 == 0o600
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(files.cert, files.key)
    client = ssl.create_default_context(cafile=files.ca)
    client.verify_flags |= ssl.VERIFY_X509_STRICT
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def accept():
        conn, _ = listener.accept()
        with server.wrap_socket(conn, server_side=True) as tls:
            tls.recv(1)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with client.wrap_socket(raw, server_hostname="127.0.0.1") as tls:  # the IP SAN is checked
            tls.sendall(b"x")
    thread.join(10)
    listener.close()
    assert self_signed(tmp_path).cert.read_bytes() == files.cert.read_bytes()  # reused, not remade


def test_queue_order_bound_cancel_and_recovery(tmp_path):
    store = Store(tmp_path / "q.sqlite3")
    for i in range(3):
        assert store.submit(f"r{i}", "alice", {"seed": i}, f"t{i}", "http://127.0.0.1:9/hook" if i == 1 else None,
                            max_queue=3) == i  # fmt: skip
    with pytest.raises(QueueFull):
        store.submit("r3", "alice", {}, "t3", None, max_queue=3)
    assert store.get("r0", "bob") is None and store.cancel("r0", "bob", body) is None  # other keys see nothing
    first = store.claim(worker=0)
    assert first.id == "r0" and first.attempts == 1
    assert store.queue_position(store.get("r2")) == 1
    assert store.cancel("r1", "alice", body) == "CANCELLED"  # queued: done at once, webhook queued
    assert store.get("r1").outcome == CANCELLED and store.due_webhooks(10)[0].request_id == "r1"
    assert store.cancel("r0", "alice", body) == "CANCELLATION_REQUESTED" and store.cancel_requested("r0")
    second = store.claim(worker=1)
    assert second.id == "r2"
    # Both workers die: the cancelled one is cancelled, the other goes back to the queue at its place.
    assert store.recover(max_attempts=2, webhook_body=body) == ["r2"]
    assert store.get("r0").outcome == CANCELLED and store.get("r2").status == QUEUED
    again = store.claim(worker=0)
    assert again.id == "r2" and again.attempts == 2 and again.payload == {"seed": 2}
    assert store.recover(max_attempts=2, webhook_body=body) == []  # its second loss: it fails
    failed = store.get("r2")
    assert failed.status == COMPLETED and failed.outcome == ERROR and failed.error_type == "worker_lost"
    assert store.cancel("r2", "alice", body) == "ALREADY_COMPLETED"
