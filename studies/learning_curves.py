"""Learning curves of the CNN, and what each stopping rule keeps from them (issue 18).

Trains folds of a workdir whose dataset stage is complete for a fixed number of epochs (no early
stop), recording per epoch the training loss, the validation loss, the paper's criteria and — for
this study only, never for choosing — every test view's prediction. It then replays each stopping
rule on the recorded histories: ``train.stopping`` is a pure function of them
(:func:`hpcmass.train.stopping.decide`) and the trajectory does not depend on when a fold will
stop (every epoch's randomness comes from (seed, fold, epoch)), so a rule's kept epoch and its
test scatter are those the train stage gives on the same clusters, folds and seeds.

    mpirun -n 2 .venv/bin/python studies/learning_curves.py --params params/demo.yaml \\
        --workdir runs/s100 --set catalog.n_clusters=100 --set dataset.n_folds=5 --epochs 50 \\
        --out runs/s100/study_log1p

Ranks take folds round-robin; a fold already recorded in ``--out`` (``fold_KK.npz``) is not
trained again, so a second call with ``--max-epochs N`` replays the rules on the first N epochs
alone (a run with ``train.max_epochs = N``). Writes ``summary.json`` and ``learning_curves.png``
and prints the table of rules.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from scipy import stats

from hpcmass.cpu import configure_tensorflow
from hpcmass.mpi import get_logger, wait_all, world
from hpcmass.params import load_params
from hpcmass.report.figures import FoldCurves, learning_curves
from hpcmass.report.stats import gaussian_fit
from hpcmass.store import Store
from hpcmass.store.readers import load_catalog, load_folds, load_observations
from hpcmass.store.provenance import git_commit, package_versions
from hpcmass.train.checkpoint import HISTORY_KEYS
from hpcmass.train.stopping import decide

#: Rules replayed on the curves: (label, train.stopping, train.patience).
RULES = (("paper", "paper", 1), ("plateau, patience 5", "plateau", 5), ("plateau, patience 10", "plateau", 10),
         ("plateau, patience 20", "plateau", 20))


def record_fold(fold: int, images, log_m, folds, params, scratch: Path, log) -> dict:
    """Train ``fold`` for ``params.train.max_epochs`` epochs (no early stop); its history and the
    prediction of every test view after every epoch."""
    from hpcmass.dataset.folds import split
    from hpcmass.train.fold import train_fold
    from hpcmass.train.model import predict_log_m500c
    from hpcmass.train.pipeline import ViewSource

    test_c = split(folds, fold, params.dataset.n_folds)[2]
    test_x = ViewSource(images, log_m).views(test_c)
    per_epoch = []

    def on_epoch(epoch, model):
        per_epoch.append(predict_log_m500c(model, test_x).reshape(test_c.size, -1))

    res = train_fold(fold, images, log_m, folds, params, scratch, log=log, on_epoch=on_epoch)
    shutil.rmtree(scratch, ignore_errors=True)  # the study's checkpoints and models: not kept
    return {"fold": fold, "status": res.status, "test_clusters": test_c, "test_pred": np.array(per_epoch),
            **{k: np.asarray(res.history[k], dtype=float) for k in HISTORY_KEYS}}


def replay(rec: dict, rule: str, patience: int, max_epochs: int):
    """The decision ``rule`` reaches on a recorded fold: the first epoch at which it stops, or the
    end of the record."""
    n = rec["val_loss"].size
    for epoch in range(1, n + 1):
        d = decide(rec["val_loss"][:epoch], rec["val_met"][:epoch], rule, patience, max_epochs)
        if d.stop:
            return epoch, d
    return n, d


def residuals(records, log_m, kept: dict[int, int]) -> np.ndarray:
    """(test clusters of all folds, views) δ with fold k's model of epoch kept[k]."""
    return np.concatenate([r["test_pred"][kept[r["fold"]] - 1] - log_m[r["test_clusters"], None] for r in records])


def paired_difference(delta, reference, n_resamples: int, seed: int) -> dict:
    """σ(delta) − σ(reference) on the same clusters, with its cluster-bootstrap standard error (both
    resampled with the same clusters, so what the two share cancels)."""
    res = stats.bootstrap((np.arange(delta.shape[0]),), lambda i: np.std(delta[i]) - np.std(reference[i]),
                          vectorized=False, n_resamples=n_resamples, method="percentile",
                          rng=np.random.default_rng(seed))
    return {"dsigma": float(np.std(delta) - np.std(reference)), "err": float(res.standard_error)}


