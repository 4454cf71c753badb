"""Exporting models: ``torch.export`` (``.pt2``, recommended), ONNX and TorchScript.

Every function takes a ``str``, an ``os.PathLike`` (written atomically) or a writable binary file
object, and defaults its example input to the module's ``example_input_array``. The same functions
are available as ``Module.to_exported_program``, ``Module.to_onnx`` and ``Module.to_torchscript``.

Example::

    from ember.export import to_exported_program, to_onnx
    to_exported_program(model, "model.pt2")
    to_onnx(model, "model.onnx")          # dynamic batch axis, one self-contained file
"""

from ember.export.exported_program import to_exported_program
from ember.export.onnx import to_onnx
from ember.export.samples import METADATA_FILE
from ember.export.targets import ExportTarget
from ember.export.torchscript import to_torchscript

FORMATS = ("onnx", "pt2", "torchscript")

__all__ = ["FORMATS", "METADATA_FILE", "ExportTarget", "to_exported_program", "to_onnx", "to_torchscript"]
