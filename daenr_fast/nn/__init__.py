"""nn.Modules over the fused ops."""
from daenr_fast.nn.factorized_readout import FactorizedReadout, FullFactorized2d, FullSXF, SpatialXFeatureLinear
from daenr_fast.nn.poisson_loss import PoissonLoss
from daenr_fast.nn.vector_quantizer import VectorQuantizer

__all__ = ["FactorizedReadout", "FullFactorized2d", "FullSXF", "SpatialXFeatureLinear", "PoissonLoss",
           "VectorQuantizer"]
