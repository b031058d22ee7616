"""The batched NumPy kernel (one checked call over every leaf): results, checks, all-or-nothing.

The leaves are checked from their array headers at every call, so nothing learned at one call
may be trusted at the next: replaced arrays, other dtypes, shapes or trees must be seen.
"""

from __future__ import annotations

import weakref

import numpy as np
import pytest

import anyoptim as optim
from anyoptim import _backend
from anyoptim._backend import _numpy_batch, _numpy_fused
from anyoptim.utils import tree_flatten, tree_map

pytest.importorskip("numba")


@pytest.fixture
def batched(monkeypatch: pytest.MonkeyPatch) -> list:
    """The element functions the batched kernel ran, one entry per call."""
    calls: list = []
    original = _numpy_fused.batched_kernel_for

    def spy(element, *args):
        kernel = original(element, *args)

        def counted(*a):
            calls.append(element)
            return kernel(*a)

        return counted

    monkeypatch.setattr(_numpy_fused, "batched_kernel_for", spy)
    return calls


def _reference(make, grads, params, in_place=False):
    """The same steps on the reference path (no fused executor): ``apply_gradients``, or
    ``update`` on ``params`` with ``in_place``."""
    saved = _backend.fused_numpy_available
    _backend.fused_numpy_available = lambda: False
    try:
        opt = make()
        for g in grads:
            if in_place:
                opt.update(params, g)
            else:
                params = opt.apply_gradients(g, params)
        return params, opt.state
    finally:
        _backend.fused_numpy_available = saved


def _identical(a, b) -> None:
    fa, fb = tree_flatten(a), tree_flatten(b)
    assert [k for k, _ in fa] == [k for k, _ in fb]
    for (k, x), (_, y) in zip(fa, fb):
        np.testing.assert_array_equal(x, y, err_msg=k, strict=True)


def _tree(rng, dtype=np.float32):
    shapes = [(3, 4), (), (0, 2), (5,), (_numpy_batch.CHUNK * 2 + 5,), (7, 1, 2)]
    return {
        "layers": [{"w": rng.standard_normal(s).astype(dtype)} for s in shapes],
        "many": {f"t{i}": rng.standard_normal(3).astype(dtype) for i in range(50)},
    }


def test_header_layout_is_recognised() -> None:
    assert _numpy_batch.layout_ok()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batched_update_and_apply_equal_the_reference(batched, dtype) -> None:
    rng = np.random.default_rng(0)
    params = _tree(rng, dtype)
    grads = [_tree(rng, dtype) for _ in range(4)]

    def make():
        return optim.AdamW(optim.cosine_decay(0.05, 6), bias_correction=True)

    expected, expected_state = _reference(make, grads, params)
    in_place = make()
    live = tree_map(lambda a: a.copy(), params)
    for g in grads:
        in_place.update(live, g)
    functional = make()
    out = params
    for g in grads:
        out = functional.apply_gradients(g, out)
    assert len(batched) == 2 * len(grads)
    _identical(live, expected)
    _identical(out, expected)
    _identical(in_place.state, expected_state)
    _identical(functional.state, expected_state)


def test_replaced_state_array_is_updated(batched) -> None:
    params = {"a": np.ones(4, np.float32), "b": np.ones(3, np.float32)}
    grads = {"a": np.full(4, 0.5, np.float32), "b": np.full(3, 0.5, np.float32)}
    opt = optim.Adam(0.1)
    opt.update(params, grads)
    old = opt.state["b"]["m"]
    kept = old.copy()
    opt.state["b"]["m"] = np.zeros(3, np.float32)
    new = opt.state["b"]["m"]
    opt.update(params, grads)
    assert opt.state["b"]["m"] is new
    np.testing.assert_array_equal(old, kept)  # the replaced array is not written any more
    np.testing.assert_array_equal(new, np.full(3, 0.05, np.float32))  # 0.9 * 0 + 0.1 * 0.5
    assert batched


def test_replaced_parameter_array_is_updated(batched) -> None:
    params = {"a": np.ones(4, np.float32)}
    grads = {"a": np.full(4, 0.5, np.float32)}
    opt = optim.SGD(0.1)
    opt.update(params, grads)
    old = params["a"]
    params["a"] = np.zeros(4, np.float32)
    opt.update(params, grads)
    np.testing.assert_array_equal(old, np.full(4, 0.95, np.float32))
    np.testing.assert_array_equal(params["a"], np.full(4, -0.05, np.float32))


