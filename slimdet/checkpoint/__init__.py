from .checkpointer import SlimCheckpointer

__all__ = ["SlimCheckpointer"]
