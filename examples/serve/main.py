"""Train, export to ONNX, serve over HTTP, and query the server: the whole path to a model in use.

1. fit the digits CNN (``examples/digits``) for a few epochs and keep its checkpoint;
2. ``ember export CKPT --format onnx --model examples.digits.model.DigitsCNN``: one ``.onnx`` file
   with a dynamic batch axis (the class is named on the command line, never read from the file);
3. ``ember serve model.onnx --task classification`` on 127.0.0.1 (a free port), run by ONNX Runtime,
   batching concurrent requests;
4. the client in ``client.py`` (standard library only) checks ``/health`` and ``/metadata`` and sends
   one image, a batch and a malformed request to ``POST /predict``; then the server is stopped.

    python examples/serve/main.py            # 5 epochs
    python examples/serve/main.py --fast     # 1 short epoch, for the tests

Needs ``pip install "ember[serve,onnx]"``.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import ember  # noqa: E402
from examples.digits.data import DigitsDataModule  # noqa: E402
from examples.digits.model import DigitsCNN  # noqa: E402
from examples.serve.client import run_client, wait_until_healthy  # noqa: E402

EMBER = [sys.executable, "-m", "ember"]  # the `ember` command of this Python


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--fast", action="store_true", help="1 epoch of 10 batches (the test)")
    parser.add_argument("--out", default=None, help="where the checkpoint and the model go (default: a temporary folder)")
    args = parser.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="ember-serve-"))

    ember.seed_everything(0)
    trainer = ember.Trainer(max_epochs=1 if args.fast else args.epochs, limit_train_batches=10 if args.fast else 1.0,
                            enable_progress_bar=False, enable_model_summary=False, default_root_dir=out)  # fmt: skip
    trainer.fit(DigitsCNN(), datamodule=DigitsDataModule())
    checkpoint = trainer.checkpoint_callback.best_model_path
    onnx_path = out / "digits.onnx"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    export = subprocess.run([*EMBER, "export", checkpoint, "--format", "onnx", "--model", "examples.digits.model.DigitsCNN",
                             "--output", str(onnx_path)], env=env, timeout=300, capture_output=True, text=True)  # fmt: skip
    if export.returncode != 0:  # (the exporter's own warnings are shown only when it fails)
        print(export.stdout + export.stderr, file=sys.stderr)
        return 1
    print(export.stdout.strip())

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([*EMBER, "serve", str(onnx_path), "--task", "classification", "--host", "127.0.0.1",
                               "--port", str(port), "--log-level", "warning"], env=env)  # fmt: skip
    try:
        wait_until_healthy(url, timeout=120.0, alive=lambda: server.poll() is None)
        accuracy = run_client(url)
    finally:
        server.send_signal(signal.SIGTERM)  # a graceful shutdown: in-flight requests finish first
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    print(f"accuracy on these images: {accuracy:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