def test_changed_dtype_and_tree_between_calls(batched) -> None:
    rng = np.random.default_rng(1)
    params = {"a": rng.standard_normal(4).astype(np.float32)}
    opt = optim.Adam(0.1)
    opt.update(params, {"a": np.ones(4, np.float32)})
    # a float16 gradient for the float32 parameter: MLX's mixed-float rules, not the kernel
    calls = len(batched)
    start = params["a"].copy()
    opt.update(params, {"a": np.ones(4, np.float16)})
    assert len(batched) == calls
    assert not np.array_equal(params["a"], start)
    # a new parameter of another dtype: the whole update leaves the batched kernel, correctly
    params["b"] = rng.standard_normal(3)
    opt.init(params)
    opt.update(params, {"a": np.ones(4, np.float32), "b": np.ones(3)})
    assert opt.state["b"]["m"].dtype == np.float64
    np.testing.assert_allclose(opt.state["b"]["m"], np.full(3, 0.1), rtol=1e-12)
    # and back to one dtype: batched again
    del params["b"]
    calls = len(batched)
    opt.update(params, {"a": np.ones(4, np.float32)})
    assert len(batched) == calls + 1


@pytest.mark.parametrize("bad", ["shape", "integer", "none", "read_only_state"])
def test_bad_leaf_mid_tree_changes_nothing(batched, bad) -> None:
    names = [f"p{i}" for i in range(20)]
    params = {k: np.ones(3, np.float32) for k in names}
    grads = {k: np.full(3, 0.5, np.float32) for k in names}
    opt = optim.Adam(0.1)
    for _ in range(2):  # warm: the batched kernel has run
        opt.update(params, grads)
    assert batched
    before_params = {k: v.copy() for k, v in params.items()}
    before_state = {k: np.array(v, copy=True) for k, v in tree_flatten(opt.state)}
    broken = dict(grads)
    if bad == "shape":
        broken["p10"] = np.ones(4, np.float32)
        error = ValueError
    elif bad == "integer":
        broken["p10"] = np.ones(3, np.int32)
        error = TypeError
    elif bad == "none":
        broken["p10"] = None
        error = TypeError
    else:
        opt.state["p10"]["v"].flags.writeable = False
        error = None
    if error is None:
        # a read-only state array cannot be written in place: the update still succeeds,
        # without the batched kernel, and replaces that array
        held = opt.state["p10"]["v"]
        opt.update(params, broken)
        assert opt.state["p10"]["v"] is not held
        np.testing.assert_array_equal(held, before_state["p10.v"])
        return
    with pytest.raises(error, match="p10"):
        opt.update(params, broken)
    for k, v in params.items():
        np.testing.assert_array_equal(v, before_params[k], strict=True)
    after = dict(tree_flatten(opt.state))
    assert after.keys() == before_state.keys()
    for k, v in before_state.items():
        np.testing.assert_array_equal(after[k], v, strict=True)


def test_non_contiguous_gradient_is_accepted(batched) -> None:
    params = {"a": np.ones(4, np.float32), "b": np.ones(4, np.float32)}
    wide = np.full((4, 2), 0.5, np.float32)
    opt = optim.Adam(0.1)
    opt.update(params, {"a": wide[:, 0], "b": wide[:, 1]})
    ref = optim.Adam(0.1)
    expected = ref.apply_gradients({"a": wide[:, 0].copy(), "b": wide[:, 1].copy()},
                                   {"a": np.ones(4, np.float32), "b": np.ones(4, np.float32)})
    _identical(params, expected)


def test_torch_update_runs_batched_and_sees_replaced_tensors(batched) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    start = {f"t{i}": rng.standard_normal(5).astype(np.float32) for i in range(6)}
    grads = [{k: rng.standard_normal(5).astype(np.float32) for k in start} for _ in range(3)]
    model = {k: torch.nn.Parameter(torch.from_numpy(v.copy())) for k, v in start.items()}
    opt = optim.AdamW(0.05, bias_correction=True)
    expected, expected_state = _reference(lambda: optim.AdamW(0.05, bias_correction=True),
                                          grads, start)
    opt.update(model, {k: torch.from_numpy(v) for k, v in grads[0].items()})
    # new memory behind a parameter and a new state tensor between calls: both are updated
    model["t1"].data = model["t1"].data.clone()
    opt.state["t2"]["v"] = opt.state["t2"]["v"].clone()
    for g in grads[1:]:
        opt.update(model, {k: torch.from_numpy(v) for k, v in g.items()})
    assert len(batched) == 3
    _identical({k: v.detach().numpy() for k, v in model.items()}, expected)
    _identical({k: {n: a.numpy() for n, a in s.items()} for k, s in opt.state.items()
                if isinstance(s, dict)},
               {k: s for k, s in expected_state.items() if isinstance(s, dict)})


