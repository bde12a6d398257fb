"""nn.Modules over the fused ops: the three readouts of the paper (FR, FC, FM), the Gaussian readout (GR), the Poisson
loss and the VQ layer."""
from daenr_fast.nn.factorized_readout import FactorizedReadout, FullFactorized2d, FullSXF, SpatialXFeatureLinear
from daenr_fast.nn.fixed_mask_readout import FixedMaskReadout
from daenr_fast.nn.fully_connected_readout import FullyConnectedReadout
from daenr_fast.nn.gaussian_readout import FullGaussian2d
from daenr_fast.nn.poisson_loss import PoissonLoss
from daenr_fast.nn.vector_quantizer import VectorQuantizer

__all__ = ["FactorizedReadout", "FullFactorized2d", "FullSXF", "SpatialXFeatureLinear", "FixedMaskReadout",
           "FullyConnectedReadout", "FullGaussian2d", "PoissonLoss", "VectorQuantizer"]
