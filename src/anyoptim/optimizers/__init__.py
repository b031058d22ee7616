"""Optimizers with MLX's ``mlx.optimizers`` interface, for any array library."""

from ._adafactor import Adafactor
from ._adam import Adam, Adamax, AdamW
from ._adan import Adan
from ._adaptive import AdaDelta, Adagrad, RMSprop
from ._ademamix import AdEMAMix, SimplifiedAdEMAMix
from ._adopt import ADOPT
from ._base import Optimizer
from ._clip import clip_grad_norm
from ._lamb import LAMB
from ._lars import LARS
from ._lion import Lion
from ._multi import MultiOptimizer
from ._muon import Muon
from ._schedule_free import ScheduleFreeAdamW, ScheduleFreeRAdam, ScheduleFreeSGD
from ._sgd import SGD
from ._sign import SignSGD, Signum

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
    "RMSprop",
    "ScheduleFreeAdamW",
    "ScheduleFreeRAdam",
    "ScheduleFreeSGD",
    "SignSGD",
    "Signum",
    "SimplifiedAdEMAMix",
    "clip_grad_norm",
]

# the AdaBelief family (AdaBelief, LaProp, Adam-atan2, StableAdamW)
from ._adabelief import AdaBelief
from ._adam_atan2 import AdamAtan2
from ._cautious import CautiousAdam, CautiousAdamW, CautiousLion
from ._laprop import LaProp
from ._stable_adamw import StableAdamW

__all__ += ["AdaBelief", "AdamAtan2", "LaProp", "StableAdamW"]
__all__ += ["CautiousAdam", "CautiousAdamW", "CautiousLion"]