def test_torch_apply_gradients_runs_batched_and_leaves_inputs_alone(batched) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    start = {f"t{i}": rng.standard_normal((2, 3)).astype(np.float32) for i in range(5)}
    grads = [{k: rng.standard_normal((2, 3)).astype(np.float32) for k in start}
             for _ in range(3)]
    expected, expected_state = _reference(lambda: optim.Adam(0.05), grads, start)
    opt = optim.Adam(0.05)
    params = {k: torch.from_numpy(v.copy()) for k, v in start.items()}
    first = {k: v.clone() for k, v in params.items()}
    out = params
    for g in grads:
        out = opt.apply_gradients({k: torch.from_numpy(v) for k, v in g.items()}, out)
    assert len(batched) == 3
    assert all(type(v) is torch.Tensor and v.dtype == torch.float32 for v in out.values())
    for k in params:
        assert torch.equal(params[k], first[k])
    _identical({k: v.numpy() for k, v in out.items()}, expected)
    _identical({k: {n: a.numpy() for n, a in s.items()} for k, s in opt.state.items()
                if isinstance(s, dict)},
               {k: s for k, s in expected_state.items() if isinstance(s, dict)})


def test_torch_gradients_that_require_grad_are_viewed_too(batched) -> None:
    torch = pytest.importorskip("torch")
    model = {"a": torch.nn.Parameter(torch.ones(3)), "b": torch.nn.Parameter(torch.ones(2))}
    grads = {"a": torch.full((3,), 0.5, requires_grad=True), "b": torch.full((2,), 0.5)}
    opt = optim.SGD(0.1)
    opt.update(model, grads)
    assert batched
    assert torch.equal(model["a"].detach(), torch.full((3,), 0.95))
    assert torch.equal(model["b"].detach(), torch.full((2,), 0.95))


@pytest.mark.parametrize("tie", ["same_array", "overlapping_views"])
def test_tied_parameters_are_updated_one_after_the_other(batched, tie) -> None:
    # the same memory at two places of the tree: the multi-threaded kernel would update it
    # from two threads at once; the per-leaf executors run the leaves in order, as the
    # reference does
    rng = np.random.default_rng(5)
    chunk = _numpy_batch.CHUNK
    buffer = rng.standard_normal(chunk * 3).astype(np.float32)
    many = {f"t{i}": rng.standard_normal(4).astype(np.float32) for i in range(40)}

    def tied():
        base = buffer.copy()
        first, second = (base, base) if tie == "same_array" else (base[: 2 * chunk], base[chunk:])
        return base, {"embed": first, "head": second, "many": tree_map(np.copy, many)}

    grads = [tree_map(lambda a: rng.standard_normal(a.shape).astype(np.float32), tied()[1])
             for _ in range(3)]

    def make():
        return optim.AdamW(0.05, bias_correction=True)

    expected_base, expected = tied()
    expected, expected_state = _reference(make, grads, expected, in_place=True)
    base, live = tied()
    opt = make()
    for g in grads:
        opt.update(live, g)
    assert not batched  # the overlap sent the update to the per-leaf executors
    _identical(opt.state, expected_state)
    _identical(live, expected)
    np.testing.assert_array_equal(base, expected_base, strict=True)
    assert not np.array_equal(base, buffer)


