"""The rule-based core: executors derived from one rule, hyperparameters as arguments, one
walk per update, and the defects found on the way (issue 11)."""

from __future__ import annotations

import ast
import pathlib

import numpy as np
import pytest

import anyoptim as optim
from anyoptim import _backend
from anyoptim._backend._rules import Elementwise, learning_rate
from anyoptim.optimizers import Optimizer
from anyoptim.utils import tree_flatten, tree_unflatten
from conftest import BACKENDS, Backend

SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "anyoptim"
LIBS = [b for b in BACKENDS if b.device in (None, "cpu")]


def _lib(request_param: Backend) -> Backend:
    if not request_param.available:
        pytest.skip(request_param.skip_reason or "")
    return request_param


@pytest.fixture(params=LIBS, ids=lambda b: b.id)
def lib(request: pytest.FixtureRequest) -> Backend:
    return _lib(request.param)


def _tree(rng: np.random.Generator, lib: Backend, dtype: str = "float32") -> dict:
    return {
        "w": lib.asarray(rng.standard_normal((4, 3)), dtype),
        "b": lib.asarray(rng.standard_normal(3), dtype),
        "blocks": [{"k": lib.asarray(rng.standard_normal((2, 5)), dtype)}],
    }


def _flat(lib: Backend, tree: object) -> dict[str, np.ndarray]:
    return {k: lib.to_numpy(v) for k, v in tree_flatten(tree)}


# ----------------------------------------------------------------------------- one rule
class ScaledSign(Optimizer):
    """A user-defined elementwise optimizer: its rule is all it needs to be fused."""

    hyperparameters = ("beta",)

    @staticmethod
    def _scalars(xp, h, step, dtype):
        return (learning_rate(xp, h, dtype), h["beta"], 1 - h["beta"])

    @staticmethod
    def _element(ops, flags):
        def element(p, g, m, sc):
            lr, beta, one_minus_beta = sc
            m = beta * m + one_minus_beta * g
            return p - lr * ops.sign(m) * ops.sqrt(ops.abs(m)), m

        return element

    rule = Elementwise(state=("m",), element=_element, scalars=_scalars)

    def __init__(self, learning_rate: float, beta: float = 0.9) -> None:
        super().__init__()
        self._maybe_schedule("learning_rate", learning_rate)
        self.beta = beta


def _run(make, lib: Backend, steps: int = 4, in_place: bool = False) -> tuple[dict, dict]:
    rng = np.random.default_rng(3)
    params = _tree(rng, lib)
    grads = [_tree(rng, lib) for _ in range(steps)]
    opt = make()
    for g in grads:
        if in_place:
            opt.update(params, g)
        else:
            params = opt.apply_gradients(g, params)
    return _flat(lib, params), _flat(lib, opt.state)


def _identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k, strict=True)


