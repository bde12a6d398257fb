"""gaussian_readout on every backend against the float64 reference: forward and all four gradients, every dtype each
backend takes, both align_corners, per-batch and shared grids, positions off the map, on its borders and on pixel
centres, empty and single-neuron shapes (Sensorium-sized ones on a GPU); gradcheck and second derivatives;
determinism of the backward; torch.func; torch.compile of the module; dispatch; validation (one test per rule)."""
import sys

import pytest
import torch

from daenr_fast import _dispatch
from daenr_fast import nn as dnn
from daenr_fast.ops import gaussian_readout, reference
from ops.conftest import CPU, Tolerance, assert_all_close_to, generator, run, run_reference

OP = "gaussian_readout"
OP_MODULE = sys.modules["daenr_fast.ops.gaussian_readout"]
NAMES = ["y", "grad x", "grad grid", "grad features", "grad bias"]

#: float64: the same sums in another order. float32 (per element 1e-4 relative plus 1e-5 of the largest value):
#: float32 weights and sums of at most a few hundred terms per output. float16 / bfloat16: float32 inside, one
#: rounding of each result (2^-11 / 2^-8 relative), relative to the largest value for sums that cancel.
TOL = {
    torch.float64: Tolerance(rtol=1e-10, atol=1e-12, scaled_atol=1e-12),
    torch.float32: Tolerance(rtol=1e-4, scaled_atol=1e-5),
    torch.float16: Tolerance(rtol=2e-3, scaled_atol=2e-3),
    torch.bfloat16: Tolerance(rtol=1.6e-2, scaled_atol=1.6e-2),
}

SHAPES = [  # (B, C, H, W, N)
    (0, 3, 4, 5, 6), (1, 1, 1, 1, 1), (2, 3, 1, 7, 5), (3, 4, 5, 6, 7), (2, 5, 7, 3, 1), (4, 17, 9, 13, 40),
    (3, 33, 4, 4, 130), (40, 3, 3, 4, 70),  # the last: two groups of batch entries on the cpu backend
]
INTERPRETER_MAX_BATCH = 8  # the Triton interpreter runs a program per (pixel, b): bigger batches take minutes
GPU_SHAPES = [(64, 48, 16, 16, 103), (32, 128, 18, 32, 30000), (128, 64, 36, 64, 8000)]
CONFIGS = {  # name: (shared grid, align_corners, bias)
    "per_batch": (False, True, True),
    "per_batch_no_align": (False, False, False),
    "shared": (True, True, False),
    "shared_no_align": (True, False, True),
}
#: positions with exact taps: corners and borders (|g| = 1), the centre, pixel centres and edges, and beyond
SPECIAL = [(-1, -1), (1, 1), (1, -1), (-1, 1), (0, 0), (1, 0.5), (-0.5, 1), (0.25, -0.75), (1.0625, 0.0),
           (-1.0625, 0.5), (0.0, 1.125), (2.0, 0.0), (-3.0, -3.0), (1e4, 0.0), (0.0, -3e4)]


def shape_id(shape):
    return "x".join(map(str, shape))


def gaussian_inputs(B, C, H, W, N, dtype=torch.float32, device=CPU, shared=False, bias=True, seed=0, spread=1.3,
                    special=True):
    """(x (B,C,H,W), grid (B,N,2) or (N,2), features (C,N), bias (N,) or None): normal x and features, positions
    uniform in [-spread, spread] (with the SPECIAL ones first if ``special``); drawn in float32 on the CPU, rounded
    to ``dtype``."""
    g = generator(seed)
    x = torch.randn(B, C, H, W, generator=g)
    grid = (torch.rand((N, 2) if shared else (B, N, 2), generator=g) * 2 - 1) * spread
    exact = torch.tensor(SPECIAL[:N] if special else [], dtype=torch.float32).reshape(-1, 2)
    grid[..., :len(exact), :] = exact
    features = torch.randn(C, N, generator=g)
    b = torch.randn(N, generator=g) if bias else None
    return tuple(None if t is None else t.to(device=device, dtype=dtype) for t in (x, grid, features, b))


def readout(backend, align_corners=True):
    return lambda x, grid, f, b: gaussian_readout(x, grid, f, b, align_corners=align_corners, backend=backend)


