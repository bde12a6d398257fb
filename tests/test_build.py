"""Extension build: cached by hash, failures fall back to the reference with one warning, never at import."""
import os
import subprocess
import sys

import torch

from daenr_fast import _build, _dispatch


def test_cpu_extension_builds_and_is_cached():
    assert _build.load_extension("factorized_readout") is False  # no CUDA here
    built = [p for p in _build.cache_root().glob("daenr_fast_factorized_readout_cpu_*") if any(p.glob("*.so"))]
    assert built, "the compiled extension should sit in the cache folder"


def test_missing_sources_are_reported_not_raised():
    ok, why = _build.extension_status("no_such_op")
    assert not ok and "source files missing" in why


def run_python(code, **env):
    full_env = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=300,
                          cwd=env.get("DAENR_FAST_CACHE"))


def test_build_failure_falls_back_with_one_warning(tmp_path):
    """With a broken compiler, import works, the op answers via the reference and warns once with the reason."""
    code = (
        "import warnings, torch\n"
        "warnings.simplefilter('always')\n"
        "from daenr_fast.ops import factorized_readout, reference\n"
        "x=torch.randn(2,3,4,4); m=torch.randn(5,4,4); w=torch.randn(5,3)\n"
        "with warnings.catch_warnings(record=True) as rec:\n"
        "    warnings.simplefilter('always')\n"
        "    y1=factorized_readout(x,m,w); y2=factorized_readout(x,m,w)\n"
        "assert torch.allclose(y1, reference.factorized_readout(x,m,w))\n"
        "msgs=[str(r.message) for r in rec if 'C++ extension is unavailable' in str(r.message)]\n"
        "print(len(msgs)); print(msgs[0])\n"
    )
    result = run_python(code, CXX="/nonexistent/c++", DAENR_FAST_CACHE=str(tmp_path))
    assert result.returncode == 0, result.stderr
    count, message = result.stdout.strip().splitlines()[:2]
    assert count == "1"
    assert "factorized_readout uses the PyTorch reference on CPU" in message


def test_no_build_variable_disables_compilation(tmp_path):
    result = run_python(
        "from daenr_fast import _dispatch\n"
        "print(_dispatch.backend_status('factorized_readout', 'cpu'))",
        DAENR_FAST_NO_BUILD="1", DAENR_FAST_CACHE=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "disabled by DAENR_FAST_NO_BUILD" in result.stdout
    assert not list(tmp_path.iterdir())


def test_triton_needs_interpreter_for_cpu_tensors(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    ok, why = _dispatch.triton_status(torch.device("cpu"))
    assert not ok and ("TRITON_INTERPRET" in why or "not installed" in why)


def test_two_processes_building_at_once_both_succeed(tmp_path):
    """Two fresh processes compile into the same empty cache at the same time; both load a working op."""
    code = (
        "import torch\n"
        "from daenr_fast.ops import factorized_readout, reference\n"
        "x=torch.randn(3,4,5,5); m=torch.randn(6,5,5); w=torch.randn(6,4)\n"
        "y=factorized_readout(x,m,w,backend='cpu')\n"
        "assert torch.allclose(y, reference.factorized_readout(x,m,w), atol=1e-5)\n"
        "print('ok')\n"
    )
    env = {**os.environ, "DAENR_FAST_CACHE": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env, cwd=tmp_path) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
        assert out.strip() == "ok"
    assert len(list(tmp_path.glob("daenr_fast_factorized_readout_cpu_*/*.so"))) == 1
