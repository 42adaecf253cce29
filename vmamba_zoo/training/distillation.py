"""DeiT's hard distillation, the objective GroupMamba is trained with.

A distilled model has two classifiers. In distilled training (timm's convention:
``model.set_distilled_training(True)`` and ``model.train()``) it returns both outputs; the class
output learns the labels, the distillation output the teacher's hard decisions:

    loss = (1 - alpha) * base_criterion(class_logits, targets)
           + alpha * cross_entropy(dist_logits, argmax(teacher(images)))

At inference the model returns the mean of the two. GroupMamba's official recipe uses timm's
``regnety_160`` (DeiT's weights) as teacher and ``alpha = 0.5``. Example::

    import timm, vmamba_zoo
    from vmamba_zoo.training import HardDistillationLoss

    model = timm.create_model("groupmamba_tiny")
    model.set_distilled_training(True)
    teacher = timm.create_model("regnety_160", pretrained=True).eval()
    criterion = HardDistillationLoss(teacher, alpha=0.5)      # base criterion: cross entropy
    loss = criterion(images, model(images), targets)          # model in train mode: two outputs
    loss.backward()
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["hard_distillation_loss", "HardDistillationLoss"]


def hard_distillation_loss(outputs: Sequence[torch.Tensor], targets: torch.Tensor, teacher_logits: torch.Tensor,
                           alpha: float = 0.5, base_criterion: Optional[Callable] = None) -> torch.Tensor:
    """(1 - alpha) * base_criterion(class logits, targets) + alpha * CE(distillation logits, teacher's argmax).

    ``outputs`` is the (class logits, distillation logits) pair a model returns in distilled training;
    ``targets`` whatever ``base_criterion`` takes (class indices for the default cross entropy, or
    mixup's soft targets with e.g. timm's ``SoftTargetCrossEntropy``).
    """
    if isinstance(outputs, torch.Tensor) or len(outputs) != 2:
        raise ValueError("hard_distillation_loss needs the model's (class logits, distillation logits) pair: "
                         "call model.set_distilled_training(True) and keep the model in train mode")
    logits, logits_dist = outputs
    if teacher_logits.shape != logits_dist.shape:
        raise ValueError(f"teacher logits {tuple(teacher_logits.shape)} do not match the distillation logits "
                         f"{tuple(logits_dist.shape)} (same batch and classes needed)")
    base = (base_criterion or F.cross_entropy)(logits, targets)
    distill = F.cross_entropy(logits_dist, teacher_logits.argmax(dim=-1))
    return (1 - alpha) * base + alpha * distill


class HardDistillationLoss(nn.Module):
    """:func:`hard_distillation_loss` with the teacher run inside (without gradients), as DeiT's
    ``DistillationLoss(base_criterion, teacher, 'hard', alpha, tau)``: ``loss = criterion(images, outputs,
    targets)``. The teacher is put in eval mode."""

    def __init__(self, teacher: nn.Module, alpha: float = 0.5, base_criterion: Optional[Callable] = None):
        super().__init__()
        self.teacher = teacher.eval()
        self.alpha = alpha
        self.base_criterion = base_criterion

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # the teacher's batch norms keep their statistics
        return self

    def forward(self, images: torch.Tensor, outputs, targets: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = self.teacher(images)
        return hard_distillation_loss(outputs, targets, teacher_logits, self.alpha, self.base_criterion)