def check_against_reference(backend, dtype, inputs, align_corners):
    want_y, want_grads = run_reference(lambda *a: reference.gaussian_readout(*a, align_corners), inputs)
    y, grads = run(readout(backend, align_corners), inputs)
    assert y.shape == want_y.shape and y.dtype == dtype
    assert_all_close_to(NAMES, [y] + grads, [want_y] + want_grads, TOL[dtype], dtype=dtype)


# ------------------------------------------------------------------------------------------- against the reference

@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_matches_float64_reference(backend, device, dtype, shape, config):
    if backend == "triton" and device.type == "cpu" and shape[0] > INTERPRETER_MAX_BATCH:
        pytest.skip(f"B = {shape[0]} is more than the Triton interpreter runs in a test; it runs compiled on a GPU")
    shared, align_corners, bias = CONFIGS[config]
    inputs = gaussian_inputs(*shape, dtype=dtype, device=device, shared=shared, bias=bias)
    check_against_reference(backend, dtype, inputs, align_corners)


@pytest.mark.cuda
@pytest.mark.parametrize("shared", [False, True], ids=["per_batch", "shared"])
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=shape_id)
def test_gpu_sizes_match_float64_reference(backend, device, dtype, shape, shared):
    inputs = gaussian_inputs(*shape, dtype=dtype, device=device, shared=shared, bias=shared)
    check_against_reference(backend, dtype, inputs, align_corners=True)


@pytest.mark.parametrize("align_corners", [True, False])
def test_positions_off_the_map_read_zero_and_have_no_gradient(backend, device, align_corners):
    x, _, f, b = gaussian_inputs(2, 3, 4, 5, 4, device=device)
    grid = torch.tensor([[[1.9, 0.0], [0.0, -2.5], [-1e6, 1e6], [3.0, 3.0]]] * 2, device=device)
    y, (gx, ggrid, gf, gb) = run(readout(backend, align_corners), (x, grid, f, b))
    torch.testing.assert_close(y, b.expand(2, 4), rtol=0, atol=0)
    for name, grad in (("x", gx), ("grid", ggrid), ("features", gf)):
        assert torch.count_nonzero(grad) == 0, name


@pytest.mark.parametrize("align_corners", [True, False])
def test_border_positions_read_the_border_pixels(backend, device, align_corners):
    """At g = -1 and 1 (align_corners=True) the positions are the corner pixels themselves; without align_corners
    they are the outer corners of those pixels, halfway into the zero padding (a quarter of the pixel)."""
    x = torch.arange(12.0, device=device).reshape(1, 1, 3, 4) + 1
    grid = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [1.0, -1.0], [-1.0, 1.0]], device=device)
    y = gaussian_readout(x, grid, torch.ones(1, 4, device=device), align_corners=align_corners, backend=backend)
    corners = torch.tensor([[1.0, 12.0, 4.0, 9.0]], device=device)
    torch.testing.assert_close(y, corners if align_corners else corners / 4, rtol=0, atol=1e-6)


@pytest.mark.dtypes(torch.float32)
def test_shared_grid_equals_the_expanded_per_batch_grid(backend, device, dtype):
    x, grid, f, b = gaussian_inputs(3, 4, 5, 6, 9, device=device, shared=True)
    y_shared, grads_shared = run(readout(backend), (x, grid, f, b))
    y_batch, grads_batch = run(readout(backend), (x, grid.expand(3, 9, 2).contiguous(), f, b))
    torch.testing.assert_close(y_shared, y_batch)
    torch.testing.assert_close(grads_shared[1], grads_batch[1].sum(0))
    for got, want in zip(grads_shared[::2], grads_batch[::2]):
        torch.testing.assert_close(got, want)


def test_no_neurons(backend, device):
    x, grid, f, b = gaussian_inputs(2, 3, 4, 5, 0, device=device)
    y, (gx, ggrid, gf, gb) = run(readout(backend), (x, grid, f, b))
    assert y.shape == (2, 0) and ggrid.shape == (2, 0, 2) and gf.shape == (3, 0)
    assert torch.count_nonzero(gx) == 0


