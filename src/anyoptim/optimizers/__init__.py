"""Optimizers with MLX's ``mlx.optimizers`` interface, for any array library, and the
training-loop wrappers and parameter groups that work with every one of them."""

from ._accumulate import GradientAccumulation
from ._adabelief import AdaBelief
from ._adafactor import Adafactor
from ._adam import Adam, Adamax, AdamW
from ._adam_atan2 import AdamAtan2
from ._adan import Adan
from ._adaptive import AdaDelta, Adagrad, RMSprop
from ._ademamix import AdEMAMix, SimplifiedAdEMAMix
from ._adopt import ADOPT
from ._average import EMA, SWA
from ._base import Optimizer
from ._cautious import CautiousAdam, CautiousAdamW, CautiousLion
from ._clip import clip_grad_norm
from ._groups import Group, group, no_decay_1d, register_predicate
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
from ._laprop import LaProp
from ._lars import LARS
from ._lion import Lion
from ._lookahead import Lookahead
from ._multi import MultiOptimizer
from ._muon import Muon
from ._nadam import NAdam, NAdamW
from ._prodigy import Prodigy
from ._radam import RAdam
from ._schedule_free import ScheduleFreeAdamW, ScheduleFreeRAdam, ScheduleFreeSGD
from ._sgd import SGD
from ._sign import SignSGD, Signum
from ._stable_adamw import StableAdamW
from ._wrapper import Wrapper

__all__ = [
    "ADOPT",
    "EMA",
    "LAMB",
    "LARS",
    "SGD",
    "SWA",
    "AdEMAMix",
    "AdaBelief",
    "AdaDelta",
    "Adafactor",
    "Adagrad",
    "Adam",
    "AdamAtan2",
    "AdamW",
    "Adamax",
    "Adan",
    "AdaptiveGradClip",
    "ApplyIfFinite",
    "CautiousAdam",
    "CautiousAdamW",
    "CautiousLion",
    "ClipByBlockRMS",
    "ClipByGlobalNorm",
    "ClipByTensorNorm",
    "ClipByValue",
    "GradientAccumulation",
    "Group",
    "LaProp",
    "Lion",
    "Lookahead",
    "MultiOptimizer",
    "Muon",
    "NAdam",
    "NAdamW",
    "Optimizer",
    "Prodigy",
    "RAdam",
    "RMSprop",
    "ScheduleFreeAdamW",
    "ScheduleFreeRAdam",
    "ScheduleFreeSGD",
    "SignSGD",
    "Signum",
    "SimplifiedAdEMAMix",
    "StableAdamW",
    "Wrapper",
    "ZeroNaNs",
    "clip_grad_norm",
    "group",
    "no_decay_1d",
    "register_predicate",
]
