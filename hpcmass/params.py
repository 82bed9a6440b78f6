"""Run parameters: one YAML file per run, validated into frozen typed objects.

Each section feeds one stage (catalog, observe, dataset, train, interpret, report); ``site``
holds batch-system settings that never change a result. Unknown keys, wrong types and
out-of-range values are rejected with one line naming the file, the key path, the value and
what was expected. ``--set key.path=value`` overrides are parsed as YAML scalars.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from .errors import ParamsError

#: Pipeline order. A stage's results depend on the params of itself and every earlier stage.
STAGES = ("catalog", "observe", "dataset", "train", "interpret", "report")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


PosInt = Annotated[int, Field(gt=0)]
PosFloat = Annotated[float, Field(gt=0)]


class RunParams(Section):
    name: str = "hpcmass"
    #: Global seed: every random draw derives from (seed, stage, unit), never from the rank.
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 20190101


class CatalogParams(Section):
    source: Literal["synthetic", "tng300"] = "synthetic"
    n_clusters: Annotated[int, Field(ge=1, le=100_000)] = 329
    log_m500c_min: Annotated[float, Field(ge=12.0, le=16.0)] = 13.57
    log_m500c_max: Annotated[float, Field(ge=12.0, le=16.0)] = 15.06
    #: Which TNG300 haloes make the sample (source=tng300): "m500c", log_m500c_min <= log10 M500c <=
    #: log_m500c_max [Msun]; "m200c" or "fof", log10 of Group_M_Crit200 or of the FoF GroupMass >=
    #: selection_log_min. The paper states the M500c range, but in TNG300-1 that range holds ~740
    #: haloes, not its 329; the catalog stage prints how many each rule selects (README).
    selection: Literal["m500c", "m200c", "fof"] = "m500c"
    selection_log_min: Annotated[float, Field(ge=12.0, le=16.0)] = 14.0
    #: Directory of TNG300 inputs (group catalogue + cutouts), for source=tng300.
    tng_dir: str | None = None
    #: TNG simulation and snapshot (99 = z=0) that `hpcmass fetch-tng` downloads and source=tng300 reads.
    tng_simulation: str = "TNG300-1"
    tng_snapshot: Annotated[int, Field(ge=0, le=99)] = 99
    #: Synthetic population: "realistic" (disturbed clusters with secondary haloes and offset gas
    #: peaks, density fluctuations, continuous cores; hpcmass/catalog/physics.py) or "smooth", the
    #: population of runs made before it (every cell on its smooth profile).
    generator: Literal["realistic", "smooth"] = "realistic"
    # Synthetic sample (source=synthetic). Masses: the halo mass function (colossus tinker08, 500c) or
    # flat in log M; periodic box of TNG300's side [ckpc/h].
    mass_function: Literal["tinker08", "flat"] = "tinker08"
    box_size_ckpch: Annotated[float, Field(ge=1e3, le=1e7)] = 205_000.0
    #: Gas cell mass [Msun] (TNG300-1: 1.1e7); the cutout reaches r_max_r500 x R500c. A cluster that
    #: would need more than max_gas_cells cells stops the realistic generator (one cell mass for all,
    #: as in TNG) and gets proportionally heavier cells in the smooth one.
    cell_mass_msun: Annotated[float, Field(ge=1e5, le=1e12)] = 1.1e7
    max_gas_cells: Annotated[int, Field(ge=1_000, le=1_000_000_000)] = 20_000_000
    r_max_r500: Annotated[float, Field(ge=1.0, le=5.0)] = 2.0
    #: Population: share of strong cool cores, log-normal scatter of f_gas(<R500) (unset: 0.05 for
    #: realistic, above 10^14 Msun and growing towards groups; 0.07 for smooth) and of c500,
    #: mean number of infalling gas-rich groups, share of clusters placed across a box face.
    cool_core_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = 0.4
    f_gas_scatter: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    concentration_scatter: Annotated[float, Field(ge=0.0, le=1.0)] = 0.3
    substructure_mean: Annotated[float, Field(ge=0.0, le=50.0)] = 3.0
    edge_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = 0.1

    @model_validator(mode="after")
    def _mass_range(self):
        if self.log_m500c_max <= self.log_m500c_min:
            raise _FieldError(("log_m500c_max",), self.log_m500c_max,
                              f"a value > catalog.log_m500c_min ({self.log_m500c_min})")
        if self.source == "tng300" and not self.tng_dir:
            raise _FieldError(("tng_dir",), self.tng_dir, "the directory of the TNG300 inputs (source is tng300)")
        if self.source == "synthetic" and self.selection != "m500c":
            raise _FieldError(("selection",), self.selection,
                              "m500c: the synthetic sample is drawn in the M500c range (m200c and fof select "
                              "TNG300 haloes, source: tng300)")
        return self


#: ``observe.instrument`` of the paper's simplified ACIS-I (any other value names a SOXS registry instrument).
SIMPLE_ACISI = "simple_acisi"


class ObserveParams(Section):
    redshift: Annotated[float, Field(gt=0.0, le=2.0)] = 0.05
    #: The exposure [ks]; with exposure_range_ks, the reference one the network's images are scaled to.
    exposure_ks: PosFloat = 100.0
    #: [shortest, longest] exposure [ks]: each projection's observation is drawn log-uniformly in it (equal
    #: weight per factor of exposure: a choice, not the archive's distribution) and its counts are scaled to
    #: exposure_ks, which lies in it, before the network sees them; null = every observation exposure_ks
    #: long (the paper).
    exposure_range_ks: Annotated[tuple[PosFloat, PosFloat], Field(strict=False)] | None = None
    #: Projection axes; the paper uses all three.
    axes: tuple[Literal["x", "y", "z"], ...] = ("x", "y", "z")
    image_pixels: Annotated[int, Field(ge=8, le=4096)] = 128
    #: Energy bands [keV], one image channel each, contiguous and ascending (lo <= E < hi): the paper's
    #: one broad band by default; e.g. [[0.5, 1.2], [1.2, 2.5], [2.5, 7.0]] gives the CNN colour (Ho et
    #: al. 2023). Contiguous so that the bands sum to the broad-band image the L_X baseline and the
    #: interpretation's profiles read.
    bands: Annotated[tuple[tuple[Annotated[float, Field(gt=0.0)], Annotated[float, Field(gt=0.0)]], ...],
                     Field(strict=False, min_length=1, max_length=16)] = ((0.5, 7.0),)
    #: Only gas hotter than this and not star-forming (StarFormationRate == 0) emits.
    kt_min_kev: Annotated[float, Field(gt=0.0, lt=10.0)] = 0.1
    #: Foreground (galactic) absorption: column density in 1e22 cm^-2 (paper: 4e20 cm^-2) and model.
    nh_1e22: Annotated[float, Field(ge=0.0, le=10.0)] = 0.04
    absorb_model: Literal["wabs", "tbabs"] = "wabs"
    #: Solar abundance table the gas metallicity (a mass fraction) is measured against; TNG's
    #: GFM_Metallicity follows Asplund et al. 2009.
    abund_table: Literal["angr", "aspl", "wilm", "lodd", "feld"] = "aspl"
    #: pyXSIM's spectral grid for photon energies (observer frame); 5 eV bins, far below ACIS's
    #: ~100 eV resolution (pyXSIM's cost per cell grows with the bin count).
    spectrum_emin_kev: Annotated[float, Field(gt=0.0)] = 0.1
    spectrum_emax_kev: Annotated[float, Field(gt=0.0, le=50.0)] = 10.0
    spectrum_bins: Annotated[int, Field(ge=100, le=100_000)] = 2_000
    #: Collecting area for pyXSIM's photons; null = the instrument ARF's peak (the least SOXS accepts).
    photon_area_cm2: PosFloat | None = None
    #: Gas within this many R500c of the centre (a cube) is projected; at least the whole field of view.
    region_r500: Annotated[float, Field(gt=0.0, le=20.0)] = 3.0
    #: The instrument: "simple_acisi" = the paper's simplified ACIS-I (the square image field without chip
    #: gaps, detector_pixel_arcsec pixels, a Gaussian PSF of psf_fwhm_arcsec, the ARF/RMF of `data`), or
    #: an imaging instrument of SOXS's registry (e.g. chandra_acisi_cy22, axis, lynx_hdxi, athena_wfi,
    #: xrism_xtend) with its own chips, PSF, dither, response and particle background, read from the
    #: files `hpcmass stage-data` puts in data_dir.
    instrument: Annotated[str, Field(min_length=1, max_length=100)] = SIMPLE_ACISI
    #: The image field [arcmin] (the paper's 20' square), and simple_acisi's detector.
    fov_arcmin: Annotated[float, Field(gt=0.0, le=120.0)] = 20.0
    detector_pixel_arcsec: Annotated[float, Field(gt=0.0, le=60.0)] = 0.5
    psf_fwhm_arcsec: Annotated[float, Field(ge=0.0, le=600.0)] = 0.5
    dither: bool = False
    #: simple_acisi's detector: "none" = the paper's one square chip filling the field; "acisi" = ACIS-I's
    #: four 8.4' chips with their 11" gaps and the aimpoint on I3, 42" and 28" off the array's centre
    #: (SOXS's chandra_acisi_cy22 geometry, 0.492" pixels): the 20' field's corners then get no events.
    chips: Literal["none", "acisi"] = "none"
    #: Each view's roll angle drawn uniformly in [0, 360) deg (a real observation's is set by its date),
    #: turning the chips (and a registry instrument's PSF) on the sky; false = roll 0 (the paper).
    random_roll: bool = False
    #: Each view's cluster lands this far [arcmin] at most from the aimpoint (uniform in the disk): the
    #: observer's pointing is not the X-ray peak. 0 = on the aimpoint (the paper).
    pointing_offset_arcmin: Annotated[float, Field(ge=0.0, le=10.0)] = 0.0
    particle_background: bool = True
    #: Galactic foreground: auto = when SOXS's APEC tables are staged (the approximate table cannot
    #: model a 0.1-0.2 keV plasma's line emission); true = demand them; false = none.
    foreground: bool | Literal["auto"] = "auto"
    #: SOXS's cosmic point-source background (not in the paper).
    point_sources: bool = False
    #: auto = SOXS's files when `hpcmass stage-data` put them in data_dir, else the suite's own labelled
    #: approximations; soxs = demand the real files; approximate = always the approximations.
    data: Literal["auto", "soxs", "approximate"] = "auto"
    data_dir: str = "data/soxs"
    #: Keep each observation's SOXS event list as a FITS event file in <workdir>/observe/events/.
    keep_events: bool = False

    @property
    def full_field(self) -> bool:
        """The detector sees the whole image field for the whole exposure (the paper's mocks); otherwise the
        observe stage stores each view's exposure map."""
        return (self.instrument == SIMPLE_ACISI and self.chips == "none" and not self.dither and not self.random_roll
                and not self.pointing_offset_arcmin)

    @property
    def photon_exposure_ks(self) -> float:
        """The exposure pyXSIM's photons are made for: the longest any observation of them takes."""
        return self.exposure_ks if self.exposure_range_ks is None else self.exposure_range_ks[1]

    @property
    def emin_kev(self) -> float:
        """Lower edge of the broad band the bands cover [keV]."""
        return self.bands[0][0]

    @property
    def emax_kev(self) -> float:
        """Upper edge of the broad band the bands cover [keV]."""
        return self.bands[-1][1]

    @model_validator(mode="after")
    def _band(self):
        edges = [e for band in self.bands for e in band]
        if any(hi <= lo for lo, hi in self.bands) or any(a != b for a, b in zip(edges[1::2], edges[2::2])):
            raise _FieldError(("bands",), [list(b) for b in self.bands],
                              "contiguous ascending bands [[lo, hi], [hi, hi2], ...] with lo < hi")
        if len(set(self.axes)) != len(self.axes) or not self.axes:
            raise _FieldError(("axes",), list(self.axes), "one or more distinct axes out of x, y, z")
        if self.spectrum_emax_kev <= self.spectrum_emin_kev:
            raise _FieldError(("spectrum_emax_kev",), self.spectrum_emax_kev,
                              f"a value > observe.spectrum_emin_kev ({self.spectrum_emin_kev})")
        if not self.spectrum_emin_kev <= self.emin_kev or not self.emax_kev <= self.spectrum_emax_kev:
            raise _FieldError(("spectrum_emin_kev",), self.spectrum_emin_kev,
                              f"a photon energy range covering the image band {self.emin_kev}-{self.emax_kev} keV")
        if self.exposure_range_ks is not None and not (
                self.exposure_range_ks[0] <= self.exposure_ks <= self.exposure_range_ks[1]):
            raise _FieldError(("exposure_range_ks",), list(self.exposure_range_ks),
                              f"[shortest, longest] holding observe.exposure_ks={self.exposure_ks}, the exposure the "
                              f"images are scaled to")
        # Refused only away from their defaults, which a resolved params file writes out and must read back.
        changed = {k for k, f in type(self).model_fields.items() if getattr(self, k) != f.default}
        own = sorted({"detector_pixel_arcsec", "psf_fwhm_arcsec", "dither", "chips"} & changed)
        if self.instrument != SIMPLE_ACISI and own:
            raise _FieldError((own[0],), getattr(self, own[0]),
                              f"the key left out: it describes the simple_acisi instrument, and observe.instrument="
                              f"{self.instrument} brings its own from SOXS's registry")
        if self.chips != "none" and "detector_pixel_arcsec" in changed:
            raise _FieldError(("detector_pixel_arcsec",), self.detector_pixel_arcsec,
                              f"the key left out: observe.chips={self.chips} brings its own pixels")
        pixels = self.fov_arcmin * 60.0 / self.detector_pixel_arcsec
        if abs(pixels - round(pixels)) > 1e-6 or round(pixels) < self.image_pixels:
            raise _FieldError(("detector_pixel_arcsec",), self.detector_pixel_arcsec,
                              f"a pixel that divides observe.fov_arcmin={self.fov_arcmin} into a whole number "
                              f"of at least image_pixels={self.image_pixels} pixels")
        return self


class DatasetParams(Section):
    #: Clusters sorted by mass, dealt cyclically to folds; fold k tests, k+1 validates, the rest train.
    n_folds: Annotated[int, Field(ge=3, le=100)] = 10
    #: Transform of the counts, applied inside the model (gradients stay w.r.t. raw counts). The paper
    #: states none. Default log1p: counts span 0 to ~10^3 per pixel and total counts ~2 dex across the
    #: mass range, so raw counts make log M a strongly non-linear function of the input; log1p is
    #: invertible (keeps all information) and makes brightness enter linearly. "none" = raw counts.
    scaling: Literal["none", "log1p", "asinh"] = "log1p"


class TrainParams(Section):
    max_epochs: Annotated[int, Field(ge=1, le=100_000)] = 400
    batch_size: Annotated[int, Field(ge=1, le=65_536)] = 32
    learning_rate: Annotated[float, Field(gt=0.0, lt=1.0)] = 5e-4
    #: The paper's criteria on the validation fold, δ = log M_pred − log M_true over every view:
    #: max|δ| < 0.3, |median δ| < 0.02 and slope of the best-fit line of predicted against true log M > 0.9.
    stop_max_abs_delta: PosFloat = 0.3
    stop_max_abs_median: PosFloat = 0.02
    stop_min_slope: PosFloat = 0.9
    #: "paper": stop at the first epoch meeting the criteria (else keep max_epochs' model). "plateau":
    #: once they have held, stop `patience` epochs after the lowest validation loss and keep that epoch
    #: (hpcmass/train/stopping.py; the paper's rule stops our folds at epoch 2-15, issue 18).
    stopping: Literal["plateau", "paper"] = "plateau"
    patience: Annotated[int, Field(ge=1, le=100_000)] = 20
    #: Initial bias of the output unit: "mean" of the training fold's log M (~14) or "zero" (Keras's
    #: default, as the paper's set-up would have it).
    output_bias: Literal["mean", "zero"] = "mean"
    #: All ranks of a job train each fold together with Horovod (`hpcmass train --horovod` sets it);
    #: otherwise each rank trains whole folds on its own. Under Horovod every rank takes batch_size
    #: images per step (global batch = batch_size × ranks); horovod_lr_scaling "linear" multiplies
    #: learning_rate by the number of ranks (Goyal et al. 2017), "none" keeps it.
    horovod: bool = False
    horovod_lr_scaling: Literal["linear", "none"] = "linear"
    #: tf.config.experimental.enable_op_determinism(): bit-identical reruns and resumes (slower on GPU).
    deterministic: bool = False
    #: The folds a process trains run side by side as one model of towers (hpcmass/train/stack.py): fills
    #: a GPU with a 58k-parameter CNN. Same seeds and data order; other dropout masks than unstacked.
    stack_folds: bool = False

    @model_validator(mode="after")
    def _one_way_to_share(self):
        if self.stack_folds and self.horovod:
            raise _FieldError(("stack_folds",), True, "false with train.horovod (a fold is either shared by "
                                                       "ranks or stacked with others, not both)")
        return self


class InterpretParams(Section):
    #: DeepDream-style steps: add the gradient of log M to the counts, clip negatives to 0, round.
    iterations: Annotated[int, Field(ge=1, le=100)] = 2
    #: "rms": the gradient is rescaled to an RMS of `step` counts per pixel before it is added (the
    #: normalisation of the Keras filter-visualisation recipe the paper cites; a raw d log M / dN is
    #: far below one count and would round away); "none": step x raw gradient.
    gradient_norm: Literal["rms", "none"] = "rms"
    step: PosFloat = 1.0
    #: Radial Delta N / N profiles: equal bins in R/R500c out to radial_max_r500c.
    radial_bins: Annotated[int, Field(ge=2, le=1000)] = 30
    radial_max_r500c: PosFloat = 1.5
    #: Figure 5's "small change" mask: |Delta N| <= small_change x N.
    small_change: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.02
    #: The response centre is the centroid of the top `response_top_fraction` pixels by |gradient|;
    #: an image is flagged off-centre (the paper's Figure 6 outlier) when it lies beyond offcentre_r500c:
    #: farther than the core the CNN ignores (0.15-0.2 R500c). Demo clusters sit at 0.04-0.15.
    response_top_fraction: Annotated[float, Field(gt=0.0, le=1.0)] = 0.02
    offcentre_r500c: PosFloat = 0.2
    #: Null models run through the identical procedure (hpcmass/interpret/nulls.py): the fold's
    #: untrained CNN (the weights its training started from), f = sum log1p N and f = log10 sum N.
    nulls: Annotated[tuple[Literal["untrained", "sum_log1p", "log_sum"], ...], Field(strict=False, min_length=1)] = (
        "untrained", "sum_log1p", "log_sum")
    #: The regions compared [R500c]: the core the paper finds ignored (its 0.15-0.2 R500c) and an
    #: outskirts annulus; used for the core-versus-outskirts response and for occlusion.
    core_r500c: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.15
    outskirts_r500c: Annotated[tuple[float, float], Field(strict=False)] = (0.5, 1.0)

    @model_validator(mode="after")
    def _regions(self):
        lo, hi = self.outskirts_r500c
        if not self.core_r500c <= lo < hi:
            raise _FieldError(("outskirts_r500c",), list(self.outskirts_r500c),
                              f"[low, high] with interpret.core_r500c ({self.core_r500c}) <= low < high")
        if len(set(self.nulls)) != len(self.nulls):
            raise _FieldError(("nulls",), list(self.nulls), "each null at most once")
        return self


class ReportParams(Section):
    #: Bootstrap resamples (of clusters, keeping each cluster's views together) for fit uncertainties.
    bootstrap_resamples: Annotated[int, Field(ge=10, le=1_000_000)] = 1000
    #: The paper's mass subset for a separate Gaussian fit [log10 Msun].
    subset_log_m500c: Annotated[tuple[float, float], Field(strict=False)] = (14.0, 14.5)
    #: Core-excised L_X aperture [R500c] and the Gaussian errors of its outer radius [fraction of R500c].
    lx_inner_r500c: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.15
    lx_outer_r500c: Annotated[float, Field(gt=0.0, le=5.0)] = 1.0
    lx_aperture_errors: Annotated[tuple[Annotated[float, Field(ge=0.0, lt=0.5)], ...], Field(strict=False)] = (0.03, 0.05)
    #: Clusters shown in Figure 1 (spread evenly over the mass ranking).
    figure1_clusters: Annotated[int, Field(ge=1, le=64)] = 16

    @model_validator(mode="after")
    def _ranges(self):
        if self.subset_log_m500c[1] <= self.subset_log_m500c[0]:
            raise _FieldError(("subset_log_m500c",), list(self.subset_log_m500c), "[low, high] with high > low")
        if self.lx_outer_r500c <= self.lx_inner_r500c:
            raise _FieldError(("lx_outer_r500c",), self.lx_outer_r500c,
                              f"a value > report.lx_inner_r500c ({self.lx_inner_r500c})")
        return self


SlurmTime = Annotated[str, Field(pattern=r"^(\d+-)?\d{1,3}:\d{2}(:\d{2})?$")]


class JobResources(Section):
    """One stage's SLURM request."""

    ntasks: Annotated[int, Field(ge=1, le=1_000_000)] = 1
    time: SlurmTime = "01:00:00"
    #: Generic resources per node, e.g. "gpu:1" for training.
    gres: str | None = None
    nodes: Annotated[int, Field(ge=1)] | None = None


class SiteParams(Section):
    """Batch-system settings: where and how jobs run. Never part of a result's identity."""

    launcher: Literal["mpirun", "srun"] = "mpirun"
    partition: str | None = None
    account: str | None = None
    #: Environment modules loaded by every job script before anything runs.
    #: (strict=False: after _merge_job_defaults a YAML list reaches pydantic as a Python list, which strict refuses)
    modules: Annotated[tuple[str, ...], Field(strict=False)] = ()
    #: Virtual environment holding hpcmass on the compute nodes (default: the checkout's .venv).
    venv: str | None = None
    #: Seconds before the time limit at which SLURM warns a job (SIGUSR1): the stage finishes the
    #: unit in hand, flushes the store and is requeued to resume.
    warning_seconds: Annotated[int, Field(ge=10, le=86_400)] = 300
    #: TensorFlow threads per rank in train and interpret; null: the cores of the rank's affinity
    #: mask, divided among the node's working ranks that share it (see hpcmass/cpu.py).
    threads: Annotated[int, Field(ge=1, le=4096)] | None = None
    catalog: JobResources = JobResources(ntasks=1, time="01:00:00")
    observe: JobResources = JobResources(ntasks=32, time="12:00:00")
    dataset: JobResources = JobResources(ntasks=1, time="00:20:00")
    #: Per fold (one array task each); ntasks > 1 trains the fold with Horovod over that many ranks.
    train: JobResources = JobResources(ntasks=1, time="24:00:00", gres="gpu:1")
    interpret: JobResources = JobResources(ntasks=4, time="02:00:00")
    report: JobResources = JobResources(ntasks=1, time="00:30:00")

    @model_validator(mode="before")
    @classmethod
    def _merge_job_defaults(cls, data):
        # A partial `site.observe: {time: ...}` keeps the stage's other defaults (ntasks=32, ...).
        if isinstance(data, dict):
            data = dict(data)
            for stage in STAGES:
                if isinstance(data.get(stage), dict):
                    data[stage] = {**cls.model_fields[stage].default.model_dump(), **data[stage]}
        return data


class Params(Section):
    run: RunParams = RunParams()
    catalog: CatalogParams = CatalogParams()
    observe: ObserveParams = ObserveParams()
    dataset: DatasetParams = DatasetParams()
    train: TrainParams = TrainParams()
    interpret: InterpretParams = InterpretParams()
    report: ReportParams = ReportParams()
    site: SiteParams = SiteParams()
    #: The file these params were read from (None: defaults), named in messages that suggest a command.
    _file: str | None = PrivateAttr(default=None)

    @property
    def file(self) -> str | None:
        return self._file

    @model_validator(mode="after")
    def _enough_clusters(self):
        need = self.dataset.n_folds
        if self.catalog.n_clusters < need:
            raise _FieldError(
                ("catalog", "n_clusters"),
                self.catalog.n_clusters,
                f"at least {need} clusters for dataset.n_folds={need} (one test cluster per fold)",
            )
        return self

    def stage_identity(self, stage: str) -> dict[str, Any]:
        """The params that determine ``stage``'s results: the seed and all sections up to it (less the
        :data:`LATER_KEYS` at their defaults)."""
        upto = STAGES[: STAGES.index(stage) + 1]
        identity = {"seed": self.run.seed, **{s: getattr(self, s).model_dump(mode="json") for s in upto}}
        for (section, key), default in LATER_KEYS.items():
            if section in identity and identity[section][key] == default:
                del identity[section][key]
        return identity

    def stage_hash(self, stage: str) -> str:
        text = json.dumps(self.stage_identity(stage), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


#: Keys added after stores were made, whose default reproduces what those stores hold: left out of a
#: stage's identity while at it, so those stores keep their params hash and still resume.
LATER_KEYS = {("observe", "instrument"): SIMPLE_ACISI, ("observe", "chips"): "none",
              ("observe", "random_roll"): False, ("observe", "pointing_offset_arcmin"): 0.0,
              ("observe", "exposure_range_ks"): None}


class _FieldError(ValueError):
    """Raised by cross-field checks to point at one key path (relative to the raising section)."""

    def __init__(self, loc: tuple[str, ...], value: Any, expected: str):
        super().__init__(expected)
        self.loc, self.value, self.expected = loc, value, expected


# --- YAML reading ------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads 1e9 as a float (YAML 1.1 wants 1.0e+9) and rejects duplicate keys."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_scalar(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def apply_override(tree: dict, assignment: str) -> tuple[str, ...]:
    """Apply one ``key.path=value`` to a nested dict; returns the key path."""
    key, sep, value = assignment.partition("=")
    path = tuple(p for p in key.strip().split("."))
    if not sep or not all(path):
        raise ParamsError(f"--set {assignment!r}: expected key.path=value, e.g. --set catalog.n_clusters=20")
    node = tree
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ParamsError(f"--set {assignment!r}: {part!r} is a value, not a section")
        node = child
    node[path[-1]] = parse_scalar(value)
    return path


#: Keys earlier versions read, and what says the same now.
RENAMED = {k: "; it became observe.bands, a list of [emin_kev, emax_kev] bands ([[0.5, 7.0]]: the paper's one)"
           for k in ("observe.emin_kev", "observe.emax_kev")}


def _describe(exc: ValidationError, source: str, overrides: dict[tuple[str, ...], str]) -> str:
    err = exc.errors(include_url=False)[0]
    ctx_err = (err.get("ctx") or {}).get("error")
    if isinstance(ctx_err, _FieldError):
        # Cross-field checks name their key relative to the section that raised them.
        loc = tuple(str(p) for p in err["loc"]) + ctx_err.loc
        value, expected = ctx_err.value, ctx_err.expected
    else:
        loc = tuple(str(p) for p in err["loc"])
        value = err.get("input")
        expected = _expected(err)
    key = ".".join(loc) or "(top level)"
    origin = next((f"--set {o}" for p, o in overrides.items() if loc[: len(p)] == p or p[: len(loc)] == loc), source)
    more = len(exc.errors()) - 1
    tail = f" (and {more} more problem{'s' * (more > 1)})" if more else ""
    if err["type"] == "extra_forbidden":
        return f"{origin}: unknown key {key!r}{RENAMED.get(key, '')}{tail}"
    return f"{origin}: {key} = {value!r}: expected {expected}{tail}"


def _expected(err: dict) -> str:
    ctx = err.get("ctx") or {}
    kind = err["type"]
    bounds = {"greater_than": "> {gt}", "greater_than_equal": ">= {ge}", "less_than": "< {lt}",
              "less_than_equal": "<= {le}"}
    if kind in bounds:
        return "a value " + bounds[kind].format(**ctx)
    if kind == "literal_error":
        return "one of " + ctx.get("expected", "")
    if kind == "missing":
        return "a value (the key is required)"
    msg = err["msg"].removeprefix("Input should be ")
    return msg[0].lower() + msg[1:]


def load_params(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Params:
    """Read, override and validate a params file (None: all defaults). Raises ParamsError."""
    tree: dict = {}
    source = "(defaults)"
    if path is not None:
        path = Path(path)
        source = str(path)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise ParamsError(f"{path}: params file not found") from None
        except OSError as e:
            raise ParamsError(f"{path}: cannot read params file ({e.strerror})") from None
        try:
            tree = yaml.load(text, Loader=_Loader) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ParamsError(f"{path}:{where}: not valid YAML: {problem}") from None
        if not isinstance(tree, dict):
            raise ParamsError(f"{path}: expected a mapping of sections at the top level, got {type(tree).__name__}")
    done: dict[tuple[str, ...], str] = {}
    for assignment in overrides:
        done[apply_override(tree, assignment)] = assignment
    try:
        # JSON mode: strict types (no "20" for 20, no 2.5 for an int) while YAML lists fill tuples.
        params = Params.model_validate_json(json.dumps(tree, default=str))
    except ValidationError as e:
        raise ParamsError(_describe(e, source, done)) from None
    params._file = None if path is None else str(path)
    return params
