"""Small mock cluster images for the dataset/train tests, and a store holding them.

Each toy cluster is an elliptical β-model (β = 2/3) whose core radius grows as M^(1/3) and whose
central brightness as M^1.2, off-centre by up to a pixel and a half, on a flat background, with
Poisson counts: brightness and size carry the mass, so even a few epochs learn something.
"""

from __future__ import annotations

import numpy as np

from hpcmass.mpi import world
from hpcmass.store import Store


def toy_images(n_clusters: int, pixels: int = 32, n_axes: int = 3, seed: int = 0, bands: int = 1):
    """(images (n, n_axes, bands, P, P) int32, log_m500c (n,)): masses uniform in 13.6-15.0, random order.
    With several bands each photon is dealt to a band, the harder ones the likelier the more massive
    (hotter) the cluster."""
    rng = np.random.default_rng(seed)
    log_m = rng.uniform(13.6, 15.0, n_clusters)
    yy, xx = np.mgrid[:pixels, :pixels] + 0.5 - pixels / 2
    images = np.empty((n_clusters, n_axes, bands, pixels, pixels), dtype=np.int32)
    for i, lm in enumerate(log_m):
        for a in range(n_axes):
            dx, dy = rng.uniform(-1.5, 1.5, 2)
            q, theta = rng.uniform(0.7, 1.0), rng.uniform(0, np.pi)
            u = (xx - dx) * np.cos(theta) + (yy - dy) * np.sin(theta)
            v = -(xx - dx) * np.sin(theta) + (yy - dy) * np.cos(theta)
            rc = pixels / 12 * 10 ** ((lm - 14.3) / 3)
            surface = 30 * 10 ** (1.2 * (lm - 14.3)) * (1 + (u**2 + (v / q) ** 2) / rc**2) ** -1.5
            counts = rng.poisson(surface + 0.3)
            if bands == 1:
                images[i, a, 0] = counts
            else:
                hardness = np.exp(np.arange(bands) * (lm - 14.3))
                images[i, a] = np.moveaxis(rng.multinomial(counts, hardness / hardness.sum()), -1, 0)
    return images, log_m


#: The toy images' field: 20' at z = 0.05 (as the paper's images) [kpc, arcsec].
FIELD_KPC = 1182.0
FIELD_ARCSEC = 1200.0
#: What the catalog stage records of the simulation (TNG300-1's cosmology).
TOY_CATALOG_ATTRS = dict(source="toy", box_size_ckpch=205000.0, hubble=0.6774, omega_m=0.3089, omega_lambda=0.6911,
                         snapshot_redshift=0.0)


def write_toy_store(workdir, params, images, log_m500c, folds=None, *, r500c_kpc=None, observe_attrs=None) -> None:
    """A store with complete catalog and observe stages holding these masses and images, with the
    datasets and attributes the stages' readers need (and the dataset stage holding ``folds``, if
    given). ``r500c_kpc`` defaults to 1 Mpc; ``observe_attrs`` are added to the observe stage's."""
    n, pixels = log_m500c.size, images.shape[-1]
    catalog = {"cluster_id": np.arange(100, 100 + n), "log_m500c": log_m500c,
               "r500c_kpc": np.full(n, 1000.0) if r500c_kpc is None else r500c_kpc,
               "center_ckpch": np.zeros((n, 3)), "cutout": np.array([b"none"] * n), "n_gas_cells": np.full(n, 1000)}
    with Store.open_stage(workdir, params, "catalog", world(), n_units=n, unit="cluster") as st:
        for name, value in catalog.items():
            st.require(name)[...] = value
        st.set_attrs(**TOY_CATALOG_ATTRS)
        for i in range(n):
            st.mark_done(i)
    with Store.open_stage(workdir, params, "observe", world(), n_units=n, unit="cluster") as st:
        st.require("images", axes=images.shape[1], bands=images.shape[2], pixels=pixels)[...] = images
        st.set_attrs(pixel_kpc=FIELD_KPC / pixels, pixel_arcsec=FIELD_ARCSEC / pixels, data_mode="toy test images",
                     bands_kev=np.array(params.observe.bands),
                     exposure_ks=params.observe.exposure_ks, redshift=params.observe.redshift,
                     axes=",".join("xyz"[: images.shape[1]]), **(observe_attrs or {}))
        for i in range(n):
            st.mark_done(i)
    if folds is not None:
        with Store.open_stage(workdir, params, "dataset", world(), n_units=n, unit="cluster") as st:
            st.require("fold")[...] = folds
            for i in range(n):
                st.mark_done(i)
