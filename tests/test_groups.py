"""Parameter groups (anyoptim.group, no_decay_1d): one optimizer, one state, per-group values."""

from __future__ import annotations

import re

import numpy as np
import pytest

import anyoptim as optim
from anyoptim.errors import CheckpointError

SHAPES = {"embed.weight": (5, 3), "block.0.w": (3, 4), "block.0.b": (4,), "norm.scale": (3,),
          "head.w": (4, 2), "s": ()}


def _tree(rng: np.random.Generator, dtype: type = np.float32) -> dict:
    out: dict = {"embed": {}, "block": [{}], "norm": {}, "head": {}}
    for path, shape in SHAPES.items():
        value = rng.standard_normal(shape).astype(dtype)
        parts = path.split(".")
        node: dict | list = out
        if len(parts) == 1:
            out[parts[0]] = value
            continue
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[parts[-1]] = value  # type: ignore[index]
    return out


def _flat(tree: dict) -> dict[str, np.ndarray]:
    return dict(optim.utils.tree_flatten(tree))


def _relerr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


GROUPS = [optim.no_decay_1d(), optim.group("embed.*", lr_scale=10.0)]


def test_against_torch_param_groups() -> None:
    torch = pytest.importorskip("torch")
    from anyoptim.torch import param_groups

    rng = np.random.default_rng(0)
    params = _tree(rng)
    opt = optim.AdamW(1e-3, weight_decay=0.1, bias_correction=True, groups=GROUPS)
    named = [(k, torch.nn.Parameter(torch.tensor(v))) for k, v in _flat(params).items()]
    ref = torch.optim.AdamW(param_groups(named, GROUPS, lr=1e-3), lr=1e-3, weight_decay=0.1)
    assert [g["weight_decay"] for g in ref.param_groups] == [0.0, 0.1, 0.1]
    assert [g["lr"] for g in ref.param_groups] == [1e-3, 1e-2, 1e-3]
    worst = 0.0
    for _ in range(50):
        grads = {k: rng.standard_normal(v.shape).astype(np.float32)
                 for k, v in _flat(params).items()}
        for (k, p) in named:
            p.grad = torch.tensor(grads[k])
        ref.step()
        params = opt.apply_gradients(optim.utils.tree_unflatten(list(grads.items())), params)
        for k, p in named:
            worst = max(worst, _relerr(_flat(params)[k], p.detach().numpy()))
    assert worst < 1e-6, worst


def test_against_optax_mask() -> None:
    optax = pytest.importorskip("optax")
    jnp = pytest.importorskip("jax.numpy")
    rng = np.random.default_rng(1)
    params = _tree(rng)
    flat = _flat(params)
    mask = {k: v.ndim > 1 for k, v in flat.items()}
    ref = optax.adamw(1e-3, weight_decay=0.1, mask=mask)
    ref_params = {k: jnp.asarray(v) for k, v in flat.items()}
    ref_state = ref.init(ref_params)
    opt = optim.AdamW(1e-3, weight_decay=0.1, bias_correction=True,
                      groups=[optim.no_decay_1d()])
    worst = 0.0
    for _ in range(50):
        grads = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in flat.items()}
        upd, ref_state = ref.update({k: jnp.asarray(v) for k, v in grads.items()}, ref_state,
                                    ref_params)
        ref_params = optax.apply_updates(ref_params, upd)
        params = opt.apply_gradients(optim.utils.tree_unflatten(list(grads.items())), params)
        for k, v in _flat(params).items():
            worst = max(worst, _relerr(v, np.asarray(ref_params[k])))
    assert worst < 1e-6, worst


def test_equals_separate_optimizers_bit_for_bit() -> None:
    rng = np.random.default_rng(2)
    params = _flat(_tree(rng, np.float64))
    one_d = [k for k, v in params.items() if v.ndim <= 1]
    opt = optim.AdamW(1e-2, weight_decay=0.1, groups=[optim.no_decay_1d()])
    a = optim.AdamW(1e-2, weight_decay=0.0)
    b = optim.AdamW(1e-2, weight_decay=0.1)
    pa = {k: v for k, v in params.items() if k in one_d}
    pb = {k: v for k, v in params.items() if k not in one_d}
    for _ in range(20):
        grads = {k: rng.standard_normal(v.shape) for k, v in params.items()}
        params = opt.apply_gradients(grads, params)
        pa = a.apply_gradients({k: grads[k] for k in pa}, pa)
        pb = b.apply_gradients({k: grads[k] for k in pb}, pb)
    for k in params:
        np.testing.assert_array_equal(params[k], {**pa, **pb}[k])
    # one state for all parameters
    assert set(opt.state) >= set(params)


