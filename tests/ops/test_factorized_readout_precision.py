"""Float32 precision modes of the factorized readout's Triton backend ("tf32x3", "ieee", "tf32") and its tiles.

Each mode is checked against the float64 reference with a tolerance derived from its error bound
(:data:`PRODUCT_ERROR`): per element |got - truth| <= PRODUCT_ERROR[mode] * S + the float32 tolerance, where S is
the same sum over absolute values (the readout of |x|, |spatial|, |features| and its gradients for |dy|). The
Triton interpreter ignores ``input_precision`` (its dots are float32 numpy matmuls), so on CPU the bound is checked
against float32 products; the bound itself is checked without Triton by emulating TF32 rounding in torch (both
round-to-nearest and truncation), product by product and for whole readouts. Every autotuning candidate of
every kernel (:data:`TILE_CONFIGS`) runs once on a small ragged shape.
"""
import pytest
import torch

from daenr_fast.ops import reference
from daenr_fast.ops.factorized_readout import (DEFAULT_FLOAT32_PRECISION, FLOAT32_PRECISIONS, PRECISION_ENV,
                                               PRODUCT_ERROR, factorized_readout, get_float32_precision,
                                               set_float32_precision)
from ops.conftest import (TOLERANCES, assert_all_close_to, readout_inputs, run, run_reference, upstream_gradient)

OP = "factorized_readout"
TOL32 = TOLERANCES[OP][torch.float32]
NAMES = ["y", "grad x", "grad spatial", "grad features", "grad bias"]
SHAPE = (5, 6, 5, 9, 19)  # (B, C, H, W, N): ragged in every block
TF32_MANTISSA_DROP = 13  # float32 keeps 23 mantissa bits, TF32 10


@pytest.fixture
def precision_reset():
    yield
    set_float32_precision(None)


def absolute_sums(inputs, gy):
    """S for y and each gradient: the float64 readout of |x|, |spatial|, |features| (no bias) and its gradients
    for the upstream gradient |gy|; the bias gradient is an exact-enough float32 sum (S = 0)."""
    x, m, w, b = (t.detach().double().abs().requires_grad_() if t is not None else None for t in inputs)
    y = reference.factorized_readout(x, m, w, None)
    grads = torch.autograd.grad(y, (x, m, w), gy.double().abs())
    return [y.detach(), *grads, None if b is None else torch.zeros_like(b)]


def assert_within_bound(got, want, sums, precision):
    """|got - want| <= PRODUCT_ERROR[precision] * S + float32's per-element tolerance, for every named result."""
    for name, g, w, s in zip(NAMES, got, want, sums):
        if w is None:
            assert g is None
            continue
        g, w, s = g.detach().double().cpu(), w.detach().double().cpu(), s.double().cpu()
        largest = w.abs().max().item() if w.numel() else 0.0
        bound = PRODUCT_ERROR[precision] * s + TOL32.rtol * w.abs() + TOL32.scaled_atol * max(1.0, largest)
        excess = (g - w).abs() - bound
        assert excess.numel() == 0 or excess.max().item() <= 0, \
            f"{name} ({precision}): error above the bound by {excess.max().item():.3g}"


# --------------------------------------------------------------------------------------------- the switch

def test_default_precision_is_split_tf32(monkeypatch, precision_reset):
    monkeypatch.delenv(PRECISION_ENV, raising=False)
    set_float32_precision(None)
    assert get_float32_precision() == DEFAULT_FLOAT32_PRECISION == "tf32x3"


@pytest.mark.parametrize("precision", FLOAT32_PRECISIONS)
def test_set_and_environment_choose_the_precision(monkeypatch, precision_reset, precision):
    monkeypatch.setenv(PRECISION_ENV, precision)
    set_float32_precision(None)
    assert get_float32_precision() == precision
    other = next(p for p in FLOAT32_PRECISIONS if p != precision)
    set_float32_precision(other)
    assert get_float32_precision() == other  # the setter wins over the variable


def test_unknown_precision_is_refused_naming_the_valid_ones(monkeypatch, precision_reset):
    with pytest.raises(ValueError, match=r"precision must be one of \('tf32x3', 'ieee', 'tf32'\), got 'bf16x3'"):
        set_float32_precision("bf16x3")
    assert get_float32_precision() in FLOAT32_PRECISIONS  # nothing half-set
    monkeypatch.setenv(PRECISION_ENV, "TF32")
    set_float32_precision(None)
    with pytest.raises(ValueError, match=f"{PRECISION_ENV} must be one of"):
        get_float32_precision()


