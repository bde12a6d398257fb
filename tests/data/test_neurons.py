"""The model neurons (daenr_fast.data.neurons): Gabor filters, energy, end-stopping."""
import numpy as np

from daenr_fast.data.neurons import Population, drive_components, gabor_filters, raw_drive


def population(norm_sigma):
    """Two complex cells at the centre of a 31-pixel field, bars vertical (orientation 0: carrier along columns)."""
    n = len(norm_sigma)
    return Population(
        centers=np.full((n, 2), 15.0), orientation=np.zeros(n), sigma=np.full(n, 2.5), wavelength=np.full(n, 6.0),
        phase=np.zeros(n), aspect=np.full(n, 1.0), complex_cell=np.ones(n, bool), mean_rate=np.ones(n),
        slope=np.ones(n), size=31, norm_sigma=np.asarray(norm_sigma, float), surround=np.full(n, 2.0))


def gratings(half_lengths, size=32):
    """Vertical gratings at the preferred wavelength, cut to rows |r - centre| <= half_length (model grid)."""
    g = (np.arange(size) + 0.5) * 31 / size - 0.5
    carrier = np.cos(2 * np.pi * (g[None, :] - 15.0) / 6.0) * np.ones((size, 1))
    return np.stack([carrier * (np.abs(g[:, None] - 15.0) <= h) for h in half_lengths])


def test_filters_are_zero_mean_unit_norm_on_any_grid():
    pop = population([np.inf])
    for size in (31, 32, 64):
        g = gabor_filters(pop, size=size)
        assert g.shape == (1, size, size)
        np.testing.assert_allclose(g.sum(), 0.0, atol=1e-9)
        np.testing.assert_allclose(np.linalg.norm(g), 1.0)


def test_end_stopping_suppresses_long_bars():
    pop = population([np.inf, 0.05])
    images = gratings([3.0, 15.0])  # a short grating inside the RF, then one that runs through the end zones
    drive = raw_drive(pop, images)
    plain, stopped = drive[:, 0], drive[:, 1]
    assert plain[1] >= plain[0] * 0.99  # a plain cell barely cares about the grating's length
    assert stopped[1] < 0.5 * stopped[0]  # the end-stopped cell is suppressed by the long one
    unsuppressed, s = drive_components(pop, images)
    assert s.shape == (2, 1) and s[1, 0] > 3 * s[0, 0]  # the long grating fills the end zones, the short one
    np.testing.assert_allclose(unsuppressed[:, 1], plain)  # only their edge
    np.testing.assert_allclose(stopped, plain / (0.05 + s[:, 0]))


def test_population_select_and_cell_types():
    pop = population([np.inf, 0.1, 0.2])
    pop.complex_cell[0] = False
    assert list(pop.cell_types) == ["simple", "complex-end-stopped", "complex-end-stopped"]
    sub = pop.select([2, 0])
    assert sub.n == 2 and list(sub.cell_types) == ["complex-end-stopped", "simple"]
    np.testing.assert_array_equal(sub.norm_sigma, [0.2, np.inf])
