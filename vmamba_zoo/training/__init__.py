"""Training objectives used by the zoo's official recipes."""
from .distillation import HardDistillationLoss, hard_distillation_loss

__all__ = ["HardDistillationLoss", "hard_distillation_loss"]