def test_kernel_launcher_refuses_an_unknown_precision(triton_device):
    from daenr_fast.kernels import factorized_readout as kernel

    x, m, w, b = readout_inputs(2, 3, 4, 4, 5, device=triton_device)
    with pytest.raises(ValueError, match="precision must be one of"):
        kernel.forward(x, m, w, b, precision="highest")
    with pytest.raises(ValueError, match="precision must be one of"):
        kernel.backward(torch.ones(2, 5, device=triton_device), x, m, w, precision="fp32")


def test_other_backends_ignore_the_triton_precision(precision_reset):
    """The switch is the Triton backend's: the torch backend gives the same bits in every precision."""
    inputs = readout_inputs(3, 4, 5, 6, 7)
    set_float32_precision("ieee")
    want = factorized_readout(*inputs, backend="torch")
    set_float32_precision("tf32")
    assert torch.equal(factorized_readout(*inputs, backend="torch"), want)


# ----------------------------------------------------------------------------- the modes through the op

@pytest.mark.parametrize("precision", FLOAT32_PRECISIONS)
def test_precision_matches_float64_reference_within_its_bound(triton_device, precision_reset, precision):
    inputs = readout_inputs(*SHAPE, device=triton_device)
    set_float32_precision(precision)
    want_y, want_grads = run_reference(reference.factorized_readout, inputs)
    y, grads = run(lambda *a: factorized_readout(*a, backend="triton"), inputs)
    sums = absolute_sums(inputs, upstream_gradient(y.shape))
    assert_within_bound([y] + grads, [want_y] + want_grads, sums, precision)
    if precision != "tf32":  # float32 accuracy: the float32 tolerance of every backend as well
        assert_all_close_to(NAMES, [y] + grads, [want_y] + want_grads, TOL32, dtype=torch.float32)


# ----------------------------------------------------------------------------- every tile candidate

def tile_cases():
    from daenr_fast.kernels import factorized_readout as kernel

    for name, classes in kernel.TILE_CONFIGS.items():
        for cls, configs in classes.items():
            for i, tiles in enumerate(configs):
                dtype = torch.float16 if cls == "half" else torch.float32
                precision = "ieee" if cls == "fma" else "tf32x3"
                yield pytest.param(name, tiles, dtype, precision, id=f"{name}-{cls}-{i}")


def _tile_params():
    try:
        return list(tile_cases())
    except ImportError as err:  # no triton: the fixture skips every case
        return [pytest.param(None, None, None, None, id=f"no-triton-{type(err).__name__}")]


@pytest.mark.parametrize("name,tiles,dtype,precision", _tile_params())
def test_every_tile_candidate_matches_reference(triton_device, name, tiles, dtype, precision):
    """One small ragged call per autotuning candidate, the kernel's tiles fixed, against the float64 truth."""
    from daenr_fast.kernels import factorized_readout as kernel

    x, m, w, b = readout_inputs(*SHAPE, dtype=dtype, device=triton_device)
    want_y, want_grads = run_reference(reference.factorized_readout, (x, m, w, b))
    gy = upstream_gradient((SHAPE[0], SHAPE[4])).to(device=triton_device, dtype=dtype)
    tol = TOLERANCES[OP][dtype]
    if name == "forward":
        y = kernel.forward(x, m, w, b, precision=precision, tiles=tiles)
        assert_all_close_to(NAMES[:1], [y], [want_y], tol, dtype=dtype)
        return
    grads = kernel.backward(gy, x, m, w, precision=precision, tiles={name: tiles})
    assert_all_close_to(NAMES[1:], list(grads), want_grads, tol, dtype=dtype)
    if name == "grad_x" and dtype == torch.float32:  # the same candidate on fp16 inputs (grad x is float32 inside)
        x16, m16, w16, _ = readout_inputs(*SHAPE, dtype=torch.float16, device=triton_device)
        want16 = run_reference(reference.factorized_readout, (x16, m16, w16, None))[1][0]
        gx16 = kernel.backward(gy.half(), x16, m16, w16, tiles={name: tiles})[0]
        assert_all_close_to(NAMES[1:2], [gx16], [want16], TOLERANCES[OP][torch.float16], dtype=torch.float16)


