"""The model zoo's Gaussian readout (GR): built by name, pixel -> grid conversion under grid_sample's convention, RF
initialisation on simulated data with known centres, the random (neuralpredictors) initialisation, bad options."""
import pytest
import torch
import torch.nn.functional as F

from daenr_fast import data
from daenr_fast.models import GaussianReadout, build_model
from daenr_fast.models.gaussian_head import INIT_MU_RANGE, pixels_to_grid
from daenr_fast.models.receptive_fields import estimate_rf_centers
from daenr_fast.models.registry import EXTRA_MODELS, JOINT_MODELS, MODEL_NAMES


def test_gr_models_are_extra_names():
    assert EXTRA_MODELS == ("cae-gr", "vae-gr", "vq-vae-gr", "cnn-gr")
    assert set(EXTRA_MODELS) <= set(MODEL_NAMES) and not set(EXTRA_MODELS) & set(JOINT_MODELS)
    model = build_model("cnn-gr", layer=3, n_neurons=4)
    assert isinstance(model.readout, GaussianReadout) and model.readout.init == "rf"
    assert model.readout.feature_reg_weight == build_model("cae-fr", layer=3, n_neurons=4).readout \
        .spatial_and_feature_reg_weight


@pytest.mark.parametrize("grid", [16, 8])
def test_pixel_centre_of_a_cell_reads_exactly_that_cell(grid):
    """A position at the image-pixel centre of cell (i, j) reads that cell alone (bilinear weight 1)."""
    cells = torch.tensor([[0, 0], [grid - 1, grid - 1], [2, grid // 2 + 1], [grid // 2, 1]])
    pixels = (cells.double() + 0.5) * (32 / grid) - 0.5
    positions = pixels_to_grid(pixels, (grid, grid), 32)
    x = torch.zeros(len(cells), 1, grid, grid)
    x[torch.arange(len(cells)), 0, cells[:, 0], cells[:, 1]] = 1.0
    read = F.grid_sample(x, positions.view(len(cells), 1, 1, 2), align_corners=True).flatten()
    torch.testing.assert_close(read, torch.ones(len(cells)))


def test_pixels_outside_the_cell_centres_are_clamped():
    positions = pixels_to_grid(torch.tensor([[-0.5, 31.5], [15.5, 15.5]]), (16, 16), 32)
    torch.testing.assert_close(positions, torch.tensor([[1.0, -1.0], [0.0, 0.0]]))


def test_rf_init_puts_positions_at_the_true_centres_of_simulated_neurons():
    dataset = data.load("sim:region3")
    splits = data.prepare(dataset, val_fraction=0.2, seed=0)
    images, responses = splits.tensors("train")
    truth = torch.as_tensor(dataset.ground_truth["rf_centers"]).float()
    torch.manual_seed(0)
    head = build_model("cnn-gr", layer=2, n_neurons=dataset.n_neurons).readout
    random_mu = head.mu.detach().clone()
    assert random_mu.abs().max() <= INIT_MU_RANGE
    centers = head.fit(images, responses)
    torch.testing.assert_close(centers, estimate_rf_centers(images, responses))
    torch.testing.assert_close(head.mu.view(-1, 2), pixels_to_grid(centers, (16, 16), 32))
    error = torch.linalg.norm(_to_pixels(head.mu.detach()) - truth, dim=1)
    random_error = torch.linalg.norm(_to_pixels(random_mu) - truth, dim=1)
    # the simulated RFs cluster near the image centre (std about 3 px), so the random positions (|mu| <= 0.3, about
    # 4.6 px) are not far either: what the fit adds is the close hits
    assert error.median() < 4.0 and error.median() < random_error.median()
    assert (error < 2).float().mean() >= max(0.3, 2 * (random_error < 2).float().mean())


def _to_pixels(mu):
    """(1,n,1,2) positions (x, y) on a 16 x 16 map -> (n,2) (row, col) image pixels: u = 2 k / 15 - 1 and
    k = (c + 1/2) / 2 - 1/2 inverted."""
    cells = (mu.view(-1, 2).flip(1) + 1) * 7.5
    return (cells + 0.5) * 2 - 0.5


def test_random_init_keeps_neuralpredictors_positions():
    torch.manual_seed(1)
    head = build_model("cae-gr", layer=4, n_neurons=5, gr_init="random").readout
    mu = head.mu.detach().clone()
    assert head.fit(torch.zeros(6, 1, 32, 32), torch.zeros(6, 5)) is None
    assert torch.equal(head.mu, mu)


def test_masks_are_the_bilinear_weights_at_the_mean_positions():
    head = build_model("cnn-gr", layer=3, n_neurons=3).readout
    with torch.no_grad():
        head._mu.copy_(torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]]).view_as(head._mu))
    masks = head.masks()
    assert masks.shape == (3, 8, 8)
    torch.testing.assert_close(masks.sum((1, 2)), torch.ones(3))
    assert masks[0, 0, 0] == 1 and masks[1, 7, 7] == 1 and torch.allclose(masks[2, 3:5, 3:5], torch.full((2, 2), 0.25))


def test_bad_gr_init_and_fit_arguments():
    with pytest.raises(ValueError, match="unknown Gaussian readout init 'grid' .*valid: rf, random"):
        build_model("cnn-gr", layer=2, n_neurons=3, gr_init="grid")
    head = build_model("cnn-gr", layer=2, n_neurons=3).readout
    with pytest.raises(ValueError, match=r"images must have shape \(N, 1, 32, 32\)"):
        head.fit(torch.zeros(4, 32, 32), torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"responses must have shape \(N, outdims\) = \(4, 3\)"):
        head.fit(torch.zeros(4, 1, 32, 32), torch.zeros(4, 2))
