"""The offline APEC approximation against real AtomDB APEC spectra, band by band (run on demand, not a test).

``hpcmass.observe.approx`` stands in for the AtomDB tables when they are not staged. It has no
Fe-L lines and no dielectronic recombination, so it is too faint below ~2 keV. The suite now
images in energy bands (typically 0.5-1.2, 1.2-2.5 and 2.5-7 keV), and this script measures
what that does to each band. Counts are computed through the suite's ACIS-I-like response: the
effective area ``approx.effective_area`` times the Gaussian redistribution ``approx.fwhm_kev``,
so a band means measured energies lo <= E < hi, as in the images. For each case the script
prints approx/APEC counts per band and in 0.5-7 keV, and the soft band's share of the 0.5-7 keV
counts for each model. The approximation is computed with SOXS's ``ApecGenerator`` reading the
files that ``approx.write_approx_files`` writes, at the same kT, Z, abundance table, redshift and
norm as the real spectrum.

No real spectrum is committed: the sources below have no licence, or a non-commercial one. Get
them with git (pinned commits) and pass the paths; every option is optional.

  --extg DIR     XSPEC 12.13.0 ``fakeit`` without counting noise (so it is the exact folded model) of
                 TBabs*apec, AtomDB 3.0.9, ``abund aspl``, z=0.05, norm 3.57466e-4, kT = 0.1 ... 3.0 keV
                 in 0.1 keV steps, Z=0.3 with nH=1e20 (``*_T_<kT>.fak``) and Z=1 with nH=0
                 (``*_T_<kT>_abun1.0_nH0.000.fak``), through the XMM-Newton EPIC-pn response.
                 github.com/yanlingchen1/EXTG @ fdd83466557a329fc9d62a03f8c40b5c93840869,
                 ideal_mdls/mock_spectras/: mock_spectrum_*_pn_A299_T_*.fak, their .fak.log (the
                 parameters are read from these), pn.rmf, pn.arf.
  --table FITS   an XSPEC vvapec emission table, abund aspl, Z=0.3, AtomDB 3.0.9 (APECROOT), 40 kT
                 from 0.1 to 50 keV, z = 0.07 ... 0.13, but energies 2-8 keV only (so the 2.5-7 keV band
                 only): github.com/mroncarelli/pyxhydro @ 556948532488efaaf0ba5f10771a3a1cda9b66f5,
                 tests/reference_files/reference_emission_table.fits.
  --pyatomdb NPY pyatomdb CIESession at kT=1 keV, all 30 elements at AG89 solar (Z=1), AtomDB 3.0.9, z=0,
                 999 linear bins 0.1-10 keV [ph cm^3 s^-1 bin^-1]: github.com/AtomDB/pyatomdb @
                 fb92e3de60eadfcf6ba2edf30d45bfb795c0c13a, pyatomdb/tests/testdata/test_set_response_spec1_309.npy
                 (made by pyatomdb/make_test_outputs.py). With --extg it also checks the unfolding below.
  --resolve DIR  XSPEC ``fakeit`` WITH Poisson noise, 1500 s, norm 0.1, XRISM-Resolve: apec kT=7 Z=0.2 z=0.15
                 (apec_fakeit_for_test.pha) and bapec kT=5 Z=0.3 z=0.2 (bapec_fakeit_for_test.pha), abund
                 angr (XSPEC's default), with resolve_pnt_heasim_noGV_20190701.arf: github.com/mroncarelli/xraysim
                 @ 19ecd9f63fe731bdc7727f3aea792ac7dc3d494b, tests/inp/. Its RMF (resolve_h5ev_2019a.rmf) is
                 over the size the mirror keeps, so the 5 eV response is taken as diagonal.
  --apec-root DIR --apec-vers V   a full APEC table (e.g. the one ``hpcmass stage-data`` stages for SOXS):
                 compared directly at --kts, Z=0.3, z=0.05, abund aspl (the suite's defaults).

Folded spectra (EPIC-pn, Resolve) are unfolded by the model ratio, as XSPEC's ``eufspec`` does:
APEC(E) ~ approx(E) * data(c)/approx_folded(c) for the channel c at energy E; this undoes the pn
effective area, whose shape differs from ACIS-I's enough to matter. The pyatomdb check folds a
known APEC spectrum through pn and unfolds it: it recovers the direct ACIS-I ratios to ~2%.

    .venv/bin/python benchmarks/approx_vs_apec.py --extg D --table F --pyatomdb F --resolve D [--kts 1 2 3 5 8]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from pathlib import Path

import numpy as np
from scipy.special import erf

BANDS = ((0.5, 1.2), (1.2, 2.5), (2.5, 7.0), (0.5, 7.0))
FINE = np.linspace(0.05, 16.05, 16001)  # 1 eV grid the approximation is computed on, then rebinned


def rebin(edges_from, per_bin, edges_to):
    """Photons per bin on edges_from -> per bin on edges_to (cumulative interpolation, 0 outside)."""
    cum = np.concatenate([[0.0], np.cumsum(per_bin)])
    return np.diff(np.interp(edges_to, edges_from, cum, left=0.0, right=cum[-1]))


def band_weights(e_mid, approx):
    """Counts per photon at true energy e_mid landing in each band of measured energy (ACIS-I-like)."""
    area = approx.effective_area(e_mid)
    sig = np.sqrt(2.0) * approx.fwhm_kev(e_mid) / 2.3548
    return [area * 0.5 * (erf((hi - e_mid) / sig) - erf((lo - e_mid) / sig)) for lo, hi in BANDS]


def compare(e_mid, approx_ph, apec_ph, approx, apec_var=None):
    """approx/APEC counts per band, soft shares, and (if apec_var) the 1-sigma error of each ratio."""
    w = band_weights(e_mid, approx)
    a = np.array([np.sum(approx_ph * wb) for wb in w])
    r = np.array([np.sum(apec_ph * wb) for wb in w])
    with np.errstate(invalid="ignore", divide="ignore"):  # a band the real spectrum does not cover: nan
        ratio = np.where(r > 0, a / r, np.nan)
        err = None if apec_var is None else ratio * np.array([np.sqrt(np.sum(apec_var * wb**2)) for wb in w]) / r
    return ratio, a[0] / a[3], r[0] / r[3], err


class Approx:
    """The suite's approximate table, through SOXS, per bin in XSPEC units (photons/cm^2/s for a norm)."""

    def __init__(self, approx, workdir: Path):
        from soxs.spectra.thermal_spectra import ApecGenerator

        root = approx.write_approx_files(workdir / "approx")
        self.gens = {t: ApecGenerator(FINE[0], FINE[-1], FINE.size - 1, apec_vers=approx.APEC_VERSION,
                                      apec_root=str(root), broadening=False, abund_table=t)
                     for t in ("angr", "aspl")}

    def photons(self, edges, kt, z_met, redshift, norm=1.0, table="aspl", nh=0.0):
        from soxs.spectra.foreground_absorption import get_wabs_absorb

        s = self.gens[table].get_spectrum(kt, z_met, redshift, norm)
        ph = rebin(FINE, s.flux.value * np.diff(s.ebins.value), edges)
        # The EXTG spectra have TBabs(1e20); SOXS's tbabs needs a download, wabs does not. At 1e20
        # the two differ by < 1% at 0.5 keV and the absorption cancels in the ratio to first order.
        return ph * get_wabs_absorb(0.5 * (edges[1:] + edges[:-1]), nh) if nh > 0 else ph


