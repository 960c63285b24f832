"""The hosted API (``fal-ai/davinci-magihuman``) served over HTTPS with fal's queue protocol.

The official ``fal-client`` talks to it unchanged (``FAL_QUEUE_RUN_HOST``, ``FAL_RUN_HOST``,
``FAL_KEY``, ``SSL_CERT_FILE``). Pieces, each a room of its own:

- :mod:`.config`   the typed ``server`` block of ``configs/serve.yaml``
- :mod:`.keys`     the API keys file (``<id>:<secret>`` per line, 0600) and header checks
- :mod:`.tls`      a self-signed CA + localhost certificate when none is configured
- :mod:`.store`    the durable queue: every request's state, logs and webhooks in SQLite (WAL)
- :mod:`.hosted`   the one coupling to :mod:`magihuman.api` (validate a body, run it)
- :mod:`.worker`   a process holding one warm pipeline, pulling requests from the store
- :mod:`.webhooks` fal-shaped completion POSTs, retried with back-off off the workers' path
- :mod:`.app`      the ASGI app (FastAPI): queue routes, the synchronous run port, output files
- :mod:`.cli`      ``magihuman-serve`` (Hydra): keys, certificate, workers, uvicorn
- :mod:`.process`  run the server as a child and point ``fal_client`` at it (tests, benchmark)
- :mod:`.load`     served throughput vs one ``magihuman-generate`` process per request
"""
