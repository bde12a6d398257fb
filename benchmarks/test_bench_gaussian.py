"""pytest-benchmark suite of the Gaussian readout op: every implementation of :mod:`daenr_fast.bench.gaussian`,
checked against the reference and timed. Quick by default (tiny sizes); ``DAENR_BENCH_SIZES=paper,sensorium`` and
the other variables of :mod:`daenr_fast.bench.suite` make it a measurement."""
import pytest

from daenr_fast.bench import gaussian as cases
from daenr_fast.bench import suite


@pytest.mark.parametrize("size,mode,name", suite.params(cases))
def test_gaussian(benchmark, size, mode, name):
    suite.check_and_time(benchmark, cases, size, mode, name)
