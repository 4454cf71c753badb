"""``PredictionFileWriter``: every prediction of a ``predict`` run in one file (``ember predict --output``).

The format follows the file's extension:

- ``.pt``: ``torch.save`` of what ``trainer.predict`` returns (a list of the batches' outputs on the
  CPU; for several predict loaders, one such list per loader). Tensors and plain containers load
  back with ``torch.load(path, weights_only=True)``.
- ``.jsonl``: one JSON object per sample: ``index`` (the sample's index in its dataset, when the
  loader's batch sampler says it; else its position in the run), ``dataloader_idx`` (only with
  several loaders), then the prediction: ``prediction`` for a tensor, one field per key for a dict
  of tensors. A batch's tensors are split along their first dimension.
- ``.csv``: the same rows, flat: a per-sample vector becomes the columns ``name_0``, ``name_1``, ...;
  anything deeper needs ``.jsonl`` or ``.pt``.

The file is written once, atomically, at the end of the run; an existing file is refused before
anything runs unless ``overwrite=True``. In a distributed run each process writes its own share to
``NAME.rankR.EXT``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ember.callbacks.prediction_writer import BasePredictionWriter
from ember.io.atomic import atomic_write_bytes, atomic_write_text

FORMATS = (".pt", ".jsonl", ".csv")


class PredictionFormatError(TypeError):
    """The predictions cannot be written in the file's format (e.g. a string in a ``.csv``); raised at
    the first batch, before the rest of the run is spent."""


def check_output_path(path: str | os.PathLike, overwrite: bool = False, allow: str = "overwrite=True") -> str:
    """``path`` as a string, if predictions can be written there: a known extension, a folder that
    exists, and no file there already unless ``overwrite``; else a ``ValueError`` saying which
    (``allow``: how the caller allows overwriting, for the message)."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise ValueError(f"output {path!r}: unknown format {ext or '(no extension)'!r}; use one of {', '.join(FORMATS)}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"output {path!r}: the folder {folder!r} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"output {path!r} is a folder; give a file name")
    if os.path.exists(path) and not overwrite:
        raise ValueError(f"output {path!r} exists already; remove it, choose another name, or pass {allow} to replace it")
    return path


def rank_path(path: str, rank: int, world_size: int) -> str:
    """Where process ``rank`` writes: ``path`` itself in a one-process run, else ``NAME.rankR.EXT``."""
    if world_size <= 1:
        return path
    stem, ext = os.path.splitext(path)
    return f"{stem}.rank{rank}{ext}"


# --------------------------------------------------------------------------- rows


def sample_rows(prediction: Any) -> list[dict[str, Any]]:
    """One batch's ``prediction`` as one dict per sample (a tensor: ``prediction``; a dict of
    tensors: its keys), each value a number or nested list; a ``TypeError`` for anything else."""
    fields = prediction if isinstance(prediction, Mapping) else {"prediction": prediction}
    columns: dict[str, list[Any]] = {}
    for name, value in fields.items():
        if not isinstance(value, torch.Tensor) or value.dim() == 0:
            what = "a 0-d tensor" if isinstance(value, torch.Tensor) else type(value).__name__
            raise PredictionFormatError(
                f"predict_step returned {what} for {name!r}; .jsonl/.csv take a tensor (or a dict of tensors) with one "
                "row per sample; write .pt for other predictions"
            )
        columns[str(name)] = value.detach().cpu().tolist()
    sizes = {len(v) for v in columns.values()}
    if len(sizes) > 1:
        raise PredictionFormatError(f"the predicted tensors have different first dimensions {sorted(sizes)}; .jsonl/.csv need one row per sample")
    n = sizes.pop() if sizes else 0
    return [{name: values[i] for name, values in columns.items()} for i in range(n)]


def _numbers(value: Any) -> Any:
    """``value`` with non-finite floats as strings ("nan", "inf", "-inf"), which JSON has no words for."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return value


def _flat(name: str, value: Any) -> list[tuple[str, Any]]:
    if not isinstance(value, list):
        return [(name, value)]
    if any(isinstance(v, list) for v in value):
        raise PredictionFormatError(f"{name!r} has more than one value per sample and column; write .jsonl or .pt instead of .csv")
    return [(f"{name}_{i}", v) for i, v in enumerate(value)]


# --------------------------------------------------------------------------- the callback


class PredictionFileWriter(BasePredictionWriter):
    """Writes every prediction of a predict run to ``path`` (``.pt``, ``.jsonl`` or ``.csv``; see the
    module docs) when the run ends. ``written`` is the path written (None before).

    Example::

        trainer = ember.Trainer(callbacks=[PredictionFileWriter("predictions.csv")])
        trainer.predict(model, loader)
    """

    def __init__(self, path: str | os.PathLike, overwrite: bool = False) -> None:
        super().__init__(write_interval="epoch")
        self.path = check_output_path(path, overwrite=True)
        self.overwrite = overwrite
        self.format = os.path.splitext(self.path)[1].lower()
        self.written: str | None = None
        self._checked_first = False

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage == "predict":  # refuse before predicting, not after
            check_output_path(rank_path(self.path, trainer.global_rank, trainer.world_size), self.overwrite)
            self._checked_first = False

    def on_predict_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if not self._checked_first and self.format != ".pt":  # a prediction the format cannot hold fails early
            rows = sample_rows(outputs)
            if self.format == ".csv" and rows:
                for name, value in rows[0].items():
                    _flat(name, value)
            self._checked_first = True
        super().on_predict_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

    def write_on_epoch_end(
        self, trainer: Any, pl_module: Any, predictions: Sequence[Any], batch_indices: Sequence[Any]
    ) -> None:
        path = rank_path(self.path, trainer.global_rank, trainer.world_size)
        if self.format == ".pt":
            buffer = io.BytesIO()
            torch.save(predictions, buffer)
            atomic_write_bytes(path, buffer.getvalue())
        else:
            several = len(trainer.num_predict_batches) > 1
            per_loader = predictions if several else [predictions]
            rows = list(self._rows(per_loader, batch_indices, several))
            atomic_write_text(path, _jsonl(rows) if self.format == ".jsonl" else _csv(rows))
        self.written = path

    @staticmethod
    def _rows(per_loader: Sequence[Sequence[Any]], batch_indices: Sequence[Any], several: bool) -> Any:
        for dl_idx, batches in enumerate(per_loader):
            known = batch_indices[dl_idx] if dl_idx < len(batch_indices) else []
            position = 0
            for b, prediction in enumerate(batches):
                rows = sample_rows(prediction)
                indices = known[b] if b < len(known) and len(known[b]) == len(rows) else None
                for i, row in enumerate(rows):
                    head: dict[str, Any] = {"dataloader_idx": dl_idx} if several else {}
                    head["index"] = indices[i] if indices is not None else position + i
                    yield {**head, **row}
                position += len(rows)


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps({k: _numbers(v) for k, v in row.items()}) + "\n" for row in rows)


def _csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = None
    for row in rows:
        flat = [pair for name, value in row.items() for pair in _flat(name, value)]
        if writer is None:
            header = [name for name, _ in flat]
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(header)
        elif len(flat) != len(header) or any(name != h for (name, _), h in zip(flat, header)):
            raise PredictionFormatError(f"the predictions do not all have the same columns ({header} then {[n for n, _ in flat]})")
        writer.writerow([value for _, value in flat])
    return out.getvalue()