def test_selectors_and_scales_follow_the_schedule() -> None:
    sched = optim.linear_schedule(1.0, 0.5, 10)
    opt = optim.SGD(sched, weight_decay=0.5, groups=[
        optim.group(re.compile(r"\.b$"), weight_decay=0.0),
        optim.group(("head.*", "embed.*"), ndim=2, lr_scale=2.0, wd_scale=0.0),
        optim.group(where=lambda path, a: a.shape == (), learning_rate=0.25),
    ])
    p = {"x": {"b": np.ones(2)}, "head": {"w": np.ones((2, 2))}, "s": np.array(1.0),
         "w": np.ones((2, 2))}
    g = {k: (dict.fromkeys(v, np.zeros_like(next(iter(v.values())))) if isinstance(v, dict)
             else np.zeros_like(v)) for k, v in p.items()}
    for step in range(3):
        lr = 1.0 - 0.05 * step
        new = opt.apply_gradients(g, p)
        np.testing.assert_allclose(new["x"]["b"], p["x"]["b"])  # no decay, no gradient
        np.testing.assert_allclose(new["head"]["w"], p["head"]["w"])  # wd_scale=0
        np.testing.assert_allclose(new["s"], p["s"] * (1 - 0.25 * 0.5))  # own lr
        np.testing.assert_allclose(new["w"], p["w"] * (1 - lr * 0.5))
        p = new
    g["head"]["w"] = np.ones((2, 2))
    new = opt.apply_gradients(g, p)
    np.testing.assert_allclose(new["head"]["w"], p["head"]["w"] - 2.0 * (1.0 - 0.05 * 3))


def test_per_call_hyperparameters_apply_on_top() -> None:
    opt = optim.SGD(1.0, weight_decay=0.5, groups=[optim.no_decay_1d(learning_rate=0.5)])
    p = {"b": np.ones(2), "w": np.ones((2, 2))}
    g = {"b": np.ones(2), "w": np.zeros((2, 2))}
    new = opt.apply_gradients(g, p, hyperparameters={"weight_decay": 0.0})
    np.testing.assert_allclose(new["b"], 0.5)
    np.testing.assert_allclose(new["w"], 1.0)
    new = opt.apply_gradients(g, p, hyperparameters=lambda path: {"learning_rate": 0.1}
                              if path == "b" else None)
    np.testing.assert_allclose(new["b"], 0.9)
    np.testing.assert_allclose(new["w"], 0.5)


def test_bad_configuration_names_the_parameter() -> None:
    opt = optim.AdamW(1e-3, groups=[optim.no_decay_1d(), optim.group("*.b")])
    p = {"layer": {"b": np.ones(2, np.float32), "w": np.ones((2, 2), np.float32)}}
    before = {k: v.copy() for k, v in _flat(p).items()}
    with pytest.raises(ValueError, match=r"parameter 'layer\.b' belongs to groups\[0\].*groups\[1\]"):
        opt.apply_gradients(p, p)
    assert int(opt.step) == 0 and "layer" not in opt.state  # all-or-nothing
    assert all(np.array_equal(before[k], v) for k, v in _flat(p).items())
    with pytest.raises(ValueError, match=r"groups\[0\].*unknown hyperparameter 'wd'"):
        optim.AdamW(1e-3, groups=[optim.group("*", wd=0.0)])
    with pytest.raises(ValueError, match="wd_scale needs a weight_decay"):
        optim.Adam(1e-3, groups=[optim.group("*", wd_scale=0.0)])
    with pytest.raises(ValueError, match="give a pattern, ndim or where"):
        optim.group(weight_decay=0.0)
    with pytest.raises(ValueError, match="lr_scale must be a non-negative number"):
        optim.group("*", lr_scale=-1.0)
    with pytest.raises(TypeError, match="cannot have its own schedule"):
        optim.group("*", learning_rate=optim.cosine_decay(1.0, 10))
    with pytest.raises(TypeError, match=r"groups\[0\] is a dict"):
        optim.SGD(0.1, groups=[{"params": "*"}])
    with pytest.raises(ValueError, match="no predicate registered as 'nope'"):
        optim.SGD(0.1, groups=[optim.group(where="nope")]).apply_gradients(p, p)


