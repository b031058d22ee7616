"""anyoptim: MLX's optimizer API for NumPy, PyTorch, JAX, CuPy and MLX arrays.

Use it as a drop-in for ``mlx.optimizers``::

    import anyoptim as optim
    opt = optim.AdamW(learning_rate=optim.cosine_decay(1e-3, 1000))
    new_params = opt.apply_gradients(grads, params)
"""

from . import optimizers, schedulers, utils
from ._backend import module_grads
from .errors import CheckpointError, MissingStateError, TreeMismatchError
from .io import load, load_params, read_metadata, save
from .optimizers import (
    ADOPT,
    LAMB,
    LARS,
    SGD,
    AdaDelta,
    Adafactor,
    Adagrad,
    Adam,
    Adamax,
    AdamW,
    Adan,
    AdEMAMix,
    Lion,
    MultiOptimizer,
    Muon,
    Optimizer,
    RMSprop,
    SignSGD,
    Signum,
    SimplifiedAdEMAMix,
    clip_grad_norm,
)
from .schedulers import (
    constant_warmup,
    cosine_decay,
    cosine_restarts,
    exponential_decay,
    inverse_sqrt,
    join_schedules,
    linear_schedule,
    one_cycle,
    piecewise_constant,
    piecewise_linear,
    polynomial_decay,
    step_decay,
    warmup_cosine_decay,
    warmup_stable_decay,
)

__version__ = "0.1.0"

__all__ = [
    "ADOPT",
    "LAMB",
    "LARS",
    "SGD",
    "AdEMAMix",
    "AdaDelta",
    "Adafactor",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "Adan",
    "CheckpointError",
    "Lion",
    "MissingStateError",
    "MultiOptimizer",
    "Muon",
    "Optimizer",
    "RMSprop",
    "SignSGD",
    "Signum",
    "SimplifiedAdEMAMix",
    "TreeMismatchError",
    "__version__",
    "clip_grad_norm",
    "constant_warmup",
    "cosine_decay",
    "cosine_restarts",
    "exponential_decay",
    "inverse_sqrt",
    "join_schedules",
    "linear_schedule",
    "load",
    "load_params",
    "module_grads",
    "one_cycle",
    "optimizers",
    "piecewise_constant",
    "piecewise_linear",
    "polynomial_decay",
    "read_metadata",
    "save",
    "schedulers",
    "step_decay",
    "utils",
    "warmup_cosine_decay",
    "warmup_stable_decay",
]

# schedule-free optimizers
from .optimizers._schedule_free import (  # noqa: E402, RUF100
    ScheduleFreeAdamW,
    ScheduleFreeRAdam,
    ScheduleFreeSGD,
)

__all__ += ["ScheduleFreeAdamW", "ScheduleFreeRAdam", "ScheduleFreeSGD"]

# the AdaBelief family
from .optimizers._adabelief import AdaBelief  # noqa: E402, RUF100
from .optimizers._adam_atan2 import AdamAtan2  # noqa: E402, RUF100
from .optimizers._cautious import CautiousAdam, CautiousAdamW, CautiousLion  # noqa: E402, RUF100
from .optimizers._laprop import LaProp  # noqa: E402, RUF100
from .optimizers._stable_adamw import StableAdamW  # noqa: E402, RUF100

__all__ += ["AdaBelief", "AdamAtan2", "LaProp", "StableAdamW"]
__all__ += ["CautiousAdam", "CautiousAdamW", "CautiousLion"]
