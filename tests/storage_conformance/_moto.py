"""
An S3 service for the tests: moto's server, run as a subprocess on a free
port of 127.0.0.1.

It is started once per test process, by the first test that asks for it
(L{moto_server}), and stopped when the process ends; each test makes a
bucket of its own (L{new_bucket}) so that tests do not see each other's
files, and removes it when done (L{remove_bucket}) so that the server's
memory does not grow with the suite.  Without boto3 or moto, the tests that
need them are skipped.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from typing import IO, Any, NoReturn

from twisted.trial.unittest import SkipTest

__all__ = [
    "ACCESS_KEY",
    "SECRET_KEY",
    "missing",
    "moto_server",
    "new_bucket",
    "remove_bucket",
    "s3_client",
    "s3_arguments",
    "s3_options",
]

ACCESS_KEY = "testing"
SECRET_KEY = "testing"

STARTUP_TIMEOUT = 30.0
"""
Seconds a starting server has to answer.
"""

_ATTEMPTS = 5

_lock = threading.Lock()
_server: subprocess.Popen[bytes] | None = None
_endpoint: str | None = None
_clients: dict[str, Any] = {}


def _free_port() -> int:
    """
    A port of 127.0.0.1 that nothing listens on now (another process may
    take it before the server does: the caller tries again if so).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _answers(endpoint: str) -> bool:
    """
    Whether an HTTP server answers at C{endpoint} (with any status).
    """
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{endpoint}/moto-api/", timeout=1):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _start() -> tuple[subprocess.Popen[bytes], str]:
    """
    Start a server, on another port if one is taken before it listens.
    """
    errors: list[str] = []
    for _ in range(_ATTEMPTS):
        port = _free_port()
        endpoint = f"http://127.0.0.1:{port}"
        log: IO[bytes] = tempfile.TemporaryFile()
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while process.poll() is None and time.monotonic() < deadline:
            if _answers(endpoint):
                log.close()
                return process, endpoint
            time.sleep(0.05)
        _stop(process)
        log.seek(0)
        errors.append(log.read().decode("utf-8", "replace")[-2000:])
        log.close()
    raise RuntimeError(f"moto's S3 server did not start: {errors[-1]}")


def _shutdown() -> None:
    global _server, _endpoint
    with _lock:
        if _server is not None:
            _stop(_server)
        _server = None
        _endpoint = None
        _clients.clear()


def moto_server() -> str:
    """
    The URL of this process's moto S3 server, started if need be.

    @raise SkipTest: boto3 or moto is not installed (unless
        C{P2PBLOB_REQUIRE_S3} is set, as C{.ci/run} sets it: then the test
        fails, so that CI cannot pass without the S3 tests).
    """
    global _server, _endpoint
    for module in ("boto3", "moto"):
        if importlib.util.find_spec(module) is None:
            missing(module)
    with _lock:
        if _server is not None and _server.poll() is None and _endpoint is not None:
            return _endpoint
        if _server is None:
            atexit.register(_shutdown)
        _server, _endpoint = _start()
        return _endpoint


def s3_client(endpoint: str) -> Any:
    """
    A boto3 client of the server at C{endpoint}, for tests to look at what
    it holds.
    """
    with _lock:
        client = _clients.get(endpoint)
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.session.Session().client(
                "s3",
                endpoint_url=endpoint,
                region_name="us-east-1",
                aws_access_key_id=ACCESS_KEY,
                aws_secret_access_key=SECRET_KEY,
                config=Config(s3={"addressing_style": "path"}),
            )
            _clients[endpoint] = client
        return client


def s3_options(endpoint: str, bucket: str, **more: object) -> dict[str, object]:
    """
    The options of an C{s3} storage plugin that uses a bucket of the server
    at C{endpoint}.
    """
    return {
        "bucket": bucket,
        "endpoint_url": endpoint,
        "access_key": ACCESS_KEY,
        "secret_key": SECRET_KEY,
        "addressing_style": "path",
        **more,
    }


def new_bucket(endpoint: str, create: bool = True) -> str:
    """
    Make a bucket with a name no other test uses.

    @param create: if C{False}, only choose the name.

    @return: its name.
    """
    name = f"p2pblob-test-{uuid.uuid4().hex[:20]}"
    if create:
        s3_client(endpoint).create_bucket(Bucket=name)
    return name


def remove_bucket(endpoint: str, bucket: str) -> None:
    """
    Remove a bucket, whatever it holds (objects, unfinished uploads); a
    bucket that is not there is left alone.
    """
    client = s3_client(endpoint)
    if not any(b["Name"] == bucket for b in client.list_buckets().get("Buckets", [])):
        return
    for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
        for upload in page.get("Uploads", []):
            client.abort_multipart_upload(
                Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
    client.delete_bucket(Bucket=bucket)


def s3_arguments(endpoint: str, bucket: str, option: str, **more: str) -> list[str]:
    """
    The command-line arguments of C{twistd p2pblob} that give an C{s3}
    plugin a bucket of the server at C{endpoint}.

    @param option: how each is given: C{"--blob-storage-option"} for the
        blob store, or C{"--mirror-option NAME:"} for a mirror (the part
        after the space prefixes each C{NAME=VALUE}).
    @param more: other options of the plugin (C{prefix="blobs/"}).
    """
    flag, _, prefix = option.partition(" ")
    values = {"bucket": bucket, "endpoint_url": endpoint, "access_key": ACCESS_KEY,
              "secret_key": SECRET_KEY, **more}
    arguments = []
    for name, value in values.items():
        arguments += [flag, f"{prefix}{name}={value}"]
    return arguments


def missing(what: str) -> NoReturn:
    """
    Skip a test that needs C{what} (boto3, moto, awscli), which is not
    installed; fail it instead when C{P2PBLOB_REQUIRE_S3} is set, as
    C{.ci/run} sets it, so that CI cannot pass without the S3 tests.
    """
    message = f"{what} is not installed (pip install 'p2pblob[test]')"
    if os.environ.get("P2PBLOB_REQUIRE_S3"):
        raise AssertionError(message + " (P2PBLOB_REQUIRE_S3 is set)")
    raise SkipTest(message)
