"""Serving a model over HTTP: ``create_app`` (FastAPI, dynamic batching) and ``serve`` (uvicorn).

``ember serve PATH`` runs the same server from the command line. FastAPI, uvicorn and
fastapi-offline come with ``pip install "ember[serve]"`` (and ONNX Runtime with ``ember[onnx]``).
Safe to serve from others: ONNX files and Ember checkpoints, which load as data. A ``.pt2`` archive
runs code when loaded; it is served only with ``trusted=True`` (``ember serve --trust-pt2``).

Example::

    from ember.serve import create_app, serve, server_config
    app = create_app("model.onnx", task="classification")     # embed it, or:
    serve("model.onnx", host="127.0.0.1", port=8000, max_batch_size=64)
    uvicorn.Server(server_config(app, port=8000, timeout_body=30)).run()   # your own uvicorn, same limits
"""

from ember.serve.app import create_app, serve
from ember.serve.connections import server_config

__all__ = ["create_app", "serve", "server_config"]
