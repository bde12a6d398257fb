"""Peak extra memory of each implementation of a case (the method is described in :mod:`daenr_fast.bench.timing`).

CUDA: measured in this process with the caching allocator's peak statistics.
CPU: measured in a child process, ``python -m daenr_fast.bench.memory ...``, started with
``MALLOC_MMAP_THRESHOLD_=65536`` and the run's thread count; it rebuilds the case, calls each implementation twice
to warm it up, then reports the rise of the resident-set high-water mark during a third call as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import torch

from daenr_fast.bench.timing import cuda_peak_extra_bytes, rss_peak_extra_bytes, rss_supported

MMAP_THRESHOLD = 65536
CHILD_TIMEOUT_S = 900


def peak_extra_bytes(module, size: str, mode: str, settings, impls) -> dict[str, int | None]:
    """Peak extra bytes of one call of every available implementation, by name (None: not measured)."""
    names = [i.name for i in impls if i.available]
    device = torch.device(settings.device)
    if device.type == "cuda":
        return {i.name: cuda_peak_extra_bytes(i.fn, device) for i in impls if i.available}
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(MMAP_THRESHOLD), OMP_NUM_THREADS=str(settings.threads))
    cmd = [sys.executable, "-m", "daenr_fast.bench.memory", "--op", module.OP, "--size", size, "--mode", mode,
           "--dtype", settings.dtype, "--threads", str(settings.threads), "--impls", json.dumps(names)]
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
        result = json.loads(done.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, json.JSONDecodeError, IndexError) as err:
        print(f"  memory: not measured ({type(err).__name__})", file=sys.stderr)
        return {}
    return {k: (None if v is None else int(v)) for k, v in result.items()}


def _child(argv: list[str] | None = None) -> int:
    from daenr_fast import bench

    p = argparse.ArgumentParser(description="peak extra resident memory of each implementation of one case")
    p.add_argument("--op", required=True, choices=sorted(bench.OPS))
    p.add_argument("--size", required=True)
    p.add_argument("--mode", required=True)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--impls", required=True, help="JSON list of implementation names")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    module = bench.OPS[args.op]
    wanted = json.loads(args.impls)
    inputs = module.make_inputs(module.SIZES[args.size], torch.device("cpu"), getattr(torch, args.dtype))
    impls = module.implementations(inputs, args.mode, torch.device("cpu"),
                                   compile=any(n.startswith("torch.compile") for n in wanted))
    ok = rss_supported()
    result = {}
    for impl in impls:
        if impl.name not in wanted or not impl.available:
            continue
        try:
            impl.fn()
            impl.fn()
            result[impl.name] = rss_peak_extra_bytes(impl.fn) if ok else None
        except Exception:  # reported as not measured; the timing run reports the error itself
            result[impl.name] = None
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_child())
