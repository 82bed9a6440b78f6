"""Oracle mass proxies: what the simulated sample itself permits, measured on the gas cells in 3D.

Each oracle is a quantity the catalog stage measured within the *true* R500c (no projection, no
photons, no background); its scatter at fixed mass, through the same cross-validated power law as
the L_X baseline, is a floor that no image-based estimator should be expected to beat by much.
Y_X = M_gas T_X is Kravtsov, Vikhlinin & Nagai (2006)'s low-scatter proxy (5-7%, as the paper quotes
it for "well-sampled clusters with high spatial and spectral resolution").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .lx import log10_positive


@dataclass(frozen=True)
class Oracle:
    key: str
    label: str  # for the page, HTML allowed
    text: str  # for the terminal
    columns: tuple[str, ...]  # catalog columns whose product is the proxy


ORACLES = (
    Oracle("mgas", "M<sub>gas</sub>(&lt; R<sub>500c</sub>)", "M_gas", ("mgas500_msun",)),
    Oracle("lx_ce", "core-excised L<sub>X</sub> (0.15–1 R<sub>500c</sub>)", "L_X,ce", ("lx_ce_erg_s",)),
    Oracle("yx", "Y<sub>X</sub> = M<sub>gas</sub> T<sub>X</sub>", "Y_X", ("mgas500_msun", "tx_kev")),
    Oracle("lx_ci", "core-included L<sub>X</sub> (&lt; R<sub>500c</sub>)", "L_X,ci", ("lx_ci_erg_s",)),
)


def oracle_log_values(columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """log10 of every oracle whose columns the catalog has (NaN where a value is not positive or
    missing, e.g. T_X of a cluster without hot gas in the annulus); an oracle none of whose values is
    usable (a catalog source that measures nothing, such as toy test clusters) is left out."""
    out = {}
    for o in ORACLES:
        if not all(c in columns for c in o.columns):
            continue
        log = log10_positive(np.prod([np.asarray(columns[c], dtype=np.float64) for c in o.columns], axis=0))
        if np.isfinite(log).any():
            out[o.key] = log
    return out

