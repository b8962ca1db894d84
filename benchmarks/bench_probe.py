"""Benchmark the batched torch probe (all layers and folds at once) against scikit-learn, one table of regimes.

Not part of pytest. Each row is one shape (layers x d_model, labeled rows n, isotropic or anisotropic features),
fitted as the probe stage does (5 folds + a refit on all rows, every layer) by torch, with the formulation
`stages.probing.logistic.choose_formulation` picks, and by `LogisticRegression` layer by layer on the same
standardised features (every fit of a layer standardised with all training rows' statistics, as the stage does)
and objective (C = 1 / (n_train * l2)): at sklearn's default tol=1e-4 and converged (tol=1e-8). torch runs at
the probe stage's tolerance and at a tight one (the "converged" torch the objective gap is measured on); sklearn
on one thread (its lbfgs fits are too small to gain from BLAS threads), torch on 1; with --two-threads also
torch on 2 threads against sklearn's converged fits spread over 2 processes. Times are the best of --repeats:
CPU seconds on one thread, wall seconds on two. Objective gap: the largest relative excess, over every (fit,
layer), of torch's objective over sklearn's converged one (negative: torch lower everywhere). Accuracy gap:
largest per-layer difference in test accuracy of the refits, torch at the stage's tolerance (and at the tight
one) against sklearn converged; and sklearn's default against its converged self, the size of gap a fit that
stops at tol=1e-4 normally has.

    python benchmarks/bench_probe.py                     # every row (tens of minutes on a 2-core machine)
    python benchmarks/bench_probe.py --rows 8x256x256    # some rows
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/torch import: one BLAS thread for sklearn
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's `stages`, not an installed one
from stages.probing.fit import FitSettings, fit_probes, fold_masks, predict  # noqa: E402
from stages.probing.logistic import choose_formulation  # noqa: E402

N_FOLDS, N_SLOTS, N_TEST, L2 = 5, 4, 512, 1e-3


@dataclass(frozen=True)
class Row:
    n_layers: int
    d_model: int
    n_train: int
    anisotropic: bool

    @property
    def name(self) -> str:
        return f"{self.n_layers}x{self.d_model}x{self.n_train}{'a' if self.anisotropic else 'i'}"


# n / d_model from 1/64 to 4, d_model from 96 to 4096, 3 to 33 layers; `a` anisotropic, `i` isotropic.
ROWS = [
    Row(33, 4096, 64, True),
    Row(33, 4096, 64, False),
    Row(33, 4096, 256, True),
    Row(33, 4096, 512, True),
    Row(16, 1024, 128, True),
    Row(16, 1024, 512, True),
    Row(16, 1024, 1024, True),
    Row(25, 896, 1024, True),
    Row(8, 256, 256, False),
    Row(8, 256, 256, True),
    Row(8, 256, 1024, True),
    Row(3, 96, 64, True),
    Row(3, 96, 384, False),
]


def synthetic_layers(n_layers: int, n_examples: int, d_model: int, seed: int, anisotropic: bool):
    """Hidden states whose answer signal rises then falls with depth, large offsets.

    Isotropic: independent noise per dimension with log-normal scales. Anisotropic: closer to real residual
    streams, correlated noise with a power-law spectrum (variance ~ 1/i) and a few massive-activation
    dimensions; ill-conditioned, which is where first-order solvers need many iterations.
    """
    rng = np.random.default_rng(seed)
    answers = rng.integers(0, N_SLOTS, size=n_examples)
    directions = rng.normal(size=(N_SLOTS, d_model)) / np.sqrt(d_model) * 6
    strength = np.sin(np.linspace(0.1, np.pi - 0.1, n_layers))  # peaks in the middle layers
    if anisotropic:
        scales = np.ones(d_model)
        mixing = rng.normal(size=(d_model, d_model)).astype(np.float32) / np.sqrt(d_model)
        spectrum = (np.arange(1, d_model + 1) ** -0.5 * np.sqrt(d_model) / 4).astype(np.float32)
        massive = rng.choice(d_model, size=4, replace=False)
    else:
        scales = np.exp(rng.normal(size=d_model))  # per-dimension noise scale
    features = np.empty((n_layers, n_examples, d_model), dtype=np.float32)
    for layer in range(n_layers):
        if anisotropic:
            noise = (rng.normal(size=(n_examples, d_model)).astype(np.float32) * spectrum) @ mixing
            noise[:, massive] *= 50
        else:
            noise = rng.normal(size=(n_examples, d_model)) * scales
        noise += rng.normal(size=d_model) * 20
        features[layer] = noise + strength[layer] * directions[answers] * scales
    return features, answers


def train_masks(n_train: int) -> np.ndarray:
    """(n_folds + 1, n_train) bool: the probe stage's fits, folds dealt round-robin, then all rows."""
    return fold_masks(torch.arange(n_train) % N_FOLDS, N_FOLDS).numpy()