def test_non_contiguous_inputs(backend, device):
    x, grid, f, b = gaussian_inputs(3, 4, 5, 6, 7, device=device)
    x_nc = x.transpose(2, 3).contiguous().transpose(2, 3)
    grid_nc = grid.transpose(0, 1).contiguous().transpose(0, 1)
    f_nc = f.t().contiguous().t()
    assert not (x_nc.is_contiguous() or grid_nc.is_contiguous() or f_nc.is_contiguous())
    y, grads = run(readout(backend), (x_nc, grid_nc, f_nc, b))
    want_y, want_grads = run(readout(backend), (x, grid, f, b))
    torch.testing.assert_close(y, want_y)
    for got, want in zip(grads, want_grads):
        torch.testing.assert_close(got, want)


# ------------------------------------------------------------------------------------------- gradcheck, 2nd order

@pytest.mark.dtypes(torch.float64)
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_gradcheck_float64(backend, device, dtype, config):
    shared, align_corners, bias = CONFIGS[config]
    inputs = gaussian_inputs(2, 3, 4, 5, 6, dtype=dtype, device=device, shared=shared, bias=bias, spread=1.2,
                             special=False)  # the special positions sit on kinks (pixel edges, borders)
    inputs = [None if t is None else t.requires_grad_() for t in inputs]
    assert torch.autograd.gradcheck(readout(backend, align_corners), inputs)


@pytest.mark.dtypes(torch.float64)
def test_second_derivatives_use_the_differentiable_formula(backend, device, dtype):
    inputs = gaussian_inputs(2, 3, 4, 5, 6, dtype=dtype, device=device, spread=1.2, special=False)
    inputs = [t.requires_grad_() for t in inputs]
    assert torch.autograd.gradgradcheck(readout(backend), inputs)


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("shared", [False, True], ids=["per_batch", "shared"])
def test_the_gradient_formula_matches_grid_samples_autograd(shared, align_corners):
    """``gradients`` (the torch backend's formula on CUDA and every backend's second derivatives) against autograd
    through grid_sample, in float64, special positions included."""
    x, grid, f, _ = gaussian_inputs(3, 4, 5, 6, 17, dtype=torch.float64, shared=shared)
    gy = torch.randn(3, 17, generator=generator(5), dtype=torch.float64)
    leaves = [t.clone().requires_grad_() for t in (x, grid, f)]
    want = torch.autograd.grad(reference.gaussian_readout(*leaves, None, align_corners), leaves, gy)
    got = OP_MODULE.gradients(gy, x, grid, f, align_corners)
    for name, a, e in zip(NAMES[1:], got, (*want, gy.sum(0))):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12, msg=lambda m: f"{name}: {m}")


# ------------------------------------------------------------------------------------------- determinism

@pytest.mark.dtypes(torch.float32)
@pytest.mark.parametrize("shared", [False, True], ids=["per_batch", "shared"])
def test_backward_is_bit_identical_from_run_to_run(backend, device, dtype, shared):
    """Many neurons on few pixels (every pixel sums hundreds of contributions): repeated backwards agree bit for
    bit, with several threads."""
    x, grid, f, b = gaussian_inputs(3, 5, 4, 6, 300, device=device, shared=shared, spread=0.4)
    previous = torch.get_num_threads()
    torch.set_num_threads(max(2, previous))
    try:
        first = run(readout(backend), (x, grid, f, b))[1]
        for _ in range(3):
            again = run(readout(backend), (x, grid, f, b))[1]
            for name, a, e in zip(NAMES[1:], again, first):
                assert torch.equal(a, e), f"{name} differs between runs"
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("shared", [False, True], ids=["per_batch", "shared"])
def test_cpu_backward_does_not_depend_on_the_thread_count(shared):
    from daenr_fast import _build

    ok, why = _build.extension_status(OP)
    if not ok:
        pytest.skip(why)
    x, grid, f, b = gaussian_inputs(5, 7, 6, 9, 700, shared=shared, spread=0.6)
    previous = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append(run(readout("cpu"), (x, grid, f, b)))
    finally:
        torch.set_num_threads(previous)
    for y, grads in results[1:]:
        assert torch.equal(y, results[0][0])
        for name, a, e in zip(NAMES[1:], grads, results[0][1]):
            assert torch.equal(a, e), name


# ------------------------------------------------------------------------------------------- torch.func, compile