def test_checkpoint_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    optim.register_predicate("is_scalar_test", lambda path, a: a.ndim == 0)
    groups = [optim.group(ndim=1, weight_decay=0.0), optim.group(re.compile("^head", re.I), lr_scale=3.0),
              optim.group(("embed.*",), ndim=2, wd_scale=2.0, name="emb"),
              optim.group(where="is_scalar_test", learning_rate=0.5)]
    rng = np.random.default_rng(3)
    params = _flat(_tree(rng))
    opt = optim.AdamW(optim.cosine_decay(1e-2, 100), weight_decay=0.1, groups=groups)
    grads = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in params.items()}
    params = opt.apply_gradients(grads, params)
    optim.save(tmp_path / "c.safetensors", opt)
    back = optim.load(tmp_path / "c.safetensors")
    assert [repr(g) for g in back.groups] == [repr(g) for g in opt.groups]
    a, b = opt.apply_gradients(grads, params), back.apply_gradients(grads, params)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    bad = optim.AdamW(1e-3, groups=[optim.group(where=lambda path, a: True)])
    with pytest.raises(TypeError, match="register_predicate"):
        optim.save(tmp_path / "d.safetensors", bad)
    assert not (tmp_path / "d.safetensors").exists()
    with pytest.raises(CheckpointError):
        optim.io._build({"class": "SGD", "hyperparameters": {},
                         "groups": [{"values": {"nope": 1}, "ndim": [1]}]}, None, None)


def test_torch_param_groups_helper_needs_the_base_value() -> None:
    torch = pytest.importorskip("torch")
    from anyoptim.torch import param_groups

    model = torch.nn.Sequential(torch.nn.Embedding(4, 3), torch.nn.Linear(3, 2))
    with pytest.raises(ValueError, match="pass lr="):
        param_groups(model, [optim.group("0.*", lr_scale=10.0)])
    pg = param_groups(model, [optim.no_decay_1d(), optim.group("0.*", lr_scale=10.0,
                                                                 learning_rate=1e-2)])
    assert [len(g["params"]) for g in pg] == [1, 1, 1]
    assert pg[1]["lr"] == pytest.approx(0.1)


def test_every_library() -> None:
    for mod in ("torch", "jax.numpy", "mlx.core"):
        lib = pytest.importorskip(mod) if mod != "mlx.core" else None
        if mod == "mlx.core":
            try:
                import mlx.core as lib  # type: ignore[no-redef]
            except ImportError:
                continue
        opt = optim.AdamW(1e-2, weight_decay=0.1, groups=[optim.no_decay_1d()])
        as_lib = (lib.tensor if mod == "torch" else lib.array)  # type: ignore[union-attr]
        p = {"w": as_lib(np.ones((2, 2), np.float32)), "b": as_lib(np.ones(2, np.float32))}
        g = {"w": as_lib(np.zeros((2, 2), np.float32)), "b": as_lib(np.zeros(2, np.float32))}
        new = opt.apply_gradients(g, p)
        np.testing.assert_allclose(np.asarray(new["b"]), 1.0)
        np.testing.assert_allclose(np.asarray(new["w"]), 1 - 1e-3, rtol=1e-6)


def test_under_jax_jit() -> None:
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    opt = optim.AdamW(1e-2, weight_decay=0.1, groups=[optim.no_decay_1d()])
    p = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
    opt.init(p)
    traces = []

    def step(p, g, s):  # type: ignore[no-untyped-def]
        traces.append(1)
        return opt.pure_step(p, g, s)

    fn = jax.jit(step)
    s = opt.state
    g = {"w": jnp.zeros((2, 2)), "b": jnp.zeros(2)}
    for _ in range(3):
        p, s = fn(p, g, s)
    assert len(traces) == 1
    np.testing.assert_allclose(np.asarray(p["b"]), 1.0)
    np.testing.assert_allclose(np.asarray(p["w"]), (1 - 1e-3) ** 3, rtol=1e-6)
