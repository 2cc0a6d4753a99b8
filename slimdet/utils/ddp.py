"""The model inside a ``DistributedDataParallel`` wrapper."""
from __future__ import annotations

from torch import nn
from torch.nn.parallel import DistributedDataParallel


def unwrap(model: nn.Module) -> nn.Module:
    """``model.module`` for a DDP-wrapped model, else ``model`` (parameters, state dict and
    width state live on the wrapped module)."""
    return model.module if isinstance(model, DistributedDataParallel) else model
