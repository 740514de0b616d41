"""A real S3 endpoint on localhost: moto's server mode in a thread, with a request counter.

Used by the S3 tests (fixture ``s3`` in conftest.py) and by ``benchmarks/bench_s3.py``.
"""

from __future__ import annotations

import collections
import socket
import threading


class RequestCounter:
    """WSGI middleware counting requests by (method, kind) while ``counting`` is set."""

    def __init__(self, app):
        self.app, self.lock = app, threading.Lock()
        self.counts: collections.Counter = collections.Counter()
        self.by_array: collections.Counter = collections.Counter()  # requests per top-level key of a store
        self.log: list | None = None  # set to a list to record every request

    def __call__(self, environ, start_response):
        query = environ.get("QUERY_STRING", "")
        kind = "list" if "list-type" in query or "prefix=" in query else "delete" if "delete" in query else "object"
        parts = environ.get("PATH_INFO", "").strip("/").split("/")
        where = parts[2] if len(parts) > 2 else "(root)" if kind == "object" else "(listing)"
        with self.lock:
            self.counts[(environ.get("REQUEST_METHOD", "?"), kind)] += 1
            self.by_array[where] += 1
            if self.log is not None:
                self.log.append(f"{environ.get('REQUEST_METHOD')} {environ.get('PATH_INFO')}?{query}")
        return self.app(environ, start_response)

    def reset(self) -> None:
        with self.lock:
            self.counts.clear()
            self.by_array.clear()

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """moto's S3 server on a free port; ``storage_options`` reach it through s3fs."""

    def __init__(self, bucket: str = "massmap-test"):
        from moto.server import ThreadedMotoServer

        self.port = free_port()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.bucket = bucket
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.storage_options = {"endpoint_url": self.endpoint, "key": "testing", "secret": "testing",
                                "client_kwargs": {"region_name": "us-east-1"}}
        self.counter: RequestCounter | None = None

    def start(self) -> S3Server:
        import logging

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.server.start()
        wsgi = self.server._server  # werkzeug's server: count what reaches it
        self.counter = RequestCounter(wsgi.app)
        wsgi.app = self.counter
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                     region_name="us-east-1").create_bucket(Bucket=self.bucket)
        return self

    def stop(self) -> None:
        self.server.stop()

    def url(self, name: str) -> str:
        return f"s3://{self.bucket}/{name}"
