"""anyoptim's optimizers as optax gradient transformations (imports jax and optax).

Two ways in, both returning a genuine ``optax.GradientTransformationExtraArgs`` that
``optax.chain``, ``optax.inject_hyperparams``, ``optax.MultiSteps``, ``optax.masked``,
``optax.apply_if_finite``, ``flax.nnx.Optimizer`` and flax's ``TrainState`` accept:

* **Factories with optax's names, signatures, defaults and maths** (:func:`adam`,
  :func:`adamw`, :func:`sgd`, :func:`rmsprop`, :func:`adagrad`, :func:`adadelta`,
  :func:`adamax`, :func:`lion`, :func:`adafactor`, ...): replacing ``optax.adamw(...)`` by
  ``anyoptim.optax.adamw(...)`` changes no number beyond rounding. Each elementwise factory is
  one anyoptim rule written in optax's form (it computes the update direction, optax's bias
  correction and ε placement, weight decay added before the scaling by ``-learning_rate``)
  and run by anyoptim's executor; :func:`muon` is ``optax.contrib.muon`` (MLX's Muon under
  optax is ``from_optimizer(anyoptim.Muon(...))``).
* :func:`from_optimizer` for any configured anyoptim optimizer (MLX's maths, anyoptim's
  schedules, ``MultiOptimizer``): the updates are ``new - old``, in float32 for 16-bit
  parameters, so ``optax.apply_updates`` reproduces anyoptim's new parameters.
  :func:`to_anyoptim_state` and :func:`from_anyoptim_state` convert its state to and from an
  anyoptim optimizer state (for ``anyoptim.save`` / ``anyoptim.load``).

Trees are walked with ``jax.tree`` (``nnx.State``, nnx ``Variable``s, ``FrozenDict`` and
optax's ``MaskedNode`` are transparent) and the state's structure, shapes and dtypes never
change after ``init``, so ``jax.eval_shape(tx.init, params)`` is a valid restore target.

Example:
    >>> import jax.numpy as jnp, optax, anyoptim.optax
    >>> tx = anyoptim.optax.adamw(1e-3)          # was: optax.adamw(1e-3)
    >>> params = {"w": jnp.ones(3)}
    >>> state = tx.init(params)
    >>> updates, state = tx.update({"w": jnp.ones(3)}, state, params)
    >>> optax.apply_updates(params, updates)["w"]
    Array([0.9989999, 0.9989999, 0.9989999], dtype=float32)
"""

from ._adam import adam, adamax, adamaxw, adamw, amsgrad, nadam, nadamw
from ._belief import adabelief, adam_atan2, laprop, stable_adamw
from ._classic import adadelta, adagrad, lion, rmsprop, sgd
from ._common import State
from ._convert import from_anyoptim_state, from_optimizer, to_anyoptim_state
from ._matrix import adafactor
from ._more import adan, ademamix, adopt, lamb, lars, sign_sgd, signum, simplified_ademamix
from ._muon import muon
from ._prodigy import prodigy
from ._radam import radam
from ._schedule_free import schedule_free_adamw, schedule_free_eval_params, schedule_free_sgd

__all__ = [
    "State",
    "adabelief",
    "adadelta",
    "adafactor",
    "adagrad",
    "adam",
    "adam_atan2",
    "adamax",
    "adamaxw",
    "adamw",
    "adan",
    "ademamix",
    "adopt",
    "amsgrad",
    "from_anyoptim_state",
    "from_optimizer",
    "lamb",
    "laprop",
    "lars",
    "lion",
    "muon",
    "nadam",
    "nadamw",
    "prodigy",
    "radam",
    "rmsprop",
    "schedule_free_adamw",
    "schedule_free_eval_params",
    "schedule_free_sgd",
    "sgd",
    "sign_sgd",
    "signum",
    "simplified_ademamix",
    "stable_adamw",
    "to_anyoptim_state",
]
