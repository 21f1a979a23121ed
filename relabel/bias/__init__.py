"""The labeling-bias metric L (Cabrera-Vives et al. 2018), and L of tables on disk.

The definition, with its edge cases, is in ``docs/bias.md``.
"""

from relabel.bias.metric import (
    BEST_ENDS,
    BiasError,
    BiasResult,
    BinFractions,
    bias_with_errors,
    bin_fractions,
    fraction_curves,
    labeling_bias,
)

__all__ = ["BEST_ENDS", "BiasError", "BiasResult", "BinFractions", "bias_with_errors", "bin_fractions",
           "fraction_curves", "labeling_bias"]
