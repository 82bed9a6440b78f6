"""What the store holds: every stage's datasets and attributes, and where its side files go.

Layout (layout version 2: the observe stage's images gained an energy-band axis; version 1 stores
are refused)::

    /                       attrs: layout_version, created_utc, hpcmass_version
    /<stage>/               one group per stage in params.STAGES order; attrs = PROVENANCE_ATTRS
                            and the stage's own (ATTRS)
        done    int8[n]     per-unit state: 0 pending, 1 done, -1 failed; written last
        error   S256[n]     why a unit failed (empty otherwise)
        <data>              the stage's datasets (LAYOUT), first axis = unit where per-unit

Files beside the store (large or foreign-format products) sit in ``<workdir>/<stage>/``.
"""

from __future__ import annotations

from pathlib import Path

from ..params import STAGES

LAYOUT_VERSION = 2
#: What changed at each layout version (named when an older store is refused).
LAYOUT_CHANGES = {2: "the observe stage's images gained an energy-band axis (observe.bands)"}
STORE_NAME = "store.h5"

#: The stage datasets: name -> (shape in named dimensions, dtype, meaning). Dimension names are
#: given as keywords to :meth:`StageWriter.require`; ``n`` is always the stage's unit count.
#: Stages create their datasets only through this table, so it is the whole layout.
LAYOUT: dict[str, dict[str, tuple[tuple[str | int, ...], str, str]]] = {
    "catalog": {  # unit: cluster
        "cluster_id": (("n",), "i8", "catalogue index (TNG FoF group number, or synthetic index)"),
        "log_m500c": (("n",), "f8", "log10 M500c [Msun], the training target"),
        "r500c_kpc": (("n",), "f8", "R500c [physical kpc]"),
        "center_ckpch": (("n", 3), "f8", "cluster centre in its cutout's coordinates [ckpc/h]"),
        "cutout": (("n",), "S256", "gas cutout file, relative to the workdir (TNG/Arepo HDF5 layout)"),
        "n_gas_cells": (("n",), "i8", "gas cells in the cutout (the observe stage's cost estimate)"),
        # Measured on the cutout's cells (3D apertures about the centre; hot = kT > 0.1 keV, SFR = 0):
        "n_hot_cells": (("n",), "i8", "hot, non-star-forming gas cells (those that emit in the observe stage)"),
        "mgas500_msun": (("n",), "f8", "gas mass within R500c [Msun]"),
        "lx_ce_erg_s": (("n",), "f8", "0.5-2 keV free-free L_X of hot gas in 0.15-1 R500c [erg/s], core-excised"),
        "lx_ci_erg_s": (("n",), "f8", "0.5-2 keV free-free L_X of hot gas within R500c [erg/s], core-included"),
        "tx_kev": (("n",), "f8", "spectroscopic-like (rho^2 T^-3/4) temperature of hot gas in 0.15-1 R500c [keV]"),
        "k0_kev_cm2": (("n",), "f8", "mass-weighted entropy kT n_e^-2/3 of hot gas within 0.05 R500c [keV cm^2]"),
        "cool_core": (("n",), "i1", "1 if k0_kev_cm2 < 60 (below the bimodal core-entropy gap)"),
    },
    "observe": {  # unit: cluster
        "images": (("n", "axes", "bands", "pixels", "pixels"), "i4",
                   "counts per pixel in each energy band of attrs['bands_kev'], projected along attrs['axes']"),
        "n_photons": (("n",), "i8", "photons pyXSIM generated for the cluster (before projection and instrument)"),
        "exposure": (("n", "axes", "pixels", "pixels"), "f4",
                     "fraction of the exposure each pixel was on the detector (SOXS's exposure map: chips, gaps, dither, "
                     "roll, pointing); only where the detector may not fill the field (ObserveParams.full_field false)"),
        "view_exposure_ks": (("n", "axes"), "f4",
                             "each projection's exposure [ks], drawn in attrs['exposure_range_ks']; only with a range "
                             "(the network sees counts x exposure_ks / view_exposure_ks)"),
        "seconds": (("n", "parts"), "f4", "wall time of load, photons, projection, instrument (all axes) [s]"),
    },
    "dataset": {  # unit: cluster
        "fold": (("n",), "i2", "cross-validation fold of each cluster (mass-sorted, cyclic)"),
    },
    "train": {  # unit: fold
        "pred_log_m500c": (("clusters", "views"), "f4", "test-fold prediction for every view of every cluster"),
        "epoch_chosen": (("n",), "i4", "epoch whose model was kept (train.stopping)"),
        "epochs_trained": (("n",), "i4", "epochs trained before the stopping rule (train.stopping) ended the fold"),
        "criteria_met": (("n",), "i1", "1 if the paper's validation criteria held at the kept epoch"),
        # Per-epoch records of each fold (NaN after its last epoch); "val_*": the validation fold's.
        "history_loss": (("n", "epochs"), "f4", "training loss (MSE of log10 M500c, mean over ranks)"),
        "history_val_loss": (("n", "epochs"), "f4", "validation loss (MSE of log10 M500c over every validation view)"),
        "history_val_max_abs_delta": (("n", "epochs"), "f4", "validation max |delta|"),
        "history_val_median_delta": (("n", "epochs"), "f4", "validation median delta"),
        "history_val_slope": (("n", "epochs"), "f4", "validation slope of predicted vs true log10 M500c"),
        "history_val_met": (("n", "epochs"), "f4", "1 where all the paper's criteria were met"),
        "history_seconds": (("n", "epochs"), "f4", "wall time of the epoch [s]"),
        "ranks": (("n",), "i4", "processes that trained the fold (Horovod group size; 1 without Horovod)"),
        "learning_rate": (("n",), "f4", "Adam learning rate used (after Horovod scaling)"),
    },
    "interpret": {  # unit: cluster; "steps" = iterations + 1 (the input first), radii in R500c
        "pred_dream": (("n", "views", "steps"), "f4", "log10 M500c predicted for each view, then after each iteration"),
        "profile": (("n", "views", "iterations", "bins"), "f4",
                    "radial Delta N / N (N_t - N_0 over N_0, photon sums per annulus) of every view"),
        "null_profile": (("n", "nulls", "views", "iterations", "bins"), "f4",
                         "profile of every view for each null of attrs['nulls'] (the same procedure)"),
        "core_response": (("n", "explainers", "views"), "f4",
                          "|Delta N|/N within interpret.core_r500c over that in interpret.outskirts_r500c after the "
                          "last iteration; explainers: the trained CNN, then attrs['nulls']"),
        "occlusion_dlogm": (("n", "views", "regions", "fills"), "f4",
                            "log10 M500c of the view with a region (attrs['regions_r500c']) replaced by a Poisson "
                            "draw of a profile (attrs['occlusion_fills']), minus that of the view"),
        "response_offset_r500c": (("n", "views"), "f4", "distance of the strongest gradient response from the centre"),
        "off_centre": (("n", "views"), "i1", "1 if response_offset_r500c > interpret.offcentre_r500c"),
        "dn_map": (("n", "iterations", "pixels", "pixels"), "i4", "Delta N = N_t - N_0 of view attrs['map_view']"),
        "small_change_map": (("n", "iterations", "pixels", "pixels"), "i1",
                             "1 where |Delta N| <= interpret.small_change x N_0 (view attrs['map_view'])"),
        "profile_median": (("iterations", "bins"), "f4", "median profile over all views (written when all are done)"),
        "profile_p16": (("iterations", "bins"), "f4", "16th percentile of the profiles"),
        "profile_p84": (("iterations", "bins"), "f4", "84th percentile of the profiles"),
    },
    "report": {  # unit: the report (one); "apertures": the L_X aperture variants named by the lx_apertures attr
        "lx_net_counts": (("clusters", "axes", "apertures"), "f8", "background-subtracted counts in the L_X annulus"),
        "lx_covered": (("clusters", "axes", "apertures"), "f4", "fraction of the L_X annulus inside the image"),
        "lx_erg_s": (("clusters", "axes", "apertures"), "f8", "core-excised L_X from the image [erg/s]"),
        "lx_pred_log_m500c": (("clusters", "axes", "apertures"), "f4",
                              "log10 M500c from the L_X-M power law of the cluster's test fold"),
    },
}
#: Attributes every stage group carries (written by the store itself): name -> meaning.
PROVENANCE_ATTRS: dict[str, str] = {
    "params_yaml": "the resolved params of the run that created the group",
    "params_hash": "hash of the params this stage depends on (a changed one refuses the store)",
    "params_identity": "those params as JSON, to name what changed",
    "seed": "run.seed",
    "versions": "package versions (JSON) when the group was created",
    "git_commit": "hpcmass's git commit when the group was created",
    "created_utc": "when the group was created",
    "unit": "what one unit of work is (cluster, fold, report)",
    "n_runs": "runs that opened the stage",
    "last_run_utc": "when the last run closed the stage",
    "last_run_ranks": "ranks of the last run",
    "last_run_versions": "package versions (JSON) of the last run",
    "last_run_git_commit": "hpcmass's git commit of the last run",
}