def read_rmf(path):
    """OGIP RMF -> (energy edges, channel E_MIN, E_MAX, dense matrix [energy, channel])."""
    from astropy.io import fits

    with fits.open(path) as f:
        m, eb = f["MATRIX"], f["EBOUNDS"].data
        tlmin = m.header.get(f"TLMIN{m.columns.names.index('F_CHAN') + 1}", 1)
        mat = np.zeros((len(m.data), len(eb)))
        for i, row in enumerate(m.data):
            k, groups = 0, slice(0, row["N_GRP"])
            for fc, nc in zip(np.atleast_1d(row["F_CHAN"])[groups], np.atleast_1d(row["N_CHAN"])[groups]):
                mat[i, fc - tlmin:fc - tlmin + nc] = row["MATRIX"][k:k + nc]
                k += nc
        edges = np.append(m.data["ENERG_LO"], m.data["ENERG_HI"][-1]).astype(float)
        return edges, eb["E_MIN"].astype(float), eb["E_MAX"].astype(float), mat


def unfold(approx_ph, folded_model, data, e_mid, ch_emax):
    """APEC photons ~ approx * (data / approx folded) of the channel holding each energy (eufspec)."""
    q = np.where(folded_model > 0, data / np.where(folded_model > 0, folded_model, 1.0), 1.0)
    return approx_ph * q[np.clip(np.searchsorted(ch_emax, e_mid), 0, len(ch_emax) - 1)]


