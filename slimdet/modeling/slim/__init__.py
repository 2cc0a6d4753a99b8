from .distill import distillation_loss, multi_distillation_loss
from .loop import TaskOutput, WidthLoop
from .weights import loss_weights

__all__ = ["distillation_loss", "multi_distillation_loss", "TaskOutput", "WidthLoop",
           "loss_weights"]
