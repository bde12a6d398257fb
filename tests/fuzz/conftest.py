"""Settings of the fuzz suite: the ``fuzz`` marker and the hypothesis profiles.

Choose a profile with ``HYPOTHESIS_PROFILE=NAME`` (default ``ci``):

* ``ci``: a fixed number of examples per test, derandomized (every run tries the same examples, so CI is
  reproducible), no example database, no deadline (the Triton interpreter is slow and uneven). The counts are
  chosen so that ``pytest tests/fuzz`` takes a few minutes on two CPU cores, Triton interpreter included.
* ``long``: ten times as many examples, random ones, for bug hunting; failures are kept in ``.hypothesis/``
  and replayed first on the next run.

A test runs ``share`` times its profile's ``max_examples`` (:func:`inputs.examples`), the shares weighted by what
an example costs (an interpreted Triton kernel launch costs tens of milliseconds).
"""
import os

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # the test modules skip themselves
    settings = None

CI_EXAMPLES = 300

if settings is not None:
    _QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
    settings.register_profile("ci", max_examples=CI_EXAMPLES, deadline=None, derandomize=True, database=None,
                              print_blob=True, suppress_health_check=_QUIET)
    settings.register_profile("long", max_examples=10 * CI_EXAMPLES, deadline=None, print_blob=True,
                              suppress_health_check=_QUIET)


def pytest_configure(config):
    config.addinivalue_line("markers", "fuzz: property-based fuzz tests (hypothesis); skip them with -m 'not fuzz'")
    if settings is not None:
        settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

