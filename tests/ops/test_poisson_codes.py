"""Poisson loss option codes: the C++/CUDA header csrc/poisson_loss_enums.h and the Python enums of
daenr_fast.ops.poisson_codes define the same names and values; the header compiles alone without torch; the
user-facing activation strings follow from the enum."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from daenr_fast.ops import reference
from daenr_fast.ops.poisson_codes import ACTIVATION_NAMES, PoissonActivation, PoissonMode

HEADER = Path(__file__).resolve().parents[2] / "csrc" / "poisson_loss_enums.h"


def header_text() -> str:
    """The header without its comments."""
    return re.sub(r"//[^\n]*", "", HEADER.read_text())


def header_enum(name: str) -> dict[str, int]:
    """Enumerators of ``enum <name> : int { kName = value, ... }`` as {kName: value}."""
    match = re.search(rf"\benum\s+{name}\s*:\s*int\s*\{{(.*?)\}}", header_text(), re.S)
    assert match, f"enum {name} not found in {HEADER}"
    items = [item.strip() for item in match.group(1).split(",") if item.strip()]
    pairs = [re.fullmatch(r"(k\w+)\s*=\s*(\d+)", item) for item in items]
    assert all(pairs), f"every enumerator of {name} needs an explicit value: {items}"
    return {m.group(1): int(m.group(2)) for m in pairs}


def header_constant(name: str) -> int:
    match = re.search(rf"\bconstexpr\s+int\s+{name}\s*=\s*(\d+)\s*;", header_text())
    assert match, f"constexpr int {name} not found in {HEADER}"
    return int(match.group(1))


def python_name(cpp_name: str, prefix: str) -> str:
    """kIdentity -> IDENTITY, kModePerNeuron -> PER_NEURON (``prefix`` follows the k)."""
    assert cpp_name.startswith("k" + prefix), cpp_name
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", cpp_name[1 + len(prefix):]).upper()


@pytest.mark.parametrize("enum_name,prefix,count_name,py_enum", [
    ("PoissonActivation", "", "kNumPoissonActivations", PoissonActivation),
    ("PoissonMode", "Mode", "kNumPoissonModes", PoissonMode),
], ids=["activation", "mode"])
def test_header_matches_python_enum(enum_name, prefix, count_name, py_enum):
    cpp = {python_name(k, prefix): v for k, v in header_enum(enum_name).items()}
    assert cpp == {m.name: m.value for m in py_enum}
    assert header_constant(count_name) == len(py_enum)
    assert sorted(m.value for m in py_enum) == list(range(len(py_enum)))  # codes 0..count-1, as the bindings check


def test_activation_names_follow_the_enum():
    assert ACTIVATION_NAMES == tuple(m.name.lower() for m in PoissonActivation)
    assert ACTIVATION_NAMES == reference.POISSON_ACTIVATIONS
    assert [ACTIVATION_NAMES.index(name) for name in ACTIVATION_NAMES] == [int(m) for m in PoissonActivation]


# Uses the enumerators as template arguments and in `if constexpr`, as the kernels do.
USE_HEADER = """#include "poisson_loss_enums.h"
template <int ACT>
constexpr bool is_exp() {
  if constexpr (ACT == daenr::kExp) return true;
  else return false;
}
static_assert(is_exp<daenr::kExp>() && !is_exp<daenr::kIdentity>(), "");
static_assert(daenr::kModePerNeuron < daenr::kNumPoissonModes, "");
"""


def test_header_compiles_alone_without_torch(tmp_path):
    """Only csrc/ on the include path and no C++ standard library headers: the header needs neither torch nor std."""
    compiler = shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler (c++) on PATH")
    source = tmp_path / "use_poisson_enums.cpp"
    source.write_text(USE_HEADER)
    command = [compiler, "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-nostdinc++",
               f"-I{HEADER.parent}", "-x", "c++", str(source)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
