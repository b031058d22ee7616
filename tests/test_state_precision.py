"""State precision (state_dtype=) and stochastic rounding of bfloat16 parameters."""

from __future__ import annotations

import numpy as np
import pytest

import anyoptim as optim
from anyoptim import _backend
from anyoptim.optimizers._precision import round_with_bits

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
SHAPES = [(), (7,), (5, 3), (4, 2, 3)]


def _params(rng: np.random.Generator, dtype: object = np.float32) -> dict:
    return {f"p{i}": rng.standard_normal(s).astype(np.float32).astype(dtype)
            for i, s in enumerate(SHAPES)}


def _grads(rng: np.random.Generator, like: dict) -> dict:
    return {k: rng.standard_normal(v.shape).astype(np.float32).astype(v.dtype)
            for k, v in like.items()}


@pytest.mark.parametrize("name", ["bfloat16", "float16"])
@pytest.mark.parametrize("make", [lambda: optim.AdamW(1e-2, weight_decay=0.1),
                                  lambda: optim.Lion(1e-3, weight_decay=0.1),
                                  lambda: optim.Adafactor(1e-2)], ids=["AdamW", "Lion", "Adafactor"])
def test_low_precision_moments_equal_fp32_maths_then_a_cast(name: str, make) -> None:  # type: ignore[no-untyped-def]
    """The reference: float32 maths, then each state array cast to the 16-bit dtype and back
    (ml_dtypes) after every step."""
    low = BF16 if name == "bfloat16" else np.dtype(np.float16)
    rng = np.random.default_rng(0)
    params = ref_params = _params(rng)
    opt, ref = make(), make()
    opt.state_dtype = name
    for _ in range(50):
        grads = _grads(rng, params)
        params = opt.apply_gradients(grads, params)
        ref_params = ref.apply_gradients(grads, ref_params)
        for k in ref_params:
            for key, v in ref.state[k].items():
                if v.dtype == np.float32:
                    ref.state[k][key] = v.astype(low).astype(np.float32)
    for k in params:
        assert params[k].dtype == np.float32
        assert all(v.dtype == low for v in opt.state[k].values() if v.dtype.kind in "fV")
        np.testing.assert_array_equal(params[k], ref_params[k])


def test_float32_moments_for_bfloat16_parameters() -> None:
    """bfloat16 parameters, float32 state: float32 maths, the parameter rounded (to nearest)."""
    rng = np.random.default_rng(1)
    params = _params(rng, BF16)
    ref_params = {k: v.astype(np.float32) for k, v in params.items()}
    opt = optim.AdamW(1e-2, weight_decay=0.1, state_dtype="float32")
    ref = optim.AdamW(1e-2, weight_decay=0.1)
    for _ in range(50):
        grads = _grads(rng, params)
        params = opt.apply_gradients(grads, params)
        ref_params = ref.apply_gradients({k: g.astype(np.float32) for k, g in grads.items()},
                                         ref_params)
        ref_params = {k: v.astype(BF16).astype(np.float32) for k, v in ref_params.items()}
    for k in params:
        assert params[k].dtype == BF16 and opt.state[k]["m"].dtype == np.float32
        np.testing.assert_array_equal(params[k].astype(np.float32), ref_params[k])


def test_fused_paths_agree_with_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    base = _params(rng)
    grads = [_grads(rng, base) for _ in range(5)]
    results, eager = [], []
    for fused in (True, False):
        monkeypatch.setenv("ANYOPTIM_DISABLE_FUSED", "0" if fused else "1")
        for lib in ("numpy", "torch"):
            conv = (lambda a: a) if lib == "numpy" else torch.tensor
            opt = optim.Adam(1e-2, state_dtype="bfloat16")
            p = {k: conv(v) for k, v in base.items()}
            for g in grads:
                p = opt.apply_gradients({k: conv(v) for k, v in g.items()}, p)
            assert str(opt.state["p1"]["m"].dtype).endswith("bfloat16")
            out = {k: np.asarray(v) for k, v in p.items()}
            (eager if lib == "torch" and not fused else results).append(out)
    # the fused NumPy and torch kernels and NumPy's array path are bit-identical; torch's eager
    # ops round differently from them by about an ulp even with float32 state (as on main
    # without state_dtype), so that path is held to float32 rounding
    for other in results[1:]:
        for k in base:
            np.testing.assert_array_equal(results[0][k], other[k])
    for k in base:
        np.testing.assert_allclose(eager[0][k], results[0][k], rtol=1e-6, atol=1e-7)


def test_in_place_update_of_a_torch_module() -> None:
    torch = pytest.importorskip("torch")
    model = torch.nn.Linear(3, 2).to(torch.bfloat16)
    opt = optim.AdamW(1e-2, state_dtype="float32", stochastic_rounding=True)
    weight = model.weight
    for _ in range(3):
        model.zero_grad()
        model(torch.ones(4, 3, dtype=torch.bfloat16)).sum().backward()
        opt.update(model, optim.module_grads(model))
    assert model.weight is weight and weight.dtype == torch.bfloat16
    assert opt.state["weight"]["m"].dtype == torch.float32


