"""Fuzzing the input checks: a valid call with one thing made wrong must raise ValueError or TypeError whose message
names the argument at fault, on every backend here, never another exception and never a crash.

Drawn per op: a small valid call (dtype, shapes, layouts stay simple), a backend that takes it (or none), and one
mutation: a wrong rank, a mismatched dimension, mixed dtypes, an integer/bool/complex tensor, a non-tensor (list,
number, numpy array, string, None), a tensor on another device (a GPU when there is one, else ``meta``), an
unknown backend or one that does not take the dtype; for poisson_loss also NaN, infinite or negative targets (at
drawn places, found by each backend's fused check), targets beyond z's dtype, negative identity rates, bad
activation/reduction/eps/per_neuron options; for vq_lookup a codebook of the wrong width or without codes; for
gaussian_readout an empty map, non-finite positions (validate=True) and a non-bool align_corners.
"""
import re

import pytest
import torch

pytest.importorskip("hypothesis")

from hypothesis import given, strategies as st  # noqa: E402

from daenr_fast import _dispatch  # noqa: E402
from daenr_fast.ops import OPS, factorized_readout, poisson_loss, vq_lookup  # noqa: E402
from daenr_fast.ops.poisson_codes import ACTIVATION_NAMES  # noqa: E402
from daenr_fast.ops.poisson_loss import REDUCTIONS  # noqa: E402

from .inputs import examples  # noqa: E402

pytestmark = pytest.mark.fuzz
OTHER_DEVICE = torch.device("cuda") if torch.cuda.is_available() else torch.device("meta")
FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
NOT_FLOAT = (torch.int32, torch.int64, torch.uint8, torch.bool, torch.complex64)


def available_backends(op: str, dtype: torch.dtype) -> list:
    """None (dispatch chooses) and every backend that takes CPU tensors of ``dtype`` here."""
    return [None] + [b for b in OPS[op].backends if _dispatch.backend_status(op, b, torch.device("cpu"), dtype)[0]]


def expect_rejected(call, names) -> None:
    """``call()`` raises ValueError or TypeError whose message names one of ``names`` (as a word)."""
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    message = str(info.value)
    assert any(re.search(rf"(?<![\w.]){re.escape(n)}(?!\w)", message) for n in names), \
        f"{type(info.value).__name__} does not name {' or '.join(names)}: {message}"


def tensor(shape, dtype=torch.float32, positive=False):
    t = torch.rand(shape) + 0.5 if positive else torch.randn(shape)
    return t.to(dtype)


def other_dtype_tensor(draw, t: torch.Tensor) -> torch.Tensor:
    dtype = draw(st.sampled_from([d for d in FLOATS if d != t.dtype]), label="other dtype")
    return t.to(dtype)


def not_float_tensor(draw, t: torch.Tensor) -> torch.Tensor:
    return t.to(draw(st.sampled_from(NOT_FLOAT), label="non-floating dtype"))


def non_tensor(draw, t: torch.Tensor, allow_none: bool = True):
    kinds = ["list", "float", "int", "numpy", "string", "tuple"] + (["none"] if allow_none else [])
    kind = draw(st.sampled_from(kinds), label="non-tensor")
    return {"list": lambda: t.tolist(), "float": lambda: 1.0, "int": lambda: 3,
            "numpy": lambda: t.float().numpy(), "string": lambda: "tensor", "tuple": lambda: tuple(t.shape),
            "none": lambda: None}[kind]()


def wrong_rank(draw, t: torch.Tensor) -> torch.Tensor:
    rank = draw(st.integers(0, 5).filter(lambda r: r != t.dim()), label="wrong rank")
    return tensor(tuple(draw(st.integers(1, 3)) for _ in range(rank)), t.dtype)


def other_size(draw, n: int) -> int:
    return draw(st.integers(0, 6).filter(lambda v: v != n), label="other size")


def draw_dtype_and_backend(draw, op: str):
    dtype = draw(st.sampled_from(FLOATS), label="dtype")
    return dtype, draw(st.sampled_from(available_backends(op, dtype)), label="backend")


def backend_mutation(draw, op: str, dtype: torch.dtype):
    """A backend argument that cannot be taken: unknown, or (when there is one) one that does not take ``dtype``."""
    refusing = [b for b in OPS[op].backends if dtype not in OPS[op].dtypes[b]]
    return draw(st.sampled_from(["gpu", "Torch-", "", "numpy"] + refusing), label="bad backend")


# ---------------------------------------------------------------------------------------------- factorized_readout

READOUT_MUTATIONS = ("rank", "shape", "mixed dtype", "dtype", "non-tensor", "device", "backend")