def test_small_state_is_packed_per_entry_and_changes_nothing(batched, monkeypatch) -> None:
    from anyoptim._backend import _numpy_pack

    rng = np.random.default_rng(6)
    params = {f"t{i}": rng.standard_normal((4, 5)).astype(np.float32) for i in range(64)}
    params["big"] = rng.standard_normal(_numpy_pack.MAX_BYTES).astype(np.float32)
    grads = [tree_map(lambda a: rng.standard_normal(a.shape).astype(np.float32), params)
             for _ in range(3)]

    def run(make, pack):
        if not pack:
            monkeypatch.setattr(_numpy_pack, "MIN_LEAVES", 10**9)
        try:
            opt = make()
            live = tree_map(np.copy, params)
            opt.init(live)
            layout = {k: opt.state["t0"][k].base for k in opt.state["t0"]}
            for g in grads:
                opt.update(live, g)
            return live, opt.state, layout
        finally:
            monkeypatch.undo()

    for make in (lambda: optim.AdamW(0.01, bias_correction=True),
                 lambda: optim.ScheduleFreeAdamW(0.01)):  # state starting at the parameters
        packed, packed_state, layout = run(make, True)
        plain, plain_state, plain_layout = run(make, False)
        _identical(packed, plain)
        _identical(packed_state, plain_state)
        assert all(b is None for b in plain_layout.values())
        for key, block in layout.items():
            if not isinstance(packed_state["t0"][key], np.ndarray) or not key:
                continue
            if packed_state["t0"][key].ndim == 0:
                continue
            # every small parameter's entry is a view of one block, in the parameters' order
            # and on cache-line boundaries; the large parameter keeps its own array
            assert block is not None, key
            views = [packed_state[f"t{i}"][key] for i in range(64)]
            assert all(v.base is block for v in views)
            starts = [v.ctypes.data for v in views]
            assert starts == sorted(starts) and all(s % _numpy_pack.ALIGN == 0 for s in starts)
            assert packed_state["big"][key].base is None


@pytest.mark.parametrize("holder", ["none", "reference", "view", "numpy", "autograd"])
def test_torch_apply_gradients_reuses_only_state_nobody_else_holds(batched, holder) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    start = {f"t{i}": rng.standard_normal(6).astype(np.float32) for i in range(4)}
    grads = [{k: rng.standard_normal(6).astype(np.float32) for k in start} for _ in range(4)]
    expected, expected_state = _reference(lambda: optim.Adam(0.05), grads, start)
    opt = optim.Adam(0.05)
    out = {k: torch.from_numpy(v.copy()) for k, v in start.items()}
    held = None
    for step, g in enumerate(grads):
        out = opt.apply_gradients({k: torch.from_numpy(v) for k, v in g.items()}, out)
        if step == 1:
            m = opt.state["t2"]["m"]
            before = m.clone()
            kept = {"t1": weakref.ref(opt.state["t1"]["v"]),  # no reference: a weak one
                    "t3": weakref.ref(opt.state["t3"]["m"])}
            held = {"none": None, "reference": m, "view": m[1:], "numpy": m.numpy(),
                    "autograd": None}[holder]
            if holder == "autograd":
                w = torch.ones(6, requires_grad=True)
                held = (w * m).sum()  # saves m for the backward pass
            del m
    assert len(batched) == len(grads)
    # tensors nobody else held were updated in place (the same objects at every step)
    assert opt.state["t1"]["v"] is kept["t1"]() and opt.state["t3"]["m"] is kept["t3"]()
    if holder != "none":
        # the held tensor keeps its values; the state moved on to a new tensor
        assert opt.state["t2"]["m"] is not before
        current = held if holder != "autograd" else None
        if holder == "reference":
            assert torch.equal(current, before)
        elif holder == "view":
            assert torch.equal(current, before[1:])
        elif holder == "numpy":
            np.testing.assert_array_equal(current, before.numpy())
        else:
            held.backward()
            assert torch.equal(w.grad, before)
    _identical({k: v.numpy() for k, v in out.items()}, expected)
    _identical({k: {n: a.numpy() for n, a in s.items()} for k, s in opt.state.items()
                if isinstance(s, dict)},
               {k: s for k, s in expected_state.items() if isinstance(s, dict)})


def test_parameters_tied_after_an_untied_call_are_seen(batched) -> None:
    # the verdict "no overlap" is kept for the parameters of the last call only
    rng = np.random.default_rng(8)
    many = {f"t{i}": rng.standard_normal(4).astype(np.float32) for i in range(40)}
    grads = [tree_map(lambda a: rng.standard_normal(a.shape).astype(np.float32), many)
             for _ in range(2)]

    def run(fused):
        saved = _backend.fused_numpy_available
        if not fused:
            _backend.fused_numpy_available = lambda: False
        try:
            opt = optim.AdamW(0.05, bias_correction=True)
            live = tree_map(np.copy, many)
            opt.update(live, grads[0])
            live["t1"] = live["t0"]  # tied from now on
            opt.update(live, grads[1])
            return live, opt.state
        finally:
            _backend.fused_numpy_available = saved

    expected, expected_state = run(False)
    batched.clear()
    live, state = run(True)
    assert len(batched) == 1  # the first call only
    _identical(live, expected)
    _identical(state, expected_state)


