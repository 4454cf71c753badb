"""File writing that never leaves a torn file behind."""

from ember.io.atomic import atomic_write_bytes, atomic_write_text

__all__ = ["atomic_write_bytes", "atomic_write_text"]