# ----------------------------------------------------------------------------- rounding
def test_rounding_with_given_bits_is_deterministic() -> None:
    half = np.array([1 + 2.0 ** -8, -(1 + 2.0 ** -8)], np.float32)  # halfway between neighbours
    down = round_with_bits(half, np.array([0x7FFF, 0x7FFF]), BF16)
    up = round_with_bits(half, np.array([0x8000, 0x8000]), BF16)
    np.testing.assert_array_equal(down.astype(np.float32), [1.0, -1.0])
    np.testing.assert_array_equal(up.astype(np.float32), [1 + 2.0 ** -7, -(1 + 2.0 ** -7)])
    special = np.array([np.nan, np.inf, -np.inf, 0.0], np.float32)
    out = round_with_bits(special, np.full(4, 0xFFFF), BF16).astype(np.float32)
    assert np.isnan(out[0]) and list(out[1:]) == [np.inf, -np.inf, 0.0]


@pytest.mark.parametrize("lib", ["numpy", "torch", "jax"])
def test_rounding_is_a_neighbour_and_unbiased(lib: str) -> None:
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(4096) * 10).astype(np.float32)
    lo = x.astype(BF16)  # nearest; the neighbours are lo and its next value toward x
    lo32 = lo.astype(np.float32)
    other = np.nextafter(lo, np.where(x > lo32, np.inf, -np.inf).astype(BF16)).astype(np.float32)
    bits = rng.integers(0, 1 << 16, x.shape).astype(np.uint32)
    if lib == "numpy":
        out = round_with_bits(x, bits, BF16).astype(np.float32)
    elif lib == "torch":
        torch = pytest.importorskip("torch")
        out = round_with_bits(torch.tensor(x), torch.tensor(bits.astype(np.int32)),
                              torch.bfloat16).float().numpy()
    else:
        jnp = pytest.importorskip("jax.numpy")
        out = np.asarray(round_with_bits(jnp.asarray(x), jnp.asarray(bits), jnp.bfloat16)
                         .astype(jnp.float32))
    assert np.all((out == lo32) | (out == other))
    # unbiased: the mean of many roundings of one value is the value
    value = np.full(200_000, 1 + 0.3 * 2.0 ** -7, np.float32)
    samples = round_with_bits(value, rng.integers(0, 1 << 16, value.shape), BF16)
    mean = samples.astype(np.float64).mean()
    sigma = 2.0 ** -7 * np.sqrt(0.3 * 0.7 / value.size)
    assert abs(mean - value[0]) < 5 * sigma


def test_optimizer_with_injected_bits() -> None:
    rng = np.random.default_rng(4)
    params = _params(rng, BF16)
    grads = _grads(rng, params)
    zero = optim.SGD(0.1, stochastic_rounding=lambda shape, like: np.zeros(shape, np.uint32))
    ref = optim.SGD(0.1)
    new = zero.apply_gradients(grads, params)
    exact = ref.apply_gradients({k: g.astype(np.float32) for k, g in grads.items()},
                                {k: p.astype(np.float32) for k, p in params.items()})
    for k in new:  # zero bits: truncation toward zero of the float32 result
        trunc = (exact[k].view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)
        np.testing.assert_array_equal(new[k].astype(np.float32), trunc)
    sr = optim.SGD(0.1, stochastic_rounding=True)
    for _ in range(3):
        params = sr.apply_gradients(grads, params)
    assert all(v.dtype == BF16 for v in params.values())


def test_stochastic_rounding_under_jax_jit() -> None:
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    opt = optim.SGD(1e-3, stochastic_rounding=True)
    p = {"w": jnp.ones((64,), jnp.bfloat16)}
    opt.init(p)
    traces = []

    def step(p, g, s):  # type: ignore[no-untyped-def]
        traces.append(1)
        return opt.pure_step(p, g, s)

    fn = jax.jit(step)
    s = opt.state
    g = {"w": jnp.ones((64,), jnp.bfloat16)}
    for _ in range(10):
        p, s = fn(p, g, s)
    assert len(traces) == 1 and p["w"].dtype == jnp.bfloat16
    # round to nearest would never move 1.0 by 1e-3 (spacing 2**-8 below 1); SR moves it
    assert float(jnp.mean(p["w"].astype(jnp.float32))) < 1.0


def test_checkpoint_keeps_the_precision(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(5)
    params = _params(rng)
    opt = optim.AdamW(1e-2, state_dtype="bfloat16", groups=[optim.no_decay_1d()])
    grads = _grads(rng, params)
    params = opt.apply_gradients(grads, params)
    optim.save(tmp_path / "c.safetensors", opt)
    back = optim.load(tmp_path / "c.safetensors")
    assert back.state_dtype == "bfloat16" and back.state["p1"]["m"].dtype == BF16
    a, b = opt.apply_gradients(grads, params), back.apply_gradients(grads, params)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_bad_state_dtype() -> None:
    with pytest.raises(ValueError, match="state_dtype must be one of"):
        optim.Adam(1e-3, state_dtype="int8")


def state_bytes_per_parameter(make, dtype: object, state_dtype: str | None) -> float:  # type: ignore[no-untyped-def]
    params = {"w": np.zeros((256, 256), np.float32).astype(dtype)}
    opt = make()
    opt.state_dtype = state_dtype
    opt.init(params)
    return sum(v.nbytes for v in opt.state["w"].values()) / params["w"].size


def test_memory_per_parameter() -> None:
    adam = lambda: optim.AdamW(1e-3)  # noqa: E731
    assert state_bytes_per_parameter(adam, np.float32, None) == 8
    assert state_bytes_per_parameter(adam, np.float32, "bfloat16") == 4
    assert state_bytes_per_parameter(adam, np.float32, "float16") == 4
    assert state_bytes_per_parameter(adam, BF16, "float32") == 8
    assert state_bytes_per_parameter(adam, BF16, None) == 4
    assert _backend is not None