@pytest.mark.dtypes(torch.float64)
def test_func_grad_and_jacrev_match_autograd(backend, device, dtype):
    x, grid, f, b = gaussian_inputs(2, 3, 4, 5, 6, dtype=dtype, device=device, special=False)

    def loss(x, grid, f, b):
        return gaussian_readout(x, grid, f, b, backend=backend).square().sum()

    got = torch.func.grad(loss, argnums=(0, 1, 2, 3))(x, grid, f, b)
    leaves = [t.clone().requires_grad_() for t in (x, grid, f, b)]
    want = torch.autograd.grad(loss(*leaves), leaves)
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e)
    jac = torch.func.jacrev(lambda g: gaussian_readout(x, g, f, b, backend=backend))(grid)
    want_jac = torch.autograd.functional.jacobian(lambda g: reference.gaussian_readout(x, g, f, b), grid)
    torch.testing.assert_close(jac, want_jac)


@pytest.mark.dtypes(torch.float64)
@pytest.mark.parametrize("batched", ["x", "x_and_grid", "x_shared_grid", "features", "everything"])
def test_vmap_matches_a_loop(backend, device, dtype, batched):
    V = 3
    x, grid, f, b = gaussian_inputs(2, 3, 4, 5, 6, dtype=dtype, device=device, shared=batched == "x_shared_grid")
    stacks = {"x": x + torch.arange(V, dtype=dtype, device=device)[:, None, None, None, None],
              "grid": grid * torch.linspace(0.5, 1.0, V, dtype=dtype, device=device).view(V, *[1] * grid.dim()),
              "f": f + torch.arange(V, dtype=dtype, device=device)[:, None, None],
              "b": b + torch.arange(V, dtype=dtype, device=device)[:, None]}
    which = {"x": ("x",), "x_and_grid": ("x", "grid"), "x_shared_grid": ("x",), "features": ("f",),
             "everything": ("x", "grid", "f", "b")}[batched]
    args = [stacks[k] if k in which else v for k, v in zip(("x", "grid", "f", "b"), (x, grid, f, b))]
    dims = [0 if k in which else None for k in ("x", "grid", "f", "b")]
    got = torch.vmap(lambda *a: gaussian_readout(*a, backend=backend), in_dims=tuple(dims))(*args)
    want = torch.stack([gaussian_readout(*[a[i] if d == 0 else a for a, d in zip(args, dims)], backend=backend)
                        for i in range(V)])
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_torch_compile_fullgraph_of_the_module_matches_eager(backend, device, train):
    torch.manual_seed(0)
    module = dnn.FullGaussian2d((3, 5, 6), 7, True, backend=backend, init_mu_range=0.9).to(device).train(train)
    x = torch.randn(4, 3, 5, 6, generator=generator(1)).to(device)
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")

    def step(fn):
        module.zero_grad()
        torch.manual_seed(3)  # the sampled positions (training mode)
        y = fn(x)
        y.square().sum().backward()
        return y.detach(), [p.grad.clone() for p in module.parameters()]

    y_eager, grads_eager = step(module)
    y_compiled, grads_compiled = step(compiled)
    torch.testing.assert_close(y_compiled, y_eager)
    for a, e in zip(grads_compiled, grads_eager):
        torch.testing.assert_close(a, e)


@pytest.mark.parametrize("shared", [False, True], ids=["per_batch", "shared"])
def test_opcheck_of_the_custom_ops(backend, device, shared):
    """Schema, fake implementations (shapes and strides), autograd registration of the forward and backward ops."""
    from daenr_fast.ops import OPS

    x, grid, f, b = gaussian_inputs(2, 3, 4, 5, 6, device=device, shared=shared, special=False)
    leaves = [t.requires_grad_() for t in (x, grid, f, b)]
    torch.library.opcheck(OPS[OP].custom_op, (*leaves, True, backend))
    torch.library.opcheck(OPS[OP].custom_op, (*leaves[:3], None, False, backend))
    grad = torch.randn(2, 6, generator=generator(2)).to(device)
    torch.library.opcheck(OPS[OP].backward_overload, (grad, x.detach(), grid.detach(), f.detach(), True, backend))


# ------------------------------------------------------------------------------------------- dispatch, validation