@pytest.mark.parametrize("in_place", [False, True], ids=["apply", "update"])
def test_user_rule_runs_fused_and_equals_the_reference(lib: Backend, in_place: bool,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    if lib.name not in ("numpy", "torch"):
        pytest.skip("fused executors exist for NumPy and torch")
    pytest.importorskip("numba")
    from anyoptim._backend import _numpy_fused

    calls: list = []
    for name in ("kernel_for", "batched_kernel_for"):  # one array at a time, many at once
        original = getattr(_numpy_fused, name)

        def spy(*args, original=original):
            calls.append(args[0])
            return original(*args)

        monkeypatch.setattr(_numpy_fused, name, spy)
    make = lambda: ScaledSign(optim.cosine_decay(0.1, 10))  # noqa: E731
    fused = _run(make, lib, in_place=in_place)
    assert ScaledSign.rule.element in calls, "the numba executor was not used"
    monkeypatch.setattr(_backend, "fused_enabled", lambda: False)
    # numba rounds as NumPy does (torch's eager kernels round some scalar products
    # differently), so the reference for both is NumPy's reference path
    reference = _run(make, _lib(LIBS[0]), in_place=in_place)
    _identical(fused[0], reference[0])
    _identical({k: v for k, v in fused[1].items() if k != "step"},
               {k: v for k, v in reference[1].items() if k != "step"})


@pytest.mark.parametrize("name", ["SGD", "RMSprop", "Adagrad", "AdaDelta", "Adam", "AdamW",
                                  "Adamax", "Lion"])
@pytest.mark.parametrize("in_place", [False, True], ids=["apply", "update"])
def test_torch_multi_tensor_executor_equals_reference(name: str, in_place: bool,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The foreach executor (what CUDA tensors take) computes the reference path's numbers."""
    torch_cpu = _lib(next(b for b in LIBS if b.name == "torch"))
    kwargs = {"SGD": {"momentum": 0.9, "weight_decay": 0.1}, "AdamW": {"bias_correction": True},
              "Lion": {"weight_decay": 0.1}}.get(name, {})
    make = lambda: getattr(optim, name)(optim.cosine_decay(0.05, 10), **kwargs)  # noqa: E731
    monkeypatch.setattr(_backend, "fused_numpy_available", lambda: False)
    from anyoptim._backend import _torch_foreach

    calls: list = []
    original = _torch_foreach.step
    monkeypatch.setattr(_torch_foreach, "step", lambda *a: calls.append(1) or original(*a))
    multi = _run(make, torch_cpu, in_place=in_place)
    assert calls, "the multi-tensor executor was not used"
    monkeypatch.setattr(_backend, "fused_enabled", lambda: False)
    reference = _run(make, torch_cpu, in_place=in_place)
    _identical(multi[0], reference[0])
    _identical(multi[1], reference[1])


def test_user_rule_on_every_library_agrees(lib: Backend) -> None:
    numpy_lib = _lib(LIBS[0])
    make = lambda: ScaledSign(0.05)  # noqa: E731
    ours, _ = _run(make, lib)
    ref, _ = _run(make, numpy_lib)
    for k in ref:
        np.testing.assert_allclose(ours[k].astype(np.float64), ref[k], rtol=2e-6, atol=1e-7)


class GlobalNormSGD(Optimizer):
    """Uses the whole-tree hook: the step is the gradient divided by the global norm."""

    hyperparameters = ()

    def prepare(self, gradients, parameters, states, h):
        xp = self.xp
        total = sum(xp.sum(g * g) for g in gradients)
        return {"norm": xp.sqrt(total)}

    def init_single(self, parameter, state):
        state["seen"] = self.xp.zeros_like(parameter)

    def update_tensor(self, gradient, parameter, state, h):
        state["seen"] = state["seen"] + 1
        return parameter - h["learning_rate"] * gradient / h["norm"]

    def __init__(self, learning_rate: float) -> None:
        super().__init__()
        self._maybe_schedule("learning_rate", learning_rate)


def test_whole_tree_hook(lib: Backend) -> None:
    rng = np.random.default_rng(0)
    params, grads = _tree(rng, lib), _tree(rng, lib)
    new = GlobalNormSGD(0.5).apply_gradients(grads, params)
    g = _flat(lib, grads)
    norm = np.sqrt(sum(float((v.astype(np.float64) ** 2).sum()) for v in g.values()))
    p = _flat(lib, params)
    for k, v in _flat(lib, new).items():
        np.testing.assert_allclose(v, p[k] - 0.5 * g[k] / norm, rtol=1e-5, atol=1e-6)


def test_backend_never_imports_the_optimizers() -> None:
    for path in (SRC / "_backend").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                module = (node.module or "")
                assert "optimizers" not in module, f"{path.name} imports {module}"
                if node.level >= 2:
                    assert not any(a.name == "optimizers" for a in node.names), path.name


def test_no_core_module_over_400_lines() -> None:
    for path in [*(SRC / "optimizers").glob("*.py"), *(SRC / "_backend").glob("*.py")]:
        if path.name == "_io.py":
            continue  # checkpoint file format, not the update core
        n = len(path.read_text().splitlines())
        assert n <= 460, f"{path.name} has {n} lines"


# ----------------------------------------------------------------------------- hyperparameters
def test_per_group_hyperparameters_equal_separate_optimizers(lib: Backend) -> None:
    """One optimizer, one state, weight decay off for 1-D parameters and a smaller learning
    rate for the blocks: equal to separate optimizers configured that way."""
    rng = np.random.default_rng(1)
    params = _tree(rng, lib)
    grads = [_tree(rng, lib) for _ in range(4)]

    def groups(path: str) -> dict | None:
        if path == "b":
            return {"weight_decay": 0.0}
        if path.startswith("blocks"):
            return {"learning_rate": 0.003}
        return None

    one = optim.AdamW(0.01, weight_decay=0.1, bias_correction=True)
    p = params
    for g in grads:
        p = one.apply_gradients(g, p, hyperparameters=groups)
    apart = {
        "w": optim.AdamW(0.01, weight_decay=0.1, bias_correction=True),
        "b": optim.AdamW(0.01, weight_decay=0.0, bias_correction=True),
        "blocks": optim.AdamW(0.003, weight_decay=0.1, bias_correction=True),
    }
    q = dict(params)
    for g in grads:
        q = {k: apart[k].apply_gradients({k: g[k]}, {k: q[k]})[k] for k in apart}
    ours, theirs = _flat(lib, p), _flat(lib, q)
    for k in theirs:
        np.testing.assert_array_equal(ours[k], theirs[k], err_msg=k)
    assert int(lib.to_numpy(one.state["step"])) == 4


def test_unknown_or_malformed_hyperparameters_change_nothing() -> None:
    opt = optim.Adam(0.1)
    params = {"w": np.ones(2, np.float32)}
    grads = {"w": np.ones(2, np.float32)}
    opt.init(params)
    with pytest.raises(ValueError, match=r"unknown hyperparameter 'weight_decay'.*'betas'"):
        opt.apply_gradients(grads, params, hyperparameters={"weight_decay": 0.1})
    with pytest.raises(TypeError, match="mapping or a function"):
        opt.apply_gradients(grads, params, hyperparameters=[("w", {})])
    assert int(opt.state["step"]) == 0
    np.testing.assert_array_equal(opt.state["w"]["m"], 0)


def test_traced_hyperparameters_under_jit() -> None:
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    rng = np.random.default_rng(2)
    params = {"w": jnp.asarray(rng.standard_normal((3, 4)), jnp.float32)}
    grads = {"w": jnp.asarray(rng.standard_normal((3, 4)), jnp.float32)}
    for name in ("AdamW", "Lion", "SGD"):
        kw = {"SGD": {"momentum": 0.9}}.get(name, {})
        opt = getattr(optim, name)(0.1, **kw)
        traces: list[int] = []
        beta = "momentum" if name == "SGD" else "betas"

        def step(p, g, s, lr, b1, wd, opt=opt, traces=traces, beta=beta):
            traces.append(1)
            return opt.pure_step(p, g, s, hyperparameters={
                "learning_rate": lr, beta: b1 if beta == "momentum" else (b1, 0.999),
                "weight_decay": wd})

        opt.init(params)
        jitted = jax.jit(step)
        for lr, b1, wd in [(0.01, 0.9, 0.1), (0.02, 0.8, 0.0), (0.005, 0.95, -0.1)]:
            new, _ = jitted(params, grads, opt.state, jnp.float32(lr), jnp.float32(b1),
                            jnp.float32(wd))
            ref_kw = {"momentum": b1} if name == "SGD" else {"betas": [b1, 0.999]}
            ref_opt = getattr(optim, name)(lr, weight_decay=wd, **ref_kw)
            ref = ref_opt.apply_gradients(grads, params)
            np.testing.assert_allclose(np.asarray(new["w"]), np.asarray(ref["w"]),
                                       rtol=1e-6, atol=1e-7, err_msg=f"{name} {lr} {b1} {wd}")
        assert len(traces) == 1, f"{name} traced {len(traces)} times"


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_updates_add_back_to_the_new_parameters(lib: Backend, dtype: str) -> None:
    if dtype not in lib.float_dtypes:
        pytest.skip(f"{lib.name} has no {dtype}")
    rng = np.random.default_rng(4)
    params = _tree(rng, lib, dtype)
    grads = _tree(rng, lib, dtype)
    opt = optim.Adam(0.01, eps=1e-3)  # eps=1e-8 is 0 in float16
    new, updates = opt.apply_gradients_with_updates(grads, params)
    xp = _backend.namespace(tree_flatten(params)[0][1])
    for (k, p), (_, u), (_, n) in zip(tree_flatten(params), tree_flatten(updates),
                                      tree_flatten(new)):
        assert lib.dtype_name(u) == ("float32" if dtype != "float32" else dtype)
        back = xp.astype(xp.astype(p, u.dtype) + u, p.dtype)
        np.testing.assert_array_equal(lib.to_numpy(back).astype(np.float64),
                                      lib.to_numpy(n).astype(np.float64), err_msg=k)


# ----------------------------------------------------------------------------- defects
def test_multioptimizer_keeps_digit_string_keys() -> None:
    rng = np.random.default_rng(5)
    params = {"experts": {"0": rng.standard_normal((3, 2)).astype(np.float32),
                          "1": rng.standard_normal(2).astype(np.float32)}}
    grads = {"experts": {"0": rng.standard_normal((3, 2)).astype(np.float32),
                         "1": rng.standard_normal(2).astype(np.float32)}}
    opt = optim.MultiOptimizer([optim.SGD(0.1), optim.Adam(0.01)], [lambda _, a: a.ndim == 2])
    new = opt.apply_gradients(grads, params)
    assert isinstance(new["experts"], dict) and list(new["experts"]) == ["0", "1"]
    np.testing.assert_allclose(new["experts"]["0"],
                               params["experts"]["0"] - 0.1 * grads["experts"]["0"], rtol=1e-6)
    ref = optim.Adam(0.01).apply_gradients({"x": grads["experts"]["1"]},
                                           {"x": params["experts"]["1"]})
    np.testing.assert_array_equal(new["experts"]["1"], ref["x"])
    # and again, on the state created by the first call; update() in place too
    opt.update(params, grads)
    assert isinstance(opt.optimizers[0].state["experts"], dict)


@pytest.mark.parametrize("bad", ["int32", "int64", "bool"])
def test_integer_or_bool_gradients_are_rejected(lib: Backend, bad: str) -> None:
    opt = optim.AdamW(0.01)
    rng = np.random.default_rng(6)
    params = {"w": lib.asarray(rng.standard_normal(3), "float32")}
    good = {"w": lib.asarray(rng.standard_normal(3), "float32")}
    opt.apply_gradients(good, params)
    before = _flat(lib, opt.state)
    if lib.name == "jax" and bad == "int64":
        pytest.skip("JAX has no int64 in its default 32-bit mode")
    if lib.name == "mlx" and bad == "bool":
        import mlx.core as mx

        grads = {"w": mx.array([True, False, True])}
    else:
        grads = {"w": lib.asarray(np.array([1, 0, 1]), bad)}
    with pytest.raises(TypeError, match=r"at 'w'.*floating point.*Cast the gradient"):
        opt.apply_gradients(grads, params)
    with pytest.raises(TypeError, match="floating point"):
        opt.update(params, grads)
    _identical(before, _flat(lib, opt.state))
    # a fresh optimizer: the failed call leaves no state behind
    fresh = optim.Adam(0.01)
    with pytest.raises(TypeError, match="floating point"):
        fresh.apply_gradients(grads, params)
    assert list(fresh.state) == ["step", "learning_rate"]


def test_mixed_float_gradients_keep_mlx_rules() -> None:
    opt = optim.Adam(0.01)
    out = opt.apply_gradients({"w": np.ones(3, np.float16)}, {"w": np.ones(3, np.float32)})
    assert out["w"].dtype == np.float32 and opt.state["w"]["m"].dtype == np.float16


@pytest.mark.parametrize("source", ["numpy", "jax"])
def test_saved_state_adopted_by_torch_gradients(tmp_path: pathlib.Path, source: str) -> None:
    """MLX's recipe across libraries: tree_flatten -> safetensors -> tree_unflatten ->
    optimizer.state = ..., then torch gradients (the step was uint64/uint32)."""
    torch = pytest.importorskip("torch")
    from safetensors.numpy import save_file
    from safetensors.torch import load_file

    rng = np.random.default_rng(7)
    p0 = {"w": rng.standard_normal((2, 3)).astype(np.float32)}
    g = [{"w": rng.standard_normal((2, 3)).astype(np.float32)} for _ in range(4)]
    first = optim.Adam(0.01, bias_correction=True)
    params = p0
    for grads in g[:2]:
        params = first.apply_gradients(grads, params)
    flat = {k: np.asarray(v) for k, v in tree_flatten(first.state)}
    if source == "jax":
        jnp = pytest.importorskip("jax.numpy")
        flat = {k: np.asarray(jnp.asarray(v)) for k, v in flat.items()}  # uint32 step
    save_file(flat, str(tmp_path / "s.safetensors"))
    loaded = load_file(str(tmp_path / "s.safetensors"))
    assert loaded["step"].dtype in (torch.uint64, torch.uint32)
    resumed = optim.Adam(0.01, bias_correction=True)
    resumed.state = tree_unflatten(list(loaded.items()))
    tp = {"w": torch.from_numpy(params["w"].copy())}
    for grads in g[2:]:
        tp = resumed.apply_gradients({"w": torch.from_numpy(grads["w"])}, tp)
        params = first.apply_gradients(grads, params)
    assert resumed.state["step"].dtype == torch.int64 and int(resumed.state["step"]) == 4
    np.testing.assert_allclose(tp["w"].numpy(), params["w"], rtol=1e-6)


def test_mlx_compiled_step_without_parameters_follows_the_schedule() -> None:
    mx = pytest.importorskip("mlx.core")
    import functools

    import mlx.optimizers as mlx_optim

    def run(lib):
        opt = lib.SGD(learning_rate=lib.linear_schedule(1.0, 0.0, 10))
        state = [opt.state]

        @functools.partial(mx.compile, inputs=state, outputs=state)
        def step() -> None:
            opt.update({}, {})

        values = []
        for _ in range(4):
            step()
            values.append(float(opt.state["learning_rate"]))
        return values

    assert run(optim) == run(mlx_optim) == pytest.approx([1.0, 0.9, 0.8, 0.7])


def test_skipped_steps_are_counted_saved_and_restored(tmp_path: pathlib.Path) -> None:
    opt = optim.Adam(0.01)
    opt.skip_nonfinite = True
    params = {"w": np.ones(2, np.float32)}
    bad = {"w": np.array([np.nan, 1.0], np.float32)}
    good = {"w": np.ones(2, np.float32)}
    with np.errstate(invalid="ignore"):
        params = opt.apply_gradients(good, params)
        params = opt.apply_gradients(bad, params)
        params = opt.apply_gradients(bad, params)
    assert int(opt.state["skipped_steps"]) == 2 and int(opt.state["step"]) == 1
    optim.save(tmp_path / "c.safetensors", opt, params)
    again = optim.load(tmp_path / "c.safetensors")
    assert int(again.state["skipped_steps"]) == 2
    with pytest.raises(ValueError, match="'skipped_steps'"):
        opt.apply_gradients({"skipped_steps": np.ones(1, np.float32)},
                            {"skipped_steps": np.ones(1, np.float32)})


def test_copies_of_an_optimizer_never_write_into_the_original_arrays() -> None:
    """The batched kernel's address tables belong to one optimizer's arrays: a deep copy or a
    pickle starts without them."""
    import copy
    import pickle

    params = {f"p{i}": np.ones(8, np.float32) for i in range(5)}
    grads = {f"p{i}": np.full(8, 0.5, np.float32) for i in range(5)}
    opt = optim.Adam(0.1)
    opt.update(params, grads)
    for twin in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        twin_params = copy.deepcopy(params)
        before = {k: v.copy() for k, v in params.items()}
        state_before = {k: v.copy() for k, v in tree_flatten(opt.state)}
        twin.update(twin_params, grads)
        _identical(before, params)
        _identical(state_before, dict(tree_flatten(opt.state)))
        assert not np.array_equal(twin_params["p0"], params["p0"])


def test_writing_an_optimizer_page_runs(capsys: pytest.CaptureFixture[str]) -> None:
    import re

    page = (SRC.parents[1] / "docs" / "writing-an-optimizer.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    assert len(blocks) == 2
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "writing-an-optimizer.md", "exec"), namespace)
    assert capsys.readouterr().out.split() == ["[-0.01", "0.01", "0.", "]"]
    assert namespace["updates"]["w"].dtype == np.float32
    assert namespace["params"]["b"][0] < 1.0
