"""A client for ``ember serve``: the standard library only (``urllib``), no extra package.

    python examples/serve/client.py --url http://127.0.0.1:8000       # against a running server

sends a few test images of the digits data set to ``POST /predict`` (one sample, then a batch)
and prints what came back, with ``/health`` and ``/metadata`` first.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def call(url: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
    """GET ``url`` (or POST ``body`` as JSON); returns the status and the decoded JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:  # 4xx/5xx: the server says why in {"detail": ...}
        return err.code, json.loads(err.read() or b"null")


def wait_until_healthy(url: str, timeout: float = 60.0, alive: Any = None) -> None:
    """Poll ``GET /health`` until it answers 200, for at most ``timeout`` seconds (``alive()``
    returning False, e.g. a server process that exited, stops the wait at once)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise RuntimeError("the server exited before it was ready")
        try:
            if call(f"{url}/health", timeout=2.0)[0] == 200:
                return
        except OSError:  # not listening yet
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url}/health did not answer 200 within {timeout:.0f} s")


def run_client(url: str, n: int = 8) -> float:
    """Ask the server about ``n`` test images; returns the fraction it got right."""
    from examples.digits.data import DigitsDataModule

    data = DigitsDataModule()
    data.setup("test")
    x, y = data.splits["test"][:n]
    status, health = call(f"{url}/health")
    print(f"GET /health -> {status} {health}")
    status, metadata = call(f"{url}/metadata")
    print(f"GET /metadata -> {status} format {metadata['format']}, input {metadata['input']}, output {metadata['output']}")

    status, one = call(f"{url}/predict", {"inputs": x[0].tolist()})  # one sample: shape (1, 8, 8)
    print(f"POST /predict (one image) -> {status}: predicted {one['predictions']}, true {int(y[0])}")
    status, batch = call(f"{url}/predict", {"inputs": x.tolist()})  # a batch: shape (n, 1, 8, 8)
    predicted = batch["predictions"]
    print(f"POST /predict ({n} images) -> {status}: predicted {predicted}, true {y.tolist()}")
    status, error = call(f"{url}/predict", {"inputs": [1.0, 2.0]})  # wrong shape: a 422 that says why
    print(f"POST /predict (wrong shape) -> {status}: {error['detail']}")
    return sum(int(p == t) for p, t in zip(predicted, y.tolist())) / n


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    args = parser.parse_args(argv)
    wait_until_healthy(args.url, timeout=10.0)
    print(f"accuracy on these images: {run_client(args.url):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
