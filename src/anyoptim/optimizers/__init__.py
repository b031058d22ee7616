"""Optimizers with MLX's ``mlx.optimizers`` interface, for any array library."""

from ._accumulate import GradientAccumulation
from ._adafactor import Adafactor
from ._adam import Adam, Adamax, AdamW
from ._adan import Adan
from ._adaptive import AdaDelta, Adagrad, RMSprop
from ._ademamix import AdEMAMix, SimplifiedAdEMAMix
from ._adopt import ADOPT
from ._average import EMA, SWA
from ._base import Optimizer
from ._clip import clip_grad_norm
from ._guards import (
    AdaptiveGradClip,
    ApplyIfFinite,
    ClipByBlockRMS,
    ClipByGlobalNorm,
    ClipByTensorNorm,
    ClipByValue,
    ZeroNaNs,
)
from ._lamb import LAMB
from ._lars import LARS
from ._lion import Lion
from ._lookahead import Lookahead
from ._multi import MultiOptimizer
from ._muon import Muon
from ._prodigy import Prodigy
from ._schedule_free import ScheduleFreeAdamW, ScheduleFreeRAdam, ScheduleFreeSGD
from ._sgd import SGD
from ._sign import SignSGD, Signum
from ._wrapper import Wrapper

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
    "Lion",
    "MultiOptimizer",
    "Muon",
    "Optimizer",
    "Prodigy",
    "RMSprop",
    "ScheduleFreeAdamW",
    "ScheduleFreeRAdam",
    "ScheduleFreeSGD",
    "SignSGD",
    "Signum",
    "SimplifiedAdEMAMix",
    "clip_grad_norm",
]

__all__ += [
    "EMA",
    "SWA",
    "AdaptiveGradClip",
    "ApplyIfFinite",
    "ClipByBlockRMS",
    "ClipByGlobalNorm",
    "ClipByTensorNorm",
    "ClipByValue",
    "GradientAccumulation",
    "Lookahead",
    "Wrapper",
    "ZeroNaNs",
]

# parameter groups (per-parameter hyperparameters on one optimizer)
from ._groups import Group, group, no_decay_1d, register_predicate  # noqa: E402

__all__ += ["Group", "group", "no_decay_1d", "register_predicate"]

# NAdam, NAdamW, RAdam
from ._nadam import NAdam, NAdamW  # noqa: E402, RUF100
from ._radam import RAdam  # noqa: E402, RUF100

__all__ += ["NAdam", "NAdamW", "RAdam"]