def clock(threads: int) -> float:
    """CPU seconds for one thread (on a shared machine, less disturbed by other processes than wall time), wall
    seconds for more."""
    return time.process_time() if threads == 1 else time.perf_counter()


def fit_torch(train_x, train_y, test_x, tolerance: float, threads: int, formulation: str = "auto"):
    """Seconds, per-(fit, layer) weights (w, b) and the refits' test predictions (n_layers, n_test)."""
    torch.set_num_threads(threads)
    valid = torch.ones(train_x.shape[1], N_SLOTS, dtype=torch.bool)
    start = clock(threads)
    params = fit_probes(
        torch.from_numpy(train_x),
        torch.from_numpy(train_y),
        valid,
        torch.from_numpy(train_masks(len(train_y))),
        FitSettings(l2=L2, tolerance=tolerance, formulation=formulation),
    )
    seconds = clock(threads) - start
    refit = {name: tensor[N_FOLDS] for name, tensor in params.items()}
    predictions = predict(refit, torch.from_numpy(test_x), torch.ones(test_x.shape[1], N_SLOTS, dtype=torch.bool))
    return seconds, (params["w"].double().numpy(), params["b"].double().numpy()), predictions.argmax(-1).numpy()


def fit_sklearn(train_x, train_y, test_x, tol: float):
    """The same fits one (fit, layer) at a time with LogisticRegression (lbfgs, multinomial); same returns."""
    masks = train_masks(len(train_y))
    n_layers, _, d_model = train_x.shape
    w, b = np.empty((len(masks), n_layers, d_model, N_SLOTS)), np.empty((len(masks), n_layers, N_SLOTS))
    seconds, predictions = 0.0, []
    for layer in range(n_layers):
        start = time.process_time()
        mean, std = standardisation(train_x[layer])
        standardised = (train_x[layer] - mean) / std
        seconds += time.process_time() - start
        for fit, rows in enumerate(masks):
            start = time.process_time()
            model = LogisticRegression(C=1.0 / (rows.sum() * L2), max_iter=10_000, tol=tol)
            model.fit(standardised[rows], train_y[rows])
            seconds += time.process_time() - start
            w[fit, layer], b[fit, layer] = model.coef_.T, model.intercept_
        predictions.append(model.predict((test_x[layer] - mean) / std))  # the last fit is the refit
    return seconds, (w, b), np.stack(predictions)


def fit_sklearn_parallel(train_x, train_y, tol: float, workers: int) -> tuple[float, None, None]:
    """Wall seconds of the same fits spread over `workers` processes by layer (joblib): how scikit-learn uses two
    cores, across fits rather than within one (its lbfgs fits are too small for BLAS threads to help)."""
    from joblib import Parallel, delayed

    start = time.perf_counter()
    Parallel(n_jobs=workers)(
        delayed(fit_sklearn)(train_x[layer : layer + 1], train_y, train_x[layer : layer + 1, :1], tol)
        for layer in range(train_x.shape[0])
    )
    return time.perf_counter() - start, None, None


