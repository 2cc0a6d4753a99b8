from .distill import distillation_loss, multi_distillation_loss
from .loop import TaskOutput, WidthLoop, unwrap
from .weights import loss_weights

__all__ = ["distillation_loss", "multi_distillation_loss", "TaskOutput", "WidthLoop", "unwrap",
           "loss_weights"]
