r"""anyoptim as ``torch.optim`` optimizers: drop-ins for PyTorch training stacks.

Every class here is a genuine :class:`torch.optim.Optimizer` subclass, so LR schedulers,
``torch.amp.GradScaler``, ``clip_grad_norm_``, Hugging Face ``Trainer``/accelerate, Lightning,
distributed checkpoint and nanoGPT-style loops accept it::

    import anyoptim.torch
    opt = anyoptim.torch.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)

* :class:`SGD`, :class:`Adam`, :class:`AdamW`, :class:`RMSprop`, :class:`Adagrad`,
  :class:`Adadelta` and :class:`Adamax` take ``torch.optim``'s keywords and defaults and do its
  maths (bias correction, a ``step`` per parameter, SGD's first momentum buffer equal to the
  gradient, ...), with its state names (``exp_avg``, ``momentum_buffer``, ...): replacing
  ``torch.optim.AdamW`` by ``anyoptim.torch.AdamW`` changes no number beyond rounding.
* :class:`Lion`, :class:`Muon` and :class:`Adafactor` follow anyoptim's (MLX's) update rules,
  with torch-style keyword names.
* :class:`Optimizer` wraps any configured anyoptim optimizer (MLX hyperparameters, anyoptim
  schedules, :class:`anyoptim.MultiOptimizer`) and runs exactly that optimizer.
* :func:`to_anyoptim`, :func:`from_anyoptim`, :func:`save` and :func:`load` move a run between
  this front-end and plain anyoptim (NumPy, JAX, MLX) through anyoptim's checkpoints.

The elementwise updates run on anyoptim's executors: numba kernels for CPU tensors, torch
multi-tensor kernels on other devices, plain tensor code under ``torch.compile``.

This module imports torch; ``import anyoptim`` never imports it.
"""

from ._core import (
    SGD,
    AdaDelta,
    Adadelta,
    Adafactor,
    Adagrad,
    Adam,
    Adamax,
    AdamW,
    Lion,
    Muon,
    Optimizer,
    RMSprop,
    from_anyoptim,
    load,
    save,
    to_anyoptim,
)
from ._more import ADOPT, Adan, AdEMAMix, SignSGD

__all__ = [
    "ADOPT",
    "SGD",
    "AdEMAMix",
    "AdaDelta",
    "Adadelta",
    "Adafactor",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "Adan",
    "Lion",
    "Muon",
    "Optimizer",
    "RMSprop",
    "SignSGD",
    "from_anyoptim",
    "load",
    "save",
    "to_anyoptim",
]

# schedule-free optimizers (schedulefree's names)
from ._schedule_free import AdamWScheduleFree, RAdamScheduleFree, SGDScheduleFree  # noqa: E402, RUF100

__all__ += ["AdamWScheduleFree", "RAdamScheduleFree", "SGDScheduleFree"]

# the AdaBelief family (pytorch_optimizer's and adam_atan2_pytorch's names)
from ._belief import AdaBelief, AdamAtan2, LaProp, StableAdamW  # noqa: E402, RUF100

__all__ += ["AdaBelief", "AdamAtan2", "LaProp", "StableAdamW"]
