"""anyoptim as ``torch.optim`` optimizers: drop-ins for PyTorch training stacks.

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
* :class:`Lion` and :class:`Adafactor` follow anyoptim's (MLX's) update rules, with
  torch-style keyword names; :class:`Muon` takes ``torch.optim.Muon``'s keywords, defaults and
  maths.
* :class:`Optimizer` wraps any configured anyoptim optimizer (MLX hyperparameters, anyoptim
  schedules, :class:`anyoptim.MultiOptimizer`) and runs exactly that optimizer.
* :func:`to_anyoptim`, :func:`from_anyoptim`, :func:`save` and :func:`load` move a run between
  this front-end and plain anyoptim (NumPy, JAX, MLX) through anyoptim's checkpoints.

The elementwise updates run on anyoptim's executors: numba kernels for CPU tensors, torch
multi-tensor kernels on other devices, plain tensor code under ``torch.compile``.

This module imports torch; ``import anyoptim`` never imports it.
"""

from ._adam import Adam, AdamW
from ._adaptive import AdaDelta, Adadelta, Adagrad, Adamax, Lion
from ._atan2_stable import AdamAtan2, StableAdamW
from ._belief import AdaBelief, LaProp
from ._classic import SGD, RMSprop
from ._convert import from_anyoptim, load, save, to_anyoptim
from ._groups import param_groups
from ._matrix import Adafactor, Muon
from ._more import ADOPT, Adan, AdEMAMix, SignSGD
from ._nadam_radam import NAdam, RAdam
from ._prodigy import Prodigy
from ._schedule_free import AdamWScheduleFree, RAdamScheduleFree, SGDScheduleFree
from ._simplified import SimplifiedAdEMAMix
from ._trust import LARS, Lamb
from ._wrap import Optimizer

__all__ = [
    "ADOPT",
    "LARS",
    "SGD",
    "AdEMAMix",
    "AdaBelief",
    "AdaDelta",
    "Adadelta",
    "Adafactor",
    "Adagrad",
    "Adam",
    "AdamAtan2",
    "AdamW",
    "AdamWScheduleFree",
    "Adamax",
    "Adan",
    "LaProp",
    "Lamb",
    "Lion",
    "Muon",
    "NAdam",
    "Optimizer",
    "Prodigy",
    "RAdam",
    "RAdamScheduleFree",
    "RMSprop",
    "SGDScheduleFree",
    "SignSGD",
    "SimplifiedAdEMAMix",
    "StableAdamW",
    "from_anyoptim",
    "load",
    "param_groups",
    "save",
    "to_anyoptim",
]
