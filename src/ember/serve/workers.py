"""Worker processes for the server's JSON work, so that a large request never stalls the event loop.

Parsing a body and writing an answer are single C calls that hold the GIL (orjson: about 0.2-0.8 s for
8 MiB of numbers); on a thread they would still stop ``/health`` and every other request for that long.
:class:`JsonWorkers` therefore decodes small bodies (up to :data:`INLINE_BYTES`) and encodes small answers
(up to :data:`INLINE_ELEMENTS` numbers) at once, and sends larger ones to worker processes.

Each worker is a fresh ``python -I`` that imports only numpy, orjson and :mod:`ember.serve.codec` (not
torch, not the user's ``__main__``), owned by one thread that writes its jobs and reads its answers.
Workers start with the first large request; one that dies is replaced and its request fails alone.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import subprocess
import sys
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np

from ember.serve.codec import decode_request, encode_answer, read_answer, write_job
from ember.serve.spec import TensorSpec
from ember.tree import tree_leaves

log = logging.getLogger("ember.serve")

#: Bodies up to this size are decoded on the event loop (about a millisecond).
INLINE_BYTES = 16 * 1024
#: Answers with up to this many numbers are written on the event loop.
INLINE_ELEMENTS = 4096

# What a worker runs: the ember and ember.serve packages are stand-ins for the installed directories,
# so importing ember.serve.codec runs neither package's __init__ (which import torch and FastAPI).
_BOOTSTRAP = """\
import signal, sys, types
signal.signal(signal.SIGINT, signal.SIG_IGN)
sys.path[:] = {path!r}
for name, location in {packages!r}:
    package = types.ModuleType(name)
    package.__path__ = [location]
    sys.modules[name] = package
from ember.serve.codec import serve_jobs
answers, sys.stdout = sys.stdout.buffer, sys.stderr
serve_jobs(sys.stdin.buffer, answers)
"""


class WorkerFailed(RuntimeError):
    """A JSON worker process died while it held a request (it is replaced for the next one)."""


class JsonWorkers:
    """Decodes requests and encodes answers, large ones in ``processes`` worker processes.

    ``processes=0`` does all of it on the calling thread (the event loop): no processes, and a large
    request holds up every other one while it is parsed.
    """

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    async def decode(
        self, body: bytes, spec: TensorSpec | None, allow_nan: bool, max_samples: int
    ) -> tuple[np.ndarray, bool]:
        """:func:`~ember.serve.codec.decode_request` of ``body``, off the event loop when it is large."""
        if self.processes == 0 or len(body) <= INLINE_BYTES:
            return decode_request(body, spec, allow_nan, max_samples)
        return await self._run("decode", (body, spec, allow_nan, max_samples))

    async def encode(self, result: Any, single: bool, task: str | None) -> bytes:
        """:func:`~ember.serve.codec.encode_answer` of ``result``, off the event loop when it is large."""
        if self.processes == 0 or sum(leaf.size for leaf in tree_leaves(result)) <= INLINE_ELEMENTS:
            return encode_answer(result, single, task)
        return await self._run("encode", (result, single, task))

    async def _run(self, name: str, args: tuple[Any, ...]) -> Any:
        future: Future = Future()
        with self._lock:
            if not self._threads:
                for index in range(self.processes):
                    thread = threading.Thread(target=self._own_worker, name=f"ember-json-{index}", daemon=True)
                    thread.start()
                    self._threads.append(thread)
        self._jobs.put((name, args, future))
        return await asyncio.wrap_future(future)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the workers (each finishes its current job); they start again if needed."""
        with self._lock:
            threads, self._threads = self._threads, []
        for _ in threads:
            self._jobs.put(None)
        for thread in threads:
            thread.join(timeout)

    def _own_worker(self) -> None:
        """One thread per worker process: take a job, send it, wait for the answer, resolve its future."""
        process: subprocess.Popen | None = None
        try:
            while (job := self._jobs.get()) is not None:
                name, args, future = job
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    if process is None or process.poll() is not None:
                        process = _start_worker()
                    write_job(process.stdin, name, args)
                    result = read_answer(process.stdout)
                except (OSError, EOFError) as err:
                    log.error("a JSON worker process failed (%s); starting a new one", err)
                    _stop_worker(process)
                    process = None
                    future.set_exception(WorkerFailed(f"the JSON worker process failed: {err}"))
                except BaseException as err:  # the job's own failure (InvalidInput, ...): the caller's
                    future.set_exception(err)
                else:
                    future.set_result(result)
        finally:
            _stop_worker(process)


def _start_worker() -> subprocess.Popen:
    serve_dir = Path(__file__).resolve().parent
    packages = [("ember", str(serve_dir.parent)), ("ember.serve", str(serve_dir))]
    code = _BOOTSTRAP.format(path=list(sys.path), packages=packages)
    # A session of its own: Ctrl-C in the terminal stops the server, which then closes the worker's input.
    return subprocess.Popen(
        [sys.executable, "-I", "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True
    )


def _stop_worker(process: subprocess.Popen | None) -> None:
    if process is None:
        return
    try:
        process.stdin.close()  # the worker ends at the end of its input
        process.wait(10)
    except (OSError, subprocess.TimeoutExpired):
        process.kill()
        process.wait()
    finally:
        process.stdout.close()