@examples(2)
@given(data=st.data())
def test_factorized_readout_rejects_bad_inputs(data):
    draw = data.draw
    dtype, backend = draw_dtype_and_backend(draw, "factorized_readout")
    B, C, H, W, N = (draw(st.integers(1, 4), label=n) for n in "BCHWN")
    args = {"x": tensor((B, C, H, W), dtype), "spatial": tensor((N, H, W), dtype), "features": tensor((N, C), dtype),
            "bias": tensor((N,), dtype)}
    mutation = draw(st.sampled_from(READOUT_MUTATIONS), label="mutation")
    name = draw(st.sampled_from(list(args)), label="argument")
    names = [name]
    if mutation == "rank":
        args[name] = wrong_rank(draw, args[name])
    elif mutation == "shape":  # any dimension but the batch, which is free
        t = args[name]
        dim = draw(st.integers(1 if name == "x" else 0, t.dim() - 1), label="dimension")
        shape = list(t.shape)
        shape[dim] = other_size(draw, shape[dim])
        args[name] = tensor(tuple(shape), dtype)
        names = list(args)  # a mismatch is reported at the argument that disagrees with the others
    elif mutation == "mixed dtype":
        args[name] = other_dtype_tensor(draw, args[name])
    elif mutation == "dtype":
        args[name] = not_float_tensor(draw, args[name])
    elif mutation == "non-tensor":
        args[name] = non_tensor(draw, args[name], allow_none=name != "bias")
    elif mutation == "device":
        args[name] = args[name].to(OTHER_DEVICE)
    else:
        backend, names = backend_mutation(draw, "factorized_readout", dtype), ["backend"]
    expect_rejected(lambda: factorized_readout(args["x"], args["spatial"], args["features"], args["bias"],
                                               backend=backend), names)


# ---------------------------------------------------------------------------------------------- poisson_loss

POISSON_MUTATIONS = ("z non-tensor", "z dtype", "target non-tensor", "target dtype", "target shape", "target device",
                     "target values", "target beyond z's dtype", "negative identity rate", "activation", "reduction",
                     "per_neuron with none", "per_neuron of a scalar", "eps", "eps beyond z's dtype", "backend")


@examples(2)
@given(data=st.data())
def test_poisson_loss_rejects_bad_inputs(data):
    draw = data.draw
    dtype, backend = draw_dtype_and_backend(draw, "poisson_loss")
    shape = tuple(draw(st.integers(1, 4)) for _ in range(draw(st.integers(1, 3), label="rank")))
    z, target = tensor(shape, dtype, positive=True), torch.poisson(torch.rand(shape) * 3)
    options = dict(activation=draw(st.sampled_from(ACTIVATION_NAMES), label="activation"),
                   reduction=draw(st.sampled_from(REDUCTIONS), label="reduction"))
    mutation = draw(st.sampled_from(POISSON_MUTATIONS), label="mutation")
    names = ["target"] if mutation.startswith("target") else ["z"]
    if mutation == "z non-tensor":
        z = non_tensor(draw, z)
    elif mutation == "z dtype":
        z = not_float_tensor(draw, z)
    elif mutation == "target non-tensor":
        target = non_tensor(draw, target)
    elif mutation == "target dtype":
        target = target.to(draw(st.sampled_from((torch.bool, torch.complex64)), label="target dtype"))
    elif mutation == "target shape":
        other = list(shape)
        if draw(st.booleans(), label="extra dimension"):
            other.append(draw(st.integers(1, 3)))
        else:
            dim = draw(st.integers(0, len(shape) - 1), label="dimension")
            other[dim] = other_size(draw, other[dim])
        target = torch.poisson(torch.rand(other) * 3)
    elif mutation == "target device":
        target = target.to(OTHER_DEVICE)
    elif mutation == "target values":
        flat = target.reshape(-1)
        for where in draw(st.lists(st.integers(0, flat.numel() - 1), min_size=1, max_size=3), label="where"):
            flat[where] = draw(st.sampled_from((float("nan"), float("inf"), float("-inf"), -1.0, -1e-3)),
                               label="bad target")
    elif mutation == "target beyond z's dtype":  # (float64 z: an infinite target)
        target = target.double() + (4 * torch.finfo(dtype).max if dtype != torch.float64 else float("inf"))
    elif mutation == "negative identity rate":
        options["activation"] = "identity"
        z.reshape(-1)[draw(st.integers(0, z.numel() - 1), label="where")] = -draw(
            st.sampled_from((1.0, 0.5, 1e-3)), label="negative rate")
    elif mutation == "activation":
        options["activation"], names = draw(st.sampled_from(("relu", "Exp", "", None, 3)), label="bad"), ["activation"]
    elif mutation == "reduction":
        options["reduction"], names = draw(st.sampled_from(("avg", "MEAN", None, "batchmean")), label="bad"), \
            ["reduction"]
    elif mutation == "per_neuron with none":
        options.update(reduction="none", per_neuron=True)
        names = ["per_neuron"]
    elif mutation == "per_neuron of a scalar":
        z, target = z.reshape(-1)[0], target.reshape(-1)[0]
        options.update(reduction=draw(st.sampled_from(("mean", "sum")), label="reduction"), per_neuron=True)
    elif mutation == "eps":
        options["eps"], names = draw(st.sampled_from((-1e-8, -1.0, float("nan"), float("inf"), "1e-8", None)),
                                     label="bad eps"), ["eps"]
    elif mutation == "eps beyond z's dtype":
        options["eps"], names = 10 * float(torch.finfo(dtype).max) if dtype != torch.float64 else float("inf"), \
            ["eps"]
    else:
        backend, names = backend_mutation(draw, "poisson_loss", dtype), ["backend"]
    expect_rejected(lambda: poisson_loss(z, target, backend=backend, **options), names)


