"""The strategy names in one import: the ``Strategy`` seam, ``SingleDeviceStrategy`` and ``resolve_strategy``.

They live in :mod:`ember.runtime.base`, :mod:`ember.runtime.single_device` and
:mod:`ember.runtime.factory`; :mod:`ember.runtime` exports them too, with the distributed strategies.
"""

from ember.runtime.base import Strategy
from ember.runtime.factory import resolve_strategy
from ember.runtime.single_device import SingleDeviceStrategy

__all__ = ["SingleDeviceStrategy", "Strategy", "resolve_strategy"]