def xspec_log_params(path: Path) -> dict:
    """{'kT': .., 'Abundanc': .., 'Redshift': .., 'norm': .., 'nH': ..} from an XSPEC log's parameter table."""
    out = {}
    for line in path.read_text().splitlines():
        tok = line.split()
        if len(tok) > 5 and tok[0] == "#" and tok[1].isdigit() and tok[2].isdigit():
            for i, t in enumerate(tok):
                if t in ("+/-", "frozen"):
                    out[tok[4]] = float(tok[i - 1])
                    break
    return out


def extg_cases(d: Path, kts, approx, model, pyatomdb=None):
    from astropy.io import fits

    files = sorted(d.glob("mock_spectrum_*_pn_*_T_*.fak"))
    edges, _, ch_hi, rsp = read_rmf(d / "pn.rmf")
    arf = fits.getdata(d / "pn.arf", 1)["SPECRESP"].astype(float)
    e_mid = 0.5 * (edges[1:] + edges[:-1])
    rows = []
    for kt in kts:
        name = f"_T_{kt:.1f}.fak"  # the Z=0.3 set
        hit = [f for f in files if f.name.endswith(name)]
        if not hit:
            continue
        p = xspec_log_params(Path(str(hit[0]) + ".log"))
        data = fits.getdata(hit[0], 1)["RATE"].astype(float)
        a = model.photons(edges, p["kT"], p["Abundanc"], p["Redshift"], p["norm"], "aspl", p["nH"])
        apec = unfold(a, (a * arf) @ rsp, data, e_mid, ch_hi)
        rows.append(("EXTG XSPEC apec, XMM-pn fakeit, unfolded", p["kT"], p["Abundanc"], p["Redshift"],
                     *compare(e_mid, a, apec, approx)))
    check = None
    if pyatomdb is not None:  # fold a known APEC spectrum through pn, unfold it, compare with direct
        te, tph = pyatomdb
        t = rebin(te, tph, edges)
        a = rebin(te, model.photons(te, 1.0, 1.0, 0.0, 1.0, "angr"), edges)
        t_unfolded = unfold(a, (a * arf) @ rsp, (t * arf) @ rsp, e_mid, ch_hi)
        check = (compare(e_mid, a, t, approx)[0], compare(e_mid, a, t_unfolded, approx)[0])
    return rows, check


def table_cases(path: Path, kts, approx, model):
    from astropy.io import fits

    with fits.open(path) as f:
        spec, zs, kts_tab, e = (np.asarray(f[i].data, dtype=float) for i in range(4))
    if spec.shape != (e.size, kts_tab.size, zs.size):
        spec = spec.T  # (z, kT, E) order
    de = np.diff(e)
    edges = np.concatenate([e - np.append(de[0], de) / 2, [e[-1] + de[-1] / 2]])
    rows = []
    for kt in kts:
        i = int(np.argmin(np.abs(np.log(kts_tab / kt))))
        a = model.photons(edges, kts_tab[i], 0.3, zs[0], 1.0, "aspl")
        ratio, _, _, _ = compare(0.5 * (edges[1:] + edges[:-1]), a, spec[:, i, 0], approx)
        # only 2.5-7 keV lies inside the table's 2-8 keV: the others would be partial bands
        rows.append(("pyxhydro XSPEC vvapec table (2-8 keV only)", kts_tab[i], 0.3, zs[0],
                     np.array([np.nan, np.nan, ratio[2], np.nan]), np.nan, np.nan, None))
    return rows


def resolve_cases(d: Path, approx, model):
    from astropy.io import fits

    arf = fits.getdata(d / "resolve_pnt_heasim_noGV_20190701.arf", 1)
    edges = np.append(arf["ENERG_LO"], arf["ENERG_HI"][-1]).astype(float)
    area = arf["SPECRESP"].astype(float)
    e_mid = 0.5 * (edges[1:] + edges[:-1])
    ok = (area > 1.0) & (e_mid > 0.3) & (e_mid < 12.0)
    rows = []
    for name, kt, z_met, redshift in (("bapec", 5.0, 0.3, 0.2), ("apec", 7.0, 0.2, 0.15)):
        with fits.open(d / f"{name}_fakeit_for_test.pha") as f:
            counts, expo = f[1].data["COUNTS"].astype(float), f[1].header["EXPOSURE"]
        # 50000 channels of 0.5 eV = the ARF's bins; diagonal response: photons = counts / (A t)
        apec = np.where(ok, counts / (np.where(ok, area, 1.0) * expo), 0.0)
        var = np.where(ok, counts / (np.where(ok, area, 1.0) * expo) ** 2, 0.0)
        a = np.where(ok, model.photons(edges, kt, z_met, redshift, 0.1, "angr"), 0.0)
        rows.append((f"xraysim XSPEC {name}, Resolve fakeit (Poisson)", kt, z_met, redshift,
                     *compare(e_mid, a, apec, approx, var)))
    return rows