def test_torch_pure_step_and_saved_state_are_never_overwritten(batched) -> None:
    # pure_step's input state and a flattened copy of the state (as saved) share tensors with
    # the optimizer's working state: those are never updated in place
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(0)
    params = {f"t{i}": torch.randn(5, generator=gen) for i in range(4)}
    grads = {k: torch.randn(5, generator=gen) for k in params}
    opt = optim.Adam(0.1)
    opt.init(params)
    state = opt.state
    p1, s1 = opt.pure_step(params, grads, state)
    snapshot = {k: v.clone() for k, v in tree_flatten(s1)}
    p2, _ = opt.pure_step(p1, grads, s1)
    opt.pure_step(p2, grads, s1)
    assert all(torch.count_nonzero(state[k]["m"]) == 0 for k in params)
    assert all(torch.equal(v, snapshot[k]) for k, v in tree_flatten(s1))
    live = optim.Adam(0.1)
    out = live.apply_gradients(grads, params)
    out = live.apply_gradients(grads, out)
    saved = dict(tree_flatten(live.state))
    copies = {k: v.clone() for k, v in saved.items()}
    live.apply_gradients(grads, out)
    assert all(torch.equal(saved[k], copies[k]) for k in saved)
    assert batched


@pytest.mark.parametrize("reader", ["load", "load_state"])
def test_loaded_small_state_is_packed_and_training_continues_exactly(tmp_path, reader) -> None:
    # a file keeps each parameter's entries side by side (t0.m, t0.v, t1.m, ...), the layout
    # that made the kernel stall; what is read back is laid out one block per entry
    from anyoptim import io

    rng = np.random.default_rng(9)
    params = {f"t{i}": rng.standard_normal(50).astype(np.float32) for i in range(40)}
    grads = [tree_map(lambda a: rng.standard_normal(a.shape).astype(np.float32), params)
             for _ in range(4)]
    opt = optim.AdamW(0.01, bias_correction=True)
    live = tree_map(np.copy, params)
    for g in grads[:2]:
        opt.update(live, g)
    path = tmp_path / "state.safetensors"
    optim.save(path, opt)
    if reader == "load":
        restored = optim.load(path)
    else:
        restored = optim.AdamW(0.01, bias_correction=True)
        restored.state = io.load_state(path)
    _identical(restored.state, opt.state)
    blocks = {key: restored.state["t0"][key].base for key in ("m", "v")}
    for key, block in blocks.items():
        assert block is not None
        assert all(restored.state[f"t{i}"][key].base is block for i in range(40))
    assert blocks["m"] is not blocks["v"]
    other = tree_map(np.copy, live)
    for g in grads[2:]:
        opt.update(live, g)
        restored.update(other, g)
    _identical(other, live)
    _identical(restored.state, opt.state)


def test_overlap_check_sees_past_empty_ranges() -> None:
    # sorted by start, an empty array can stand between two ranges that overlap
    assert _numpy_batch.overlapping([0, 20, 40], [80, 0, 80])
    assert _numpy_batch.overlapping([0, 0], [8, 8])  # the same memory twice
    assert not _numpy_batch.overlapping([0, 80, 80], [80, 0, 40])  # touching, not overlapping
    assert not _numpy_batch.overlapping([10, 10, 10], [0, 0, 4])  # empty ranges never overlap
    buffer = np.zeros(64, np.float32)
    tree = {"a": buffer[:20], "e": buffer[5:5], "c": buffer[10:30]}
    assert _numpy_batch.overlapping([v.ctypes.data for v in tree.values()],
                                    [v.nbytes for v in tree.values()])


def test_torch_update_with_the_same_tensors_in_another_order(batched) -> None:
    # the kept views are matched by tensor, not by position: a tree whose keys come in
    # another order (as after a load) updates each parameter with its own state
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    start = {f"t{i}": rng.standard_normal(4 + i).astype(np.float32) for i in range(5)}
    grads = [{k: rng.standard_normal(v.shape).astype(np.float32) for k, v in start.items()}
             for _ in range(3)]
    expected, _ = _reference(lambda: optim.Adam(0.05), grads, start)
    model = {k: torch.from_numpy(v.copy()) for k, v in start.items()}
    opt = optim.Adam(0.05)
    for i, g in enumerate(grads):
        keys = list(model) if i != 1 else list(reversed(model))
        opt.update({k: model[k] for k in keys}, {k: torch.from_numpy(g[k]) for k in keys})
    assert len(batched) == 3
    _identical({k: v.numpy() for k, v in model.items()}, expected)