# ---------------------------------------------------------------------------------------------- vq_lookup

VQ_MUTATIONS = ("rank", "mixed dtype", "dtype", "non-tensor", "device", "width", "no codes", "backend")


@examples(2)
@given(data=st.data())
def test_vq_lookup_rejects_bad_inputs(data):
    draw = data.draw
    dtype, backend = draw_dtype_and_backend(draw, "vq_lookup")
    M, K, D = (draw(st.integers(1, 5), label=n) for n in "MKD")
    args = {"z": tensor((M, D), dtype), "codebook": tensor((K, D), dtype)}
    mutation = draw(st.sampled_from(VQ_MUTATIONS), label="mutation")
    name = draw(st.sampled_from(list(args)), label="argument")
    names = [name]
    if mutation == "rank":
        args[name] = wrong_rank(draw, args[name])
    elif mutation == "mixed dtype":
        args[name] = other_dtype_tensor(draw, args[name])
    elif mutation == "dtype":
        args[name] = not_float_tensor(draw, args[name])
    elif mutation == "non-tensor":
        args[name] = non_tensor(draw, args[name])
    elif mutation == "device":
        args[name] = args[name].to(OTHER_DEVICE)
    elif mutation == "width":
        args["codebook"], names = tensor((K, other_size(draw, D)), dtype), ["codebook"]
    elif mutation == "no codes":
        args["codebook"], names = tensor((0, D), dtype), ["codebook"]
    else:
        backend, names = backend_mutation(draw, "vq_lookup", dtype), ["backend"]
    expect_rejected(lambda: vq_lookup(args["z"], args["codebook"], backend=backend), names)


# ---------------------------------------------------------------------------------------------- gaussian_readout

GAUSSIAN_MUTATIONS = ("rank", "shape", "empty map", "mixed dtype", "dtype", "non-tensor", "device",
                      "non-finite grid", "align_corners", "backend")


@pytest.mark.skipif("gaussian_readout" not in OPS, reason="gaussian_readout is not a registered op here")
@examples(2)
@given(data=st.data())
def test_gaussian_readout_rejects_bad_inputs(data):
    from daenr_fast.ops import gaussian_readout

    draw = data.draw
    dtype, backend = draw_dtype_and_backend(draw, "gaussian_readout")
    B, C, H, W, N = (draw(st.integers(1, 4), label=n) for n in "BCHWN")
    shared = draw(st.booleans(), label="shared grid")
    args = {"x": tensor((B, C, H, W), dtype), "grid": tensor((N, 2) if shared else (B, N, 2), dtype).clamp(-1, 1),
            "features": tensor((C, N), dtype), "bias": tensor((N,), dtype)}
    align_corners = True
    mutation = draw(st.sampled_from(GAUSSIAN_MUTATIONS), label="mutation")
    name = draw(st.sampled_from(list(args)), label="argument")
    names = [name]
    if mutation == "rank":
        args[name] = wrong_rank(draw, args[name])
        if name == "grid" and args[name].dim() in (2, 3):  # the other accepted rank, of a wrong shape
            args[name] = tensor(tuple(args[name].shape[:-1]) + (3,), dtype)
    elif mutation == "shape":  # of x only the channels must match (its batch and map size are free)
        t = args[name]
        dim = 1 if name == "x" else draw(st.integers(0, t.dim() - 1), label="dimension")
        shape = list(t.shape)
        shape[dim] = other_size(draw, shape[dim])
        args[name] = tensor(tuple(shape), dtype)
        names = list(args)  # a mismatch is reported at the argument that disagrees with the others
    elif mutation == "empty map":
        shape = [B, C, H, W]
        shape[draw(st.sampled_from((2, 3)), label="dimension")] = 0
        args["x"], names = tensor(tuple(shape), dtype), ["x"]
    elif mutation == "mixed dtype":
        args[name] = other_dtype_tensor(draw, args[name])
    elif mutation == "dtype":
        args[name] = not_float_tensor(draw, args[name])
    elif mutation == "non-tensor":
        args[name] = non_tensor(draw, args[name], allow_none=name != "bias")
    elif mutation == "device":
        args[name] = args[name].to(OTHER_DEVICE)
    elif mutation == "non-finite grid":
        flat = args["grid"].reshape(-1)
        flat[draw(st.integers(0, flat.numel() - 1), label="where")] = draw(
            st.sampled_from((float("nan"), float("inf"), float("-inf"))), label="bad position")
        names = ["grid"]
    elif mutation == "align_corners":
        align_corners, names = draw(st.sampled_from((1, 0, "True", None, 1.0)), label="bad"), ["align_corners"]
    else:
        backend, names = backend_mutation(draw, "gaussian_readout", dtype), ["backend"]
    expect_rejected(lambda: gaussian_readout(args["x"], args["grid"], args["features"], args["bias"],
                                             align_corners=align_corners, backend=backend), names)
