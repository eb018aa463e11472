"""Defaults that several algorithms share."""

from __future__ import annotations

import math


def standard_popsize(num_params: int) -> int:
    """``lambda = 4 + floor(3 ln D)``: the population size of CMA-ES (Hansen 2016, Table 1,
    as pycma computes it), of the NES family (Wierstra et al. 2014, Table 1) and of their
    large-scale variants (sep-CMA-ES, LM-MA-ES's directions, CR-FM-NES, Guided ES)."""
    return 4 + math.floor(3 * math.log(num_params))