@pytest.mark.parametrize("rows", [(1, 16), (4, 4), (2, 8), (16, 1), (1, 64)], ids=lambda r: f"{r[0]}x{r[1]}")
def test_pooled_kernels_with_every_row_shape(triton_device, rows):
    """The forward and grad-features tiles as BLOCK_B batch entries times BLOCK_C channels: chunks that cover the
    channels or the batch several times, ragged in both."""
    from daenr_fast.kernels import factorized_readout as kernel

    x, m, w, b = readout_inputs(*SHAPE, device=triton_device)
    want_y, want_grads = run_reference(reference.factorized_readout, (x, m, w, b))
    gy = upstream_gradient((SHAPE[0], SHAPE[4])).to(triton_device)
    tiles = {**kernel.TILE_CONFIGS["forward"]["mma"][1], "BLOCK_B": rows[0], "BLOCK_C": rows[1]}
    y = kernel.forward(x, m, w, b, tiles=tiles)
    gw = kernel.backward(gy, x, m, w, tiles={"grad_features": tiles})[2]
    assert_all_close_to(["y", "grad features"], [y, gw], [want_y, want_grads[2]], TOL32, dtype=torch.float32)


def test_tiles_are_checked(triton_device):
    from daenr_fast.kernels import factorized_readout as kernel

    x, m, w, b = readout_inputs(2, 3, 4, 4, 5, device=triton_device)
    gy = torch.ones(2, 5, device=triton_device)
    good = kernel.TILE_CONFIGS["forward"]["mma"][0]
    with pytest.raises(ValueError, match=r"missing \['BLOCK_K'\]"):
        kernel.forward(x, m, w, b, tiles={k: v for k, v in good.items() if k != "BLOCK_K"})
    with pytest.raises(ValueError, match=r"unknown \['BLOCK_Q'\]"):
        kernel.forward(x, m, w, b, tiles={**good, "BLOCK_Q": 16})
    with pytest.raises(ValueError, match="BLOCK_N must be a power of two >= 16, got 24"):
        kernel.forward(x, m, w, b, tiles={**good, "BLOCK_N": 24})
    with pytest.raises(ValueError, match="BLOCK_C must be a power of two >= 1, got 3"):
        kernel.forward(x, m, w, b, tiles={**good, "BLOCK_C": 3})
    with pytest.raises(ValueError, match=r"BLOCK_B \* BLOCK_C >= 16 rows, got 2 \* 4"):
        kernel.forward(x, m, w, b, tiles={**good, "BLOCK_B": 2, "BLOCK_C": 4})
    spatial_tiles = kernel.TILE_CONFIGS["grad_spatial"]["mma"][0]
    with pytest.raises(ValueError, match="FUSED tiles take float32"):
        kernel.backward(gy.half(), x.half(), m.half(), w.half(), tiles={"grad_spatial": {**spatial_tiles, "FUSED": 1}})
    with pytest.raises(ValueError, match="tiles name the kernels"):
        kernel.backward(gy, x, m, w, tiles={"forward": good})


def test_tile_classes():
    kernel = pytest.importorskip("daenr_fast.kernels.factorized_readout")
    assert kernel.tile_class("forward", torch.float32, "ieee") == "fma"
    assert kernel.tile_class("forward", torch.float32, "tf32x3") == "mma"
    assert kernel.tile_class("grad_spatial", torch.float32, "tf32") == "mma"
    assert kernel.tile_class("grad_features", torch.bfloat16, "tf32x3") == "half"
    assert kernel.tile_class("grad_x", torch.float16, "ieee") == "mma"


# ------------------------------------------------------------------ the bounds, without Triton

def tf32(t: torch.Tensor, rounding: str) -> torch.Tensor:
    """float32 ``t`` with its mantissa cut to TF32's 10 bits, rounded to nearest even or truncated (what tensor
    cores may do with float32 registers)."""
    bits = t.float().contiguous().view(torch.int32)
    low = (1 << TF32_MANTISSA_DROP) - 1
    if rounding == "nearest":
        bits = bits + (((bits >> TF32_MANTISSA_DROP) & 1) + (low >> 1))
    return (bits & ~low).view(torch.float32)


def product(a: torch.Tensor, b: torch.Tensor, precision: str, rounding: str) -> torch.Tensor:
    """a*b (float64; exact for float32 factors) as the mode computes it, with TF32 ``rounding``."""
    if precision == "ieee":
        return (a.double() * b.double()).float().double()
    if precision == "tf32":
        return tf32(a, rounding).double() * tf32(b, rounding).double()
    hi_a, hi_b = tf32(a, rounding), tf32(b, rounding)
    lo_a, lo_b = tf32(a - hi_a, rounding), tf32(b - hi_b, rounding)
    return hi_a.double() * hi_b.double() + hi_a.double() * lo_b.double() + lo_a.double() * hi_b.double()


