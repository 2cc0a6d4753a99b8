from .checkpointer import SlimCheckpointer, atomic_write

__all__ = ["SlimCheckpointer", "atomic_write"]