#: Each stage's own attributes: name -> meaning. ``StageWriter.set_attrs`` refuses any other name.
ATTRS: dict[str, dict[str, str]] = {
    "catalog": {
        "source": "synthetic or tng300",
        "box_size_ckpch": "simulation box side [ckpc/h]",
        "hubble": "h of the simulation's cosmology",
        "omega_m": "Omega_m of the simulation's cosmology",
        "omega_lambda": "Omega_Lambda of the simulation's cosmology",
        "snapshot_redshift": "redshift of the snapshot the cutouts come from",
        "snapshot": "snapshot number",
        "input_dir": "directory of the group catalogue and cutouts",
        "center_convention": "how center_ckpch relates to the cutouts' coordinates",
    },
    "observe": {
        "data_mode": "soxs (SOXS's own data files) or approximate (the suite's offline stand-ins)",
        "data_description": "the X-ray data in words",
        "data_files": "the thermal table, response and background files used (JSON)",
        "instrument": "the SOXS instrument specification (JSON)",
        "axes": "projection axes of the images' axes dimension, comma-separated",
        "exposure_ks": "exposure [ks]; with exposure_range_ks, the one the network's images are scaled to",
        "exposure_range_ks": "[shortest, longest] exposure [ks] each projection's is drawn in (log-uniform); empty: "
                             "every one exposure_ks long",
        "redshift": "redshift the clusters are observed at",
        "band_kev": "the broad band the energy bands cover [keV]",
        "bands_kev": "the energy bands of the images' bands dimension, (bands, 2) [keV]: lo <= E < hi",
        "pixel_arcsec": "image pixel [arcsec]",
        "pixel_kpc": "image pixel [physical kpc] at the redshift",
        "photon_area_cm2": "collecting area pyXSIM drew photons for [cm^2]",
        "foreground": "1 if the galactic foreground was added",
        "point_sources": "1 if SOXS's cosmic point-source background was added",
        "random_roll": "1 if each view's roll angle was drawn at random (else 0 deg)",
        "pointing_offset_arcmin": "largest random offset of the cluster from the aimpoint [arcmin] (0: on it)",
        "seconds_parts": "the parts of the seconds dataset, comma-separated",
        "last_run_rank_stats": "per-rank clusters, busy and CPU seconds, peak memory of the last run (JSON)",
    },
    "dataset": {
        "n_folds": "cross-validation folds",
        "n_views": "views per cluster",
        "view_order": "how a view index maps to a projection, flip and rotation",
        "scaling": "input scaling of the counts (the model's first layer)",
    },
    "train": {
        "view_order": "how a view index maps to a projection, flip and rotation",
        "scaling": "input scaling of the counts (the model's first layer)",
        "target": "what the models predict",
    },
    "interpret": {
        "radial_edges_r500c": "radial bin edges of the profiles [R500c]",
        "map_view": "the view whose dn_map and small_change_map are stored",
        "pixel_kpc": "image pixel [physical kpc]",
        "nulls": "the null models of null_profile and core_response, comma-separated (interpret.nulls)",
        "regions_r500c": "the occlusion regions, name -> [inner, outer] R500c (JSON), in occlusion_dlogm order",
        "occlusion_fills": "what fills an occluded region, comma-separated: fold_mean (the mean profile of the "
                           "fold's training clusters), own_profile (the view's own, the noise floor)",
        "occlusion_profile_bin_r500c": "radial bin of the profiles that fill occluded regions [R500c]",
    },
    "report": {
        "lx_apertures": "keys of the apertures axis: exact, outer_<error>..., whole_<error>..., iterated "
                        "(hpcmass.report.lx.aperture_variants)",
    },
}

#: Unit states in ``/<stage>/done``.
PENDING, DONE, FAILED = 0, 1, -1
#: Bytes kept of a failed unit's reason (``/<stage>/error``).
ERROR_LEN = 256


def store_path(workdir: str | Path) -> Path:
    return Path(workdir) / STORE_NAME


def stage_dir(workdir: str | Path, stage: str) -> Path:
    """Directory for a stage's files that live beside the store."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}")
    return Path(workdir) / stage

