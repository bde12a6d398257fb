"""nn.Modules over the fused ops."""
from daenr_fast.nn.factorized_readout import FactorizedReadout, FullFactorized2d, FullSXF, SpatialXFeatureLinear

__all__ = ["FactorizedReadout", "FullFactorized2d", "FullSXF", "SpatialXFeatureLinear"]
