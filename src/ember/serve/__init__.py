"""Serving a model over HTTP: ``create_app`` (FastAPI, dynamic batching) and ``serve`` (uvicorn).

``ember serve PATH`` runs the same server from the command line. FastAPI, uvicorn and
fastapi-offline come with ``pip install "ember[serve]"`` (and ONNX Runtime with ``ember[onnx]``).

Example::

    from ember.serve import create_app, serve
    app = create_app("model.pt2", task="classification")     # embed it, or:
    serve("model.onnx", host="127.0.0.1", port=8000, max_batch_size=64)
"""

from ember.serve.app import create_app, serve

__all__ = ["create_app", "serve"]
