"""Extension build: cached by hash, failures fall back to the reference with one warning, never at import."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
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


def snapshot_sources(tmp_path):
    """A copy of csrc/ (so that editing the sources meanwhile changes none of the test's builds) and the line
    that makes a child process build from it."""
    import shutil

    src = tmp_path / "csrc"
    shutil.copytree(_build.CSRC, src)
    return src, f"import pathlib; from daenr_fast import _build; _build.CSRC = pathlib.Path({str(src)!r})\n"


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
    assert "/nonexistent/c++: not found" in message and f"(full log: {tmp_path}" in message


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


# ---- flags follow the installed torch ---------------------------------------------------------------------------

def test_flags_leave_the_standard_to_torch_and_cxx_std_names_it():
    """Our flags carry no -std; the build command torch writes has exactly one, the one cxx_std reports."""
    assert not [f for f in _build.CXX_FLAGS + _build.NVCC_FLAGS if f.startswith("-std")]
    _build.load_extension("factorized_readout")
    ninja = (_build.build_dir("factorized_readout", False) / "build.ninja").read_text()
    cflags = next(line for line in ninja.splitlines() if line.startswith("cflags ="))
    assert [f for f in cflags.split() if f.startswith("-std=")] == [f"-std={_build.cxx_std()}"]


def test_print_std_prints_the_standard(capsys):
    from daenr_fast import cli

    assert cli.main(["build", "--print-std"]) == 0
    assert capsys.readouterr().out.strip() == _build.cxx_std()


# ---- failed builds explain themselves ---------------------------------------------------------------------------

GCC_OUTPUT = (
    "Error building extension 'daenr_fast_x_cpu_0': [1/3] c++ -MMD -MF x.o.d " + "-isystem /long/include " * 30
    + "-c /src/x.cpp -o x.o\nFAILED: [code=1] x.o\nc++ -MMD " + "-Werror=foo " * 20 + "\n"
    "/src/x.cpp: In function 'void f()':\n"
    "/src/x.cpp:7:3: error: 'undeclared' was not declared in this scope\n"
    "/src/x.cpp:8:3: error: second\nninja: build stopped: subcommand failed.\n")


def test_first_error_finds_the_compiler_error_line_past_the_command_lines():
    assert _build._first_error(GCC_OUTPUT) == "/src/x.cpp:7:3: error: 'undeclared' was not declared in this scope"
    nvcc = "[1/2] nvcc -c a.cu\nFAILED: a.cuda.o\na.cu(12): error: identifier \"q\" is undefined\n"
    assert _build._first_error(nvcc) == 'a.cu(12): error: identifier "q" is undefined'
    link = "[3/3] c++ x.o -o x.so\nx.o: undefined reference to `g()'\ncollect2: error: ld returned 1 exit status\n"
    assert _build._first_error(link) == "x.o: undefined reference to `g()'"
    assert _build._first_error("OSError: x.so: undefined symbol: _Z1gv") == "OSError: x.so: undefined symbol: _Z1gv"


def test_failed_compile_names_the_op_the_first_error_and_the_log(tmp_path):
    """A real compile error: one warning with the op, the compiler's error line and the log, which holds the whole
    output; ``daenr build`` prints the same and fails."""
    src, use_snapshot = snapshot_sources(tmp_path)
    with open(src / "cpu" / "poisson_loss_cpu.cpp", "a", encoding="utf-8") as f:
        f.write("\nint daenr_broken = daenr_undeclared_name;\n")
    code = use_snapshot + (
        "import sys, warnings, torch\n"
        "from daenr_fast import _dispatch, cli\n"
        "with warnings.catch_warnings(record=True) as rec:\n"
        "    warnings.simplefilter('always')\n"
        "    for _ in range(2):\n"
        "        assert _dispatch.resolve_backend('poisson_loss', None, torch.device('cpu')) == 'torch'\n"
        "msgs = [str(r.message) for r in rec if issubclass(r.category, RuntimeWarning)]\n"
        "print(len(msgs)); print(msgs[0])\n"
        "sys.stdout.flush()\n"
        "print('exit', cli.main(['build', '--ops', 'poisson_loss']))\n"
    )
    (tmp_path / "cache").mkdir()
    result = run_python(code, DAENR_FAST_CACHE=str(tmp_path / "cache"))
    assert result.returncode == 0, result.stderr
    count, warning, build_line, exit_line = result.stdout.strip().splitlines()
    assert count == "1"
    assert "poisson_loss uses the PyTorch reference on CPU" in warning
    assert re.search(r"poisson_loss_cpu\.cpp:\d+:\d+: error: .daenr_undeclared_name. was not declared", warning)
    log = Path(warning.split("(full log: ")[1].rstrip(")"))
    assert log.name == "build.log" and log.parent.parent == tmp_path / "cache"
    text = log.read_text()
    assert "-c " + str(src / "cpu" / "poisson_loss_cpu.cpp") in text and "daenr_undeclared_name" in text
    reason = warning.split("unavailable: ", 1)[1]
    assert build_line == f"poisson_loss: FAILED: {reason}"
    assert exit_line == "exit 1"


# ---- a killed build never blocks later ones ---------------------------------------------------------------------

def test_waiting_for_a_live_build_gives_up_with_the_lock_and_its_holder(tmp_path, monkeypatch):
    import fcntl

    monkeypatch.setenv("DAENR_FAST_BUILD_TIMEOUT", "0.3")
    lock = tmp_path / _build.LOCK_NAME
    with open(lock, "w") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        holder.write("4242\n")
        holder.flush()
        with pytest.raises(_build.ExtensionUnavailable) as info:
            with _build._build_lock(tmp_path):
                pass
    message = str(info.value)
    assert str(lock) in message and "process 4242" in message and f"delete {tmp_path}" in message


@pytest.mark.parametrize("by_existence", [True, False])
def test_a_dead_builds_torch_lock_file_is_removed_only_where_its_existence_locks(tmp_path, monkeypatch,
                                                                                 by_existence):
    monkeypatch.setattr(_build, "_torch_locks_by_existence", lambda: by_existence)
    (tmp_path / "lock").write_text("")
    with _build._build_lock(tmp_path):
        assert (tmp_path / "lock").exists() is not by_existence


def test_a_build_killed_mid_compile_does_not_block_the_next_process(tmp_path):
    """SIGTERM while the first process compiles (with torch 2.13 that leaves torch's lock file behind); the next
    process still builds and runs the compiled op, in bounded time."""
    import signal
    import time

    _, use_snapshot = snapshot_sources(tmp_path)
    cache = tmp_path / "cache"
    code = use_snapshot + (
        "import torch\n"
        "from daenr_fast import _dispatch\n"
        "from daenr_fast.ops import factorized_readout, reference\n"
        "print(_dispatch.resolve_backend('factorized_readout', None, torch.device('cpu'), torch.float32))\n"
        "x=torch.randn(3,4,5,5); m=torch.randn(6,5,5); w=torch.randn(6,4)\n"
        "y=factorized_readout(x,m,w,backend='cpu')\n"
        "assert torch.allclose(y, reference.factorized_readout(x,m,w), atol=1e-5)\n"
        "print('ok')\n"
    )
    env = {**os.environ, "DAENR_FAST_CACHE": str(cache)}
    first = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    torch_lock = "daenr_fast_factorized_readout_cpu_*/lock"
    deadline = time.monotonic() + 120
    while not list(cache.glob(torch_lock)):  # torch took its lock ...
        assert first.poll() is None and time.monotonic() < deadline, "the first build never started"
        time.sleep(0.05)
    time.sleep(1.0)  # ... and ninja is compiling
    first.send_signal(signal.SIGTERM)
    first.wait(timeout=30)
    assert first.returncode == -signal.SIGTERM
    stale = _build._torch_locks_by_existence()
    if stale:
        assert list(cache.glob(torch_lock)), "the kill should leave torch's lock file"
    second = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert second.returncode == 0, second.stderr
    assert second.stdout.split() == ["cpu", "ok"]
    if stale:
        assert "left by a build that was killed" in second.stderr and not list(cache.glob(torch_lock))


# ---- the same build command whatever the load order -------------------------------------------------------------

def test_load_order_changes_no_build_command(tmp_path):
    """Two processes load two ops in opposite orders into one cache: one build per op, no relink by the second,
    and the flag constants are what they were."""
    _, use_snapshot = snapshot_sources(tmp_path)
    cache = tmp_path / "cache"
    code = use_snapshot + (
        "import sys\n"
        "before = (_build.CXX_FLAGS, _build.LD_FLAGS, _build.NVCC_FLAGS)\n"
        "for op in sys.argv[1:]:\n"
        "    _build.load_extension(op)\n"
        "print(before == (_build.CXX_FLAGS, _build.LD_FLAGS, _build.NVCC_FLAGS))\n"
    )
    env = {**os.environ, "DAENR_FAST_CACHE": str(cache)}

    def load(*ops):
        result = subprocess.run([sys.executable, "-c", code, *ops], env=env, cwd=tmp_path, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "True"

    def state():
        return {p: p.stat().st_mtime_ns for p in cache.glob("*/*.so")}, \
               {p: p.read_text() for p in cache.glob("*/.ninja_log")}

    load("poisson_loss", "vq_lookup")
    libs, logs = state()
    assert sorted(p.parent.name.split("_cpu_")[0] for p in libs) == ["daenr_fast_poisson_loss",
                                                                    "daenr_fast_vq_lookup"]
    load("vq_lookup", "poisson_loss")
    assert state() == (libs, logs)


# ---- CI: the compiled backend is in use -------------------------------------------------------------------------

def test_every_op_uses_its_compiled_cpu_backend_when_ci_expects_it():
    """CI sets DAENR_FAST_EXPECT_COMPILED=1 so that a silent fallback to the reference fails it."""
    from daenr_fast.commands.build import op_names

    if not os.environ.get("DAENR_FAST_EXPECT_COMPILED"):
        pytest.skip("DAENR_FAST_EXPECT_COMPILED is unset: only CI requires the compiled cpu backend")
    for op in op_names():
        assert _build.extension_status(op) == (True, ""), op
        assert _dispatch.resolve_backend(op, None, torch.device("cpu"), torch.float32) == "cpu", op