def standardisation(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The probe stage's: mean and std of all training rows, shared by every fit of the layer."""
    return x.mean(0), np.maximum(x.std(0), 1e-6)


def objective(train_x, train_y, weights) -> np.ndarray:
    """(n_fits, n_layers) mean CE + l2 / 2 ||W||^2 on each fit's training rows, standardised, float64."""
    w, b = weights
    masks = train_masks(len(train_y))
    out = np.empty(w.shape[:2])
    for fit, rows in enumerate(masks):
        for layer in range(train_x.shape[0]):
            x = train_x[layer].astype(np.float64)
            mean, std = standardisation(x)
            logits = ((x - mean) / std)[rows] @ w[fit, layer] + b[fit, layer]
            logits -= logits.max(1, keepdims=True)
            log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
            cross_entropy = -log_probs[np.arange(rows.sum()), train_y[rows]].mean()
            out[fit, layer] = cross_entropy + L2 / 2 * (w[fit, layer] ** 2).sum()
    return out


def measure(row: Row, repeats: int, tight: float, two_threads: bool) -> dict:
    features, answers = synthetic_layers(row.n_layers, row.n_train + N_TEST, row.d_model, 0, row.anisotropic)
    train_x, test_x = features[:, : row.n_train], features[:, row.n_train :]
    train_y, test_y = answers[: row.n_train], answers[row.n_train :]
    fit_torch(train_x[:1, :40], train_y[:40], test_x[:1, :8], 1e-4, 1)  # warm-up: first-call costs
    runs = {
        "torch": lambda: fit_torch(train_x, train_y, test_x, FitSettings.tolerance, 1),
        "sk": lambda: fit_sklearn(train_x, train_y, test_x, 1e-4),
        "torch_tight": lambda: fit_torch(train_x, train_y, test_x, tight, 1),
        "sk_exact": lambda: fit_sklearn(train_x, train_y, test_x, 1e-8),
    }
    if two_threads:
        runs["torch_tight_2"] = lambda: fit_torch(train_x, train_y, test_x, tight, 2)
        runs["sk_exact_2"] = lambda: fit_sklearn_parallel(train_x, train_y, 1e-8, 2)
        fit_sklearn_parallel(train_x[:2, :40], train_y[:40], 1e-4, 2)  # warm-up: the worker processes start
    best: dict = {}
    for _ in range(repeats):  # interleaved, the fastest of each kept: the machine is shared
        for name, run in runs.items():
            result = run()
            if name not in best or result[0] < best[name][0]:
                best[name] = result
    exact = objective(train_x, train_y, best["sk_exact"][1])
    accuracy = {name: (result[2] == test_y).mean(1) * 100 for name, result in best.items() if result[2] is not None}
    return {
        "seconds": {name: result[0] for name, result in best.items()},
        "formulation": choose_formulation(row.n_train, row.d_model),
        "objective_gap": float((objective(train_x, train_y, best["torch_tight"][1]) / exact - 1).max()),
        "objective_gap_default": float((objective(train_x, train_y, best["torch"][1]) / exact - 1).max()),
        "accuracy_gap": float(np.abs(accuracy["torch"] - accuracy["sk_exact"]).max()),
        "accuracy_gap_tight": float(np.abs(accuracy["torch_tight"] - accuracy["sk_exact"]).max()),
        # sklearn's own default fit against its converged one: how far test accuracy moves for an objective gap
        # of sklearn's default size, the yardstick for torch's accuracy gap
        "accuracy_gap_sklearn": float(np.abs(accuracy["sk"] - accuracy["sk_exact"]).max()),
    }


def header(tight: float, two_threads: bool) -> str:
    cells = ["layers x d_model x n (n/d)", "features", "path", "torch 1e-4", "sklearn 1e-4", f"torch {tight:g}"]
    cells += [f"torch {tight:g}, 2 threads"] * two_threads + ["sklearn 1e-8"]
    cells += ["sklearn 1e-8, 2 processes"] * two_threads + ["speed-up vs 1e-4", "speed-up vs 1e-8"]
    cells += ["speed-up vs 1e-8, 2 cores"] * two_threads
    cells += [f"objective gap {tight:g} (1e-4)", f"accuracy gap 1e-4 ({tight:g})"]
    cells += ["sklearn 1e-4 accuracy gap"]
    return "| " + " | ".join(cells) + " |"


def table_row(row: Row, result: dict) -> str:
    s = result["seconds"]
    exact_fraction = row.n_train < row.d_model and row.d_model % row.n_train == 0
    ratio = f"1/{row.d_model // row.n_train}" if exact_fraction else f"{row.n_train / row.d_model:.3g}"
    timed = [name for name in ("torch", "sk", "torch_tight", "torch_tight_2", "sk_exact", "sk_exact_2") if name in s]
    cells = [
        f"{row.n_layers} x {row.d_model} x {row.n_train} ({ratio})",
        "anisotropic" if row.anisotropic else "isotropic",
        result["formulation"],
        *(f"{s[name]:.2f} s" for name in timed),
        f"{s['sk'] / s['torch']:.1f}x",
        f"{s['sk_exact'] / s['torch_tight']:.1f}x",
        *([f"{s['sk_exact_2'] / s['torch_tight_2']:.1f}x"] if "sk_exact_2" in s else []),
        f"{result['objective_gap']:+.1e} ({result['objective_gap_default']:+.1e})",
        f"{result['accuracy_gap']:.1f} pt ({result['accuracy_gap_tight']:.1f})",
        f"{result['accuracy_gap_sklearn']:.1f} pt",
    ]
    return "| " + " | ".join(cells) + " |"


# The crossover table: d_model x layers, and n_train / d_model from well below to well above the rule's boundary.
CROSSOVER_SHAPES = [(96, 8), (256, 8), (1024, 4)]
CROSSOVER_FRACTIONS = [0.25, 0.5, 0.75, 1.0, 1.5, 2.0]


def crossover(repeats: int) -> None:
    """Dual against primal at the stage's tolerance, CPU seconds on one thread, anisotropic features: where the
    rule `choose_formulation` switches against where the measured times cross."""
    print("| d_model x layers | n_train (n/d) | dual | primal | dual / primal | rule picks |")
    print("|---|---|---|---|---|---|")
    for d_model, n_layers in CROSSOVER_SHAPES:
        for fraction in CROSSOVER_FRACTIONS:
            n_train = int(round(fraction * d_model))
            features, answers = synthetic_layers(n_layers, n_train + 8, d_model, 0, True)
            train_x, train_y, test_x = features[:, :n_train], answers[:n_train], features[:, n_train:]
            seconds = {
                formulation: min(
                    fit_torch(train_x, train_y, test_x, FitSettings.tolerance, 1, formulation)[0]
                    for _ in range(repeats)
                )
                for formulation in ("dual", "primal")
            }
            picked = choose_formulation(n_train, d_model)
            print(
                f"| {d_model} x {n_layers} | {n_train} ({fraction:g}) | {seconds['dual']:.2f} s | "
                f"{seconds['primal']:.2f} s | {seconds['dual'] / seconds['primal']:.2f} | {picked} |",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="*", help=f"row names to run (default all): {[r.name for r in ROWS]}")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each fit; the fastest is reported")
    parser.add_argument("--tight", type=float, default=1e-5, help="torch's tolerance for the converged fit")
    parser.add_argument("--two-threads", action="store_true", help="also time torch on 2 threads (wall time)")
    parser.add_argument("--crossover", action="store_true", help="time dual against primal around the rule instead")
    args = parser.parse_args()
    if args.crossover:
        crossover(args.repeats)
        return
    rows = [row for row in ROWS if not args.rows or row.name in args.rows]
    print(f"{N_FOLDS} folds + refit per layer, {N_SLOTS} slots, l2 {L2}, {N_TEST} test rows; best of {args.repeats}")
    print(header(args.tight, args.two_threads))
    print("|" + "---|" * (header(args.tight, args.two_threads).count(" | ") + 1))
    for row in rows:
        print(table_row(row, measure(row, args.repeats, args.tight, args.two_threads)), flush=True)


if __name__ == "__main__":
    main()