def spread_values(n: int, seed: int) -> torch.Tensor:
    """float32 values with random mantissas over many binades, both signs."""
    g = torch.Generator().manual_seed(seed)
    return ((torch.rand(n, generator=g) + 1) * 2.0 ** torch.randint(-30, 30, (n,), generator=g)
            * torch.sign(torch.randn(n, generator=g))).float()


@pytest.mark.parametrize("rounding", ["nearest", "truncate"])
@pytest.mark.parametrize("precision", FLOAT32_PRECISIONS)
def test_product_error_bound_holds_and_is_tight(precision, rounding):
    """Per product, |computed - a*b| <= PRODUCT_ERROR * |a*b| for 2e5 random pairs, and the worst case comes
    near the bound (it is not loose by an order of magnitude)."""
    a, b = spread_values(200_000, 0), spread_values(200_000, 1)
    exact = a.double() * b.double()
    rel = ((product(a, b, precision, rounding) - exact).abs() / exact.abs()).max().item()
    assert rel <= PRODUCT_ERROR[precision]
    tightness = {"ieee": 0.4, "tf32": 0.8 if rounding == "truncate" else 0.4,
                 "tf32x3": 0.4 if rounding == "truncate" else 0.1}[precision]
    assert rel >= tightness * PRODUCT_ERROR[precision], f"max relative error {rel:.3g}"


def test_tf32_rounding_emulation():
    one_plus = torch.tensor([1 + 2.0 ** -10, 1 + 2.0 ** -11, 1 + 3 * 2.0 ** -11, 1 + 2.0 ** -12])
    assert tf32(one_plus, "nearest").tolist() == [1 + 2.0 ** -10, 1.0, 1 + 2.0 ** -9, 1.0]  # ties to even
    assert tf32(one_plus, "truncate").tolist() == [1 + 2.0 ** -10, 1.0, 1 + 2.0 ** -10, 1.0]


@pytest.mark.parametrize("rounding", ["nearest", "truncate"])
def test_tf32_readout_error_is_within_the_bound_and_above_float32(rounding):
    """A plain-TF32 readout emulated in float64, x and the product spatial*features (the worst case: an operand
    that is itself a rounded product) rounded to TF32: its error against the float64 truth stays within
    PRODUCT_ERROR["tf32"] * S and exceeds the float32 test tolerance (so the mode needs a tolerance of its own)."""
    x, m, w, _ = readout_inputs(8, 16, 8, 8, 24)
    truth = reference.factorized_readout(x.double(), m.double(), w.double())
    operand = (m[:, None] * w[:, :, None, None])  # (N,C,H,W) float32 products
    y = torch.einsum("bchw,nchw->bn", tf32(x, rounding).double(), tf32(operand, rounding).double())
    sums = reference.factorized_readout(x.double().abs(), m.double().abs(), w.double().abs())
    error = (y - truth).abs()
    assert (error <= PRODUCT_ERROR["tf32"] * sums).all()
    assert error.max() > TOL32.rel * truth.abs().max()


def test_autotuner_candidates_and_pruning(triton_device):
    """The autotuner of each kernel and class holds its candidates, keyed on the shape and the precision; blocks
    larger than a small shape are pruned, down to the smallest candidate when none fits."""
    from daenr_fast.kernels import factorized_readout as kernel

    for name, classes in kernel.TILE_CONFIGS.items():
        for cls, configs in classes.items():
            tuner = kernel._autotuner(name, cls)
            assert [c.kwargs for c in tuner.configs] == [{k: v for k, v in cfg.items()
                                                          if k not in ("num_warps", "num_stages")} for cfg in configs]
            assert [(c.num_warps, c.num_stages) for c in tuner.configs] == [(cfg["num_warps"], cfg["num_stages"])
                                                                            for cfg in configs]
            assert list(tuner.keys) == ["B", "C", "P", "N", "PRECISION"]
    tuner = kernel._autotuner("forward", "mma")
    prune = kernel._pruner("forward")
    big = dict(B=128, C=64, P=256, N=1000)
    assert prune(tuner.configs, big) == tuner.configs
    fits = prune(tuner.configs, dict(B=32, C=64, P=1568, N=50))
    assert 0 < len(fits) < len(tuner.configs) and all(c.kwargs["BLOCK_N"] <= 64 for c in fits)
    tiny = prune(tuner.configs, dict(B=3, C=2, P=9, N=5))
    blocks = lambda c: c.kwargs["BLOCK_N"] + c.kwargs["BLOCK_K"]  # noqa: E731
    assert len(tiny) == 1 and blocks(tiny[0]) == min(map(blocks, tuner.configs))