def test_dispatch_on_cpu():
    from daenr_fast import _build

    cpu = torch.device("cpu")
    expected = "cpu" if _build.extension_status(OP)[0] else "torch"
    assert _dispatch.resolve_backend(OP, None, cpu, torch.float32) == expected
    assert _dispatch.resolve_backend(OP, None, cpu, torch.float16) == "torch"
    with pytest.raises(TypeError, match="backend 'cpu' supports dtypes float32, float64"):
        gaussian_readout(*[t.half() for t in gaussian_inputs(2, 3, 4, 5, 6)[:3]], backend="cpu")


def _valid():
    return gaussian_inputs(2, 3, 4, 5, 6)


@pytest.mark.parametrize("change, error, match", [
    (lambda x, g, f, b: (x[0], g, f, b), ValueError, r"x must have shape \(B,C,H,W\)"),
    (lambda x, g, f, b: (x[:, :, :0], g, f, b), ValueError, "non-empty map"),
    (lambda x, g, f, b: (x, g[..., :1], f, b), ValueError, r"grid must have shape \(B,N,2\)=\(2,6,2\)"),
    (lambda x, g, f, b: (x, torch.cat([g, g[:, :, :1]], 2), f, b), ValueError, "grid must have shape"),
    (lambda x, g, f, b: (x, g[:1], f, b), ValueError, "grid must have shape"),
    (lambda x, g, f, b: (x, g[:, :5], f, b), ValueError, "grid must have shape"),
    (lambda x, g, f, b: (x, g[0, 0], f, b), ValueError, "grid must have shape"),
    (lambda x, g, f, b: (x, g[None], f, b), ValueError, "grid must have shape"),
    (lambda x, g, f, b: (x, g, f[:2], b), ValueError, r"features must have shape \(C,N\)=\(3,N\)"),
    (lambda x, g, f, b: (x, g, f.t(), b), ValueError, "features must have shape"),
    (lambda x, g, f, b: (x, g, f, b[:5]), ValueError, r"bias must have shape \(N,\)=\(6,\)"),
    (lambda x, g, f, b: (x, g, f, b[None]), ValueError, "bias must have shape"),
    (lambda x, g, f, b: (x, g.double(), f, b), TypeError, "grid has dtype torch.float64"),
    (lambda x, g, f, b: (x, g, f, b.double()), TypeError, "bias has dtype"),
    (lambda x, g, f, b: (x.int(), g, f, b), TypeError, "x must be a floating tensor"),
    (lambda x, g, f, b: (x, g.numpy(), f, b), TypeError, "grid must be a torch.Tensor"),
    (lambda x, g, f, b: (x, g.to("meta"), f, b), ValueError, "grid is on meta"),
    (lambda x, g, f, b: (x, torch.where(g > 0.5, float("nan"), g), f, b), ValueError, "grid must hold finite"),
    (lambda x, g, f, b: (x, torch.where(g > 0.5, float("inf"), g), f, b), ValueError, "grid must hold finite"),
])
def test_bad_inputs_are_refused_by_name(change, error, match):
    with pytest.raises(error, match=match):
        gaussian_readout(*change(*_valid()))


def test_bad_options_are_refused():
    x, g, f, b = _valid()
    with pytest.raises(TypeError, match="align_corners must be True or False"):
        gaussian_readout(x, g, f, b, align_corners=1)
    with pytest.raises(ValueError, match="backend must be one of"):
        gaussian_readout(x, g, f, b, backend="tpu")
    nan_grid = torch.full_like(g, float("nan"))
    y = gaussian_readout(x, nan_grid, f, b, validate=False, backend="torch")  # unchecked: grid_sample's answer
    assert y.shape == (2, 6)


def test_nan_positions_unchecked_never_crash_a_kernel(backend, device):
    x, g, f, b = gaussian_inputs(2, 3, 4, 5, 6, device=device)
    g = torch.where(g > 0.5, float("nan"), g)
    y, grads = run(lambda *a: gaussian_readout(*a, validate=False, backend=backend), (x, g, f, b))
    assert y.shape == (2, 6) and all(t is not None for t in grads)


def test_the_error_names_the_first_bad_position():
    x, g, f, b = _valid()
    g = g.clone()
    g[1, 4, 0] = float("nan")
    with pytest.raises(ValueError, match=r"1 NaN or infinite entries, the first at index \(1, 4, 0\)"):
        gaussian_readout(x, g, f, b)
