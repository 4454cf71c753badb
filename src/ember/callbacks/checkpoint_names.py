"""The file names ``ModelCheckpoint`` gives its checkpoints, as Lightning does: a ``filename``
template such as ``"{epoch}-{val_loss:.3f}"`` filled with the logged metrics (``epoch=3-val_loss=0.123``
with ``auto_insert_metric_name``), an optional ``-vN`` version, then the file extension.

:func:`name_pattern` turns a template back into a regular expression: what a restored path must
match before Ember deletes or overwrites it (see :mod:`ember.checkpoint.topk`); :func:`local_dirpath`
is the folder they go in.
"""

from __future__ import annotations

import os
import re
from typing import Any

import torch

from ember.checkpoint import io as ckpt_io

#: one ``{name}`` or ``{name:format}`` group of a template
GROUP = re.compile(r"\{([^{}:]+)(:[^{}]*)?\}")

#: a metric formatted as :func:`fill` does (``3``, ``-1.000``, ``1e-05``, ``nan``, ``-inf``,
#: ``12,345``, ``50.0%``, padded)
_NUMBER = "[-+ 0-9.,_%eEnaifNAIF]+"


def local_dirpath(dirpath: str | os.PathLike | None) -> str | None:
    """As Lightning: a local ``dirpath`` with ``~`` expanded, made absolute (symlinks resolved); a URL as is."""
    if dirpath is None:
        return None
    path = os.fspath(dirpath)
    return path if ckpt_io.is_url(path) else os.path.realpath(os.path.expanduser(path))


def fill(template: str, metrics: dict[str, Any], insert_names: bool, equals: str = "=") -> str:
    """``template`` with each ``{name[:format]}`` replaced by the metric's value (0 when it was not
    logged), prefixed with ``name=`` when ``insert_names``; a ``/`` becomes ``_`` so the name stays
    one file directly in the checkpoint folder.

    Example::

        fill("{epoch}-{val_loss:.2f}", {"epoch": 2, "val_loss": 0.1234}, True)  # 'epoch=2-val_loss=0.12'
    """

    def one(m: re.Match) -> str:
        name, spec = m.group(1), m.group(2) or ""
        value = metrics.get(name, 0)
        if isinstance(value, torch.Tensor):
            value = value.item()
        text = format(value, spec[1:]) if spec else str(value)
        return f"{name}{equals}{text}" if insert_names else text

    return GROUP.sub(one, template).replace("/", "_")


def name_pattern(template: str, insert_names: bool, ext: str, join: str = "-", equals: str = "=") -> re.Pattern[str]:
    """What :func:`fill` can produce from ``template``, then an optional ``{join}vN`` version and
    ``ext``, as a regular expression."""
    parts, pos = [], 0
    for m in GROUP.finditer(template):
        parts.append(re.escape(template[pos : m.start()].replace("/", "_")))
        prefix = re.escape(f"{m.group(1)}{equals}".replace("/", "_")) if insert_names else ""
        parts.append(prefix + _NUMBER)
        pos = m.end()
    parts.append(re.escape(template[pos:].replace("/", "_")))
    return re.compile("".join(parts) + f"(?:{re.escape(join)}v[0-9]+)?" + re.escape(ext))