def summarise(records, log_m, params, n_resamples: int) -> dict:
    """Each rule replayed on the records (all of equal length), its scatter on the test folds."""
    seed, epochs = params.run.seed, records[0]["val_loss"].size
    rows = []
    for label, rule, patience in RULES:
        kept, per_fold = {}, []
        for r in records:
            stopped, d = replay(r, rule, patience, epochs)
            kept[r["fold"]] = d.kept
            best = float(np.nanmin(r["val_loss"]))
            per_fold.append({"fold": r["fold"], "stopped_after": stopped, "kept": d.kept, "criteria_met": d.met,
                             # against the lowest over the epochs the rule trained, and over the record
                             "val_loss_over_best_trained": float(r["val_loss"][d.kept - 1]
                                                                 / np.nanmin(r["val_loss"][:stopped])),
                             "val_loss_over_best": float(r["val_loss"][d.kept - 1] / best),
                             "reason": d.reason})
        rows.append({"rule": label, "folds": per_fold, "kept": kept})
    rows.append({"rule": f"fixed: epoch {epochs} (the end of the record)", "folds": [],
                 "kept": {r["fold"]: epochs for r in records}})
    # Not a rule (it looks at the test fold): the floor any validation-based rule could reach.
    rows.append({"rule": "oracle: each fold's best test epoch (not a rule)", "folds": [],
                 "kept": {r["fold"]: int(np.argmin([np.std(p - log_m[r["test_clusters"], None])
                                                    for p in r["test_pred"]])) + 1 for r in records}})
    paper = residuals(records, log_m, rows[0]["kept"])
    for row in rows:
        delta = residuals(records, log_m, row.pop("kept"))
        row["scatter"] = gaussian_fit(delta, n_resamples, seed).as_dict()
        row["minus_paper"] = paired_difference(delta, paper, n_resamples, seed)
    return {"epochs": epochs, "rows": rows,
            "params": {"scaling": params.dataset.scaling, "output_bias": params.train.output_bias,
                       "learning_rate": params.train.learning_rate, "batch_size": params.train.batch_size,
                       "seed": seed, "n_clusters": int(log_m.size), "n_folds": params.dataset.n_folds},
            "params_yaml": params.to_yaml(), "versions": package_versions(), "git_commit": git_commit()}


def plot(records, log_m, summary, path: Path) -> None:
    kept = {row["rule"]: {f["fold"]: f["kept"] for f in row["folds"]} for row in summary["rows"] if row["folds"]}
    curves = [FoldCurves(r["fold"], r["loss"], r["val_loss"], r["val_met"],
                         {label: ks[r["fold"]] for label, ks in kept.items()},
                         np.array([np.std(p - log_m[r["test_clusters"], None]) ** 2 for p in r["test_pred"]]))
              for r in records]
    p = summary["params"]
    learning_curves(curves, path, f"{p['n_clusters']} clusters, {p['n_folds']} folds, scaling {p['scaling']}, "
                                  f"output bias {p['output_bias']}")


def table(summary) -> str:
    lines = [f"{summary['epochs']} epochs; per fold: kept epoch (stopped after), kept validation loss over "
             f"the lowest of the epochs trained / of the whole record",
             f"{'rule':<52} {'sigma [dex]':>17} {'mu [dex]':>8} {'sigma - paper rule':>18}"]
    for row in summary["rows"]:
        s, d = row["scatter"], row["minus_paper"]
        folds = "; ".join(f"{f['kept']} ({f['stopped_after']}) {f['val_loss_over_best_trained']:.2f}/"
                          f"{f['val_loss_over_best']:.2f}" + ("" if f["criteria_met"] else " unmet")
                          for f in row["folds"])
        lines.append(f"{row['rule']:<52} {s['sigma']:.4f} ± {s['sigma_err']:.4f} {s['mu']:+8.4f} "
                     f"{d['dsigma']:+.4f} ± {d['err']:.4f}  {folds}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", required=True)
    ap.add_argument("--workdir", required=True, type=Path, help="a workdir whose dataset stage is complete")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--epochs", type=int, default=50, help="epochs every fold trains (no early stop)")
    ap.add_argument("--folds", default=None, help="comma-separated folds (default: all)")
    ap.add_argument("--max-epochs", type=int, default=None,
                    help="replay the rules on the first N recorded epochs (default: all)")
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args(argv)
    comm = world()
    log = get_logger(comm)
    # The fixed-length run: the plateau rule with a patience longer than the run never stops early.
    params = load_params(args.params, [*args.set, f"train.max_epochs={args.epochs}", "train.stopping=plateau",
                                       f"train.patience={args.epochs}"])
    with Store.read(args.workdir) as s:
        images, log_m, folds = load_observations(s).counts, load_catalog(s).log_m500c, load_folds(s)
    wanted = ([int(k) for k in args.folds.split(",")] if args.folds else list(range(params.dataset.n_folds)))
    args.out.mkdir(parents=True, exist_ok=True)
    todo = [k for k in wanted if not (args.out / f"fold_{k:02d}.npz").exists()]
    mine = todo[comm.Get_rank()::comm.Get_size()]
    configure_tensorflow(comm, working=bool(mine), override=params.site.threads, log=log)
    for k in mine:
        rec = record_fold(k, images, log_m, folds, params, args.out / f"scratch_{k:02d}", log)
        np.savez(args.out / f"fold_{k:02d}.npz", **rec)
    wait_all(comm)
    if comm.Get_rank() == 0:
        records = [dict(np.load(args.out / f"fold_{k:02d}.npz")) for k in wanted]
        n = min([r["val_loss"].size for r in records] + [args.max_epochs or np.inf])
        records = [{**r, "fold": int(r["fold"]), **{k: r[k][:n] for k in (*HISTORY_KEYS, "test_pred")}}
                   for r in records]
        summary = summarise(records, log_m, params, params.report.bootstrap_resamples)
        name = f"_max{args.max_epochs}" if args.max_epochs else ""
        (args.out / f"summary{name}.json").write_text(json.dumps(summary, indent=1, default=float))
        plot(records, log_m, summary, args.out / f"learning_curves{name}.png")
        print(table(summary))
        print(f"wrote {args.out}/summary{name}.json and learning_curves{name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