def full_table_cases(root: str, vers: str, kts, approx, model):
    from soxs.spectra.thermal_spectra import ApecGenerator

    gen = ApecGenerator(FINE[0], FINE[-1], FINE.size - 1, apec_vers=vers, apec_root=root,
                        broadening=False, abund_table="aspl")
    e_mid = 0.5 * (FINE[1:] + FINE[:-1])
    rows = []
    for kt in kts:
        s = gen.get_spectrum(kt, 0.3, 0.05, 1.0)
        real = s.flux.value * np.diff(s.ebins.value)
        rows.append((f"full APEC table v{vers}", kt, 0.3, 0.05,
                     *compare(e_mid, model.photons(FINE, kt, 0.3, 0.05), real, approx)))
    return rows


def fmt(x, e=None) -> str:
    if np.isnan(x):
        return "-"
    return f"{x:.3f}" + (f"+-{e:.3f}" if e is not None else "")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--extg", type=Path)
    ap.add_argument("--table", type=Path)
    ap.add_argument("--pyatomdb", type=Path)
    ap.add_argument("--resolve", type=Path)
    ap.add_argument("--apec-root")
    ap.add_argument("--apec-vers")
    ap.add_argument("--kts", type=float, nargs="+", default=[1.0, 2.0, 3.0, 5.0, 8.0])
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="approx-vs-apec-") as tmp:
        tmp = Path(tmp)
        (tmp / "xdg").mkdir()
        os.environ["XDG_CONFIG_HOME"] = str(tmp / "xdg")  # before soxs is imported: nothing into $HOME
        import soxs

        from hpcmass.observe import approx

        model = Approx(approx, tmp)
        print(f"approx_vs_apec: {approx.APEC_VERSION} against real AtomDB APEC, counts through the ACIS-I-like "
              f"ARF + Gaussian RMF of hpcmass.observe.approx; {platform.node()}, {platform.machine()}, "
              f"python {platform.python_version()}, numpy {np.__version__}, soxs {soxs.__version__}")
        pya = None
        if args.pyatomdb:
            te = np.linspace(0.1, 10.0, 1000)  # make_test_outputs.py's grid
            pya = (te, np.load(args.pyatomdb) * 1e14)  # emissivity -> XSPEC norm=1 units (SOXS's 1e14)
        rows, check = [], None
        if args.extg:
            r, check = extg_cases(args.extg, [k for k in args.kts if k <= 3.0], approx, model, pya)
            rows += r
        if args.resolve:
            rows += resolve_cases(args.resolve, approx, model)
        if args.table:
            rows += table_cases(args.table, args.kts, approx, model)
        if args.apec_root:
            rows += full_table_cases(args.apec_root, args.apec_vers, args.kts, approx, model)
        if pya is not None:
            e_mid = 0.5 * (pya[0][1:] + pya[0][:-1])
            rows.append(("pyatomdb CIESession (test answer), raw", 1.0, 1.0, 0.0,
                         *compare(e_mid, model.photons(pya[0], 1.0, 1.0, 0.0, 1.0, "angr"), pya[1], approx)))

    print(f"\n{'real APEC source':46}{'kT':>6}{'Z':>5}{'z':>6} | approx/APEC counts in band [keV]"
          f"{'':19}| soft share of 0.5-7")
    print(f"{'':46}{'keV':>6}{'':>5}{'':>6} |" + "".join(f"{f'{lo:g}-{hi:g}':>13}" for lo, hi in BANDS)
          + " |  approx   APEC")
    for src, kt, z_met, red, ratio, sh_a, sh_r, err in rows:
        cols = "".join(f"{fmt(x, None if err is None else err[i]):>13}" for i, x in enumerate(ratio))
        print(f"{src:46}{kt:6.2f}{z_met:5.2f}{red:6.3f} |{cols} | {fmt(sh_a):>7} {fmt(sh_r):>6}")
    if check is not None:
        d, u = check
        print("\nunfolding check, pyatomdb kT=1 Z=1 folded through EPIC-pn then unfolded as the EXTG rows are: "
              f"approx/APEC per band direct {' '.join(f'{x:.3f}' for x in d)}, "
              f"unfolded {' '.join(f'{x:.3f}' for x in u)}")


if __name__ == "__main__":
    main()
