"""The optimiser and learning-rate schedule of the papers' training recipes."""

import math
import numbers

import keras
from keras import ops

from keras_fsnn import validation


@keras.saving.register_keras_serializable(package="keras_fsnn")
class CoupledSGD(keras.optimizers.SGD):
    """SGD with momentum whose weight decay is an L2 term added to the gradient,
    g <- g + decay * w, before momentum (PyTorch `torch.optim.SGD(weight_decay=...)`, as
    in every paper recipe: momentum 0.9, decay 5e-4 on all parameters, batch-norm and
    the spectral-norm alpha included). Keras's own `weight_decay` is decoupled (applied
    to the weights outside momentum), which is a different optimiser.
    """

    def __init__(self, learning_rate=0.05, momentum=0.9, nesterov=False, coupled_weight_decay=5e-4, **kwargs):
        if isinstance(learning_rate, numbers.Real):  # else a schedule (or a variable)
            learning_rate = validation.number("learning_rate", learning_rate, low=0.0, high=math.inf, high_open=True)
        coupled_weight_decay = validation.number("coupled_weight_decay", coupled_weight_decay, low=0.0, high=math.inf,
                                                 high_open=True)
        super().__init__(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov, **kwargs)
        self.coupled_weight_decay = coupled_weight_decay

    def update_step(self, gradient, variable, learning_rate):
        if self.coupled_weight_decay:
            gradient = gradient + ops.cast(self.coupled_weight_decay, gradient.dtype) * ops.cast(variable, gradient.dtype)
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "coupled_weight_decay": self.coupled_weight_decay}


@keras.saving.register_keras_serializable(package="keras_fsnn")
class WarmupMultiStep(keras.optimizers.schedules.LearningRateSchedule):
    """lr(step) = base * factor^(milestones passed) * min(1, (step + 1) / warmup_steps).

    Paper 000 F.3.2: decay by 0.1 at epochs 30/60/90 (MNIST family) or 50/75 (CIFAR), with
    a linear warmup over the first 400 iterations for CIFAR. Milestones are in epochs.
    """

    def __init__(self, base_learning_rate, steps_per_epoch, milestones=(), factor=0.1, warmup_steps=0):
        finite = dict(high=math.inf, high_open=True)
        self.base_learning_rate = validation.number("base_learning_rate", base_learning_rate, low=0.0, **finite)
        self.steps_per_epoch = validation.integer("steps_per_epoch", steps_per_epoch, minimum=1)
        self.milestones = tuple(validation.integer("milestones", m, minimum=0) for m in milestones)
        self.factor = validation.number("factor", factor, low=0.0, low_open=True, **finite)
        self.warmup_steps = validation.integer("warmup_steps", warmup_steps, minimum=0)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        epoch = ops.floor(step / self.steps_per_epoch)
        passed = sum(ops.cast(ops.greater_equal(epoch, m), "float32") for m in self.milestones) if self.milestones else 0.0
        rate = self.base_learning_rate * ops.power(self.factor, passed)
        if self.warmup_steps:
            rate = rate * ops.minimum(1.0, (step + 1.0) / self.warmup_steps)
        return rate

    def get_config(self):
        return {"base_learning_rate": self.base_learning_rate, "steps_per_epoch": self.steps_per_epoch,
                "milestones": list(self.milestones), "factor": self.factor, "warmup_steps": self.warmup_steps}
