"""Shared fixtures: the real reference data beside the project, and temporary stores."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real acquisition files (``../shared/data``); skip where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real reference data not found at {SHARED_DATA} (it lives beside the project)")
    return SHARED_DATA


@pytest.fixture(scope="module")
def s3(request):
    """A real S3 endpoint on loopback (moto's server) for one test module, with the module's
    ``S3_BUCKET`` created: ``(s3fs filesystem, storage options)``."""
    moto_server = pytest.importorskip("moto.server")
    s3fs = pytest.importorskip("s3fs")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    options = {"key": "testing", "secret": "testing",
               "client_kwargs": {"endpoint_url": f"http://{host}:{port}", "region_name": "us-east-1"}}
    fs = s3fs.S3FileSystem(**options)
    fs.call_s3("create_bucket", Bucket=request.module.S3_BUCKET)
    yield fs, options
    server.stop()
