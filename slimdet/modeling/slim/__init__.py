from .compile import COMPILE_MODES, compile_method
from .distill import distillation_loss, multi_distillation_loss
from .loop import TaskOutput, WidthLoop
from .weights import loss_weights

__all__ = ["COMPILE_MODES", "compile_method", "distillation_loss", "multi_distillation_loss",
           "TaskOutput", "WidthLoop",
           "loss_weights"]
