"""Knowledge distillation: train a smaller student on the teacher's outputs and the true labels.

Classification mixes the temperature-softened KL divergence to the teacher (scaled by T²,
so its gradients keep their size as T changes) with cross-entropy on the labels; regression
mixes the squared error to the teacher's prediction with the squared error to the target.
"""

from __future__ import annotations

import torch
from torch.nn import functional

from ..api.jobs import Architecture, TrainingConfig
from ..api.spec import DistillStep
from .training import EncodedSplit, TrainOutcome, build_model, loss_function, scaled_target, train_model
from .trees import AnyModel

TREE_STUDENT_WIDTH = 64
"""Hidden width a tree ensemble's MLP student has at width factor 1."""


def student_architecture(teacher: Architecture, step: DistillStep, transform_width: int = 0) -> Architecture:
    """The student's architecture: explicit widths, or the teacher's scaled by the width factor
    (a tree ensemble's student is a one-layer MLP on the preprocessed features, ``transform_width`` wide)."""
    factor = step.width_factor if step.width_factor is not None else 0.5
    if step.hidden_layers is not None:
        hidden = list(step.hidden_layers)
    elif teacher.family == "lightgbm":
        hidden = [max(4, round(TREE_STUDENT_WIDTH * factor))]
    else:
        hidden = [max(1, round(width * factor)) for width in teacher.hidden]
    if teacher.family != "lightgbm":
        return teacher.model_copy(update={"hidden": hidden})
    return Architecture(family="mlp", inputs=transform_width, outputs=teacher.outputs, hidden=hidden, task=teacher.task)


def distill(
    teacher: AnyModel,
    step: DistillStep,
    train: EncodedSplit,
    validation: EncodedSplit,
    config: TrainingConfig,
    class_weights: list[float] | None = None,
) -> TrainOutcome:
    """Train a student of :func:`student_architecture` and return it (best validation epoch kept)."""
    teacher.eval()
    with torch.inference_mode():
        soft = teacher.forward_scaled(torch.from_numpy(train.raw)).clone()
    student = build_model(
        teacher.transform,
        student_architecture(teacher.architecture, step, teacher.transform.input_width),
        train,
        config.seed,
    )
    student.target_mean.copy_(teacher.target_mean)
    student.target_std.copy_(teacher.target_std)
    hard = scaled_target(student, train.target)
    hard_loss = loss_function(student.task, class_weights)
    temperature, alpha = step.temperature, step.alpha

    def batch_loss(outputs: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        if student.task == "classification":
            soft_loss = functional.kl_div(
                functional.log_softmax(outputs / temperature, dim=1),
                functional.log_softmax(soft[index] / temperature, dim=1),
                reduction="batchmean",
                log_target=True,
            ) * (temperature**2)
        else:
            soft_loss = functional.mse_loss(outputs, soft[index])
        result: torch.Tensor = alpha * soft_loss + (1.0 - alpha) * hard_loss(outputs, hard[index])
        return result

    settings = config.model_copy(update={"epochs": step.epochs})
    return train_model(student, train, validation, settings, class_weights=class_weights, batch_loss=batch_loss)


def describe(step: DistillStep) -> str:
    """Short human description of a distill step."""
    if step.hidden_layers is not None:
        return f"distill to hidden {step.hidden_layers}"
    return f"distill to width x{step.width_factor if step.width_factor is not None else 0.5:g}"
