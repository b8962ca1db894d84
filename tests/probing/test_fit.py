"""The batched torch probe against scikit-learn, and the pieces of cross-fitting."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from stages.probing.fit import (
    FitSettings,
    fit_probes,
    fit_temperature,
    fold_masks,
    out_of_fold_logits,
    predict,
    probe_logits,
)
from stages.probing.logistic import choose_formulation
from stages.probing.reduction import training_stats


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny problems: torch's thread pool only adds contention on the shared 2-core test machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def problem(n_examples=150, n_layers=3, d_model=10, n_slots=4, seed=0):
    rng = np.random.default_rng(seed)
    answers = rng.integers(0, n_slots, size=n_examples)
    features = rng.normal(size=(n_layers, n_examples, d_model)) * 4 + 10  # far from standardised on purpose
    features[:, :, :n_slots] += np.eye(n_slots)[answers] * np.arange(n_layers)[:, None, None] * 2
    return torch.tensor(features, dtype=torch.float32), torch.tensor(answers)


@pytest.mark.parametrize("l2", [1e-1, 1e-2])
def test_logistic_probe_matches_sklearn(l2):
    features, answers = problem()
    n_layers, n_examples, _ = features.shape
    valid = torch.ones(n_examples, 4, dtype=torch.bool)
    train = torch.ones(1, n_examples, dtype=torch.bool)
    params = fit_probes(features, answers, valid, train, FitSettings(l2=l2, tolerance=1e-7))
    probs = torch.softmax(predict({k: v[0] for k, v in params.items()}, features, valid), dim=-1).numpy()
    for layer in range(n_layers):
        x = features[layer].numpy().astype(np.float64)
        standardised = (x - x.mean(0)) / x.std(0)
        # sklearn minimises C * sum(CE) + ||W||^2 / 2, i.e. mean(CE) + ||W||^2 / (2 C n): C = 1 / (n * l2)
        reference = LogisticRegression(C=1 / (n_examples * l2), l1_ratio=0, tol=1e-10, max_iter=10_000)
        expected = reference.fit(standardised, answers.numpy()).predict_proba(standardised)
        np.testing.assert_array_equal(probs[layer].argmax(1), expected.argmax(1))
        np.testing.assert_allclose(probs[layer], expected, atol=2e-3)


def test_masked_slots_get_no_probability_and_do_not_distort():
    features, answers = problem(n_slots=3)
    answers = answers.clamp(max=2)
    n_examples = features.shape[1]
    valid_3 = torch.ones(n_examples, 3, dtype=torch.bool)
    # Same problem with two extra slots nobody has: identical predictions on the real slots.
    valid_5 = torch.cat([valid_3, torch.zeros(n_examples, 2, dtype=torch.bool)], dim=1)
    train = torch.ones(1, n_examples, dtype=torch.bool)
    settings = FitSettings(l2=1e-2, tolerance=1e-7)
    probs_3 = torch.softmax(
        predict(
            {k: v[0] for k, v in fit_probes(features, answers, valid_3, train, settings).items()}, features, valid_3
        ),
        -1,
    )
    probs_5 = torch.softmax(
        predict(
            {k: v[0] for k, v in fit_probes(features, answers, valid_5, train, settings).items()}, features, valid_5
        ),
        -1,
    )
    assert torch.all(probs_5[..., 3:] == 0)
    torch.testing.assert_close(probs_5[..., :3], probs_3, atol=1e-3, rtol=0)


def test_fold_masks_and_out_of_fold_gather():
    fold_of = torch.tensor([0, 1, 2, 0, 1])
    masks = fold_masks(fold_of, 3)
    assert masks.tolist() == [
        [False, True, True, False, True],
        [True, False, True, True, False],
        [True, True, False, True, True],
        [True] * 5,
    ]
    logits = torch.arange(4.0)[:, None, None, None].expand(4, 2, 5, 3)  # fit f predicts f everywhere
    assert out_of_fold_logits(logits, fold_of)[:, :, 0].tolist() == [[0, 1, 2, 0, 1]] * 2


def test_training_stats_use_training_rows_only():
    features = torch.tensor([[[1.0], [3.0], [100.0]]])  # (layers=1, examples=3, d=1)
    mean, std = training_stats(features, torch.tensor([[True, True, False]]))
    assert mean.item() == pytest.approx(2.0) and std.item() == pytest.approx(1.0)


def test_temperature_fixes_overconfidence():
    torch.manual_seed(0)
    answers = torch.randint(0, 3, (400,))
    truth = torch.nn.functional.one_hot(answers, 3).float() * 1.0 + torch.randn(400, 3) * 0.8
    overconfident = (truth * 5)[None]  # (layers=1, examples, slots), true temperature 5
    temperature = fit_temperature(overconfident, answers)
    assert 3 < temperature.item() < 8


def test_fit_is_deterministic():
    features, answers = problem()
    valid = torch.ones(features.shape[1], 4, dtype=torch.bool)
    train = fold_masks(torch.arange(features.shape[1]) % 3, 3)
    for kind in ("logistic", "mlp"):
        first = fit_probes(features, answers, valid, train, FitSettings(kind=kind, l2=1e-2, seed=1))
        second = fit_probes(features, answers, valid, train, FitSettings(kind=kind, l2=1e-2, seed=1))
        assert all(torch.equal(first[name], second[name]) for name in first)


def fold_problem(n_examples, d_model, n_slots=3, n_layers=2, seed=3):
    """Features far from standardised, per-dimension scales, a signal in the first n_slots dimensions."""
    rng = np.random.default_rng(seed)
    answers = rng.integers(0, n_slots, size=n_examples)
    features = rng.normal(size=(n_layers, n_examples, d_model)) * np.exp(rng.normal(size=d_model)) + 50
    features[:, :, :n_slots] += np.eye(n_slots)[answers] * 3
    return torch.tensor(features, dtype=torch.float32), torch.tensor(answers)


@pytest.mark.parametrize("formulation", ["dual", "primal"])
@pytest.mark.parametrize("n_examples, d_model", [(40, 120), (160, 12)])
def test_both_formulations_match_sklearn(formulation, n_examples, d_model):
    """Fewer examples than dimensions and more: each formulation reaches sklearn's optimum, folds and refit."""
    n_slots, l2 = 3, 1e-2
    features, answers = fold_problem(n_examples, d_model, n_slots)
    valid = torch.ones(n_examples, n_slots, dtype=torch.bool)
    train = fold_masks(torch.arange(n_examples) % 4, 4)
    settings = FitSettings(l2=l2, tolerance=1e-8, formulation=formulation)
    params = fit_probes(features, answers, valid, train, settings)
    for fit in (0, 4):  # a fold (3/4 of the rows) and the refit on all rows
        rows = train[fit].numpy()
        for layer in range(2):
            x = features[layer].numpy().astype(np.float64)
            mean, std = x.mean(0), x.std(0)  # every fit standardises with all training rows' statistics
            reference = LogisticRegression(C=1 / (rows.sum() * l2), l1_ratio=0, tol=1e-10, max_iter=10_000)
            reference.fit((x[rows] - mean) / std, answers.numpy()[rows])
            np.testing.assert_allclose(params["w"][fit, layer].numpy(), reference.coef_.T, atol=3e-4)
            centred = reference.intercept_ - reference.intercept_.mean()  # softmax ignores a common shift
            bias = params["b"][fit, layer].numpy()
            np.testing.assert_allclose(bias - bias.mean(), centred, atol=3e-4)
            probs = torch.softmax(predict({k: v[fit] for k, v in params.items()}, features, valid)[layer], -1)
            np.testing.assert_allclose(probs.numpy(), reference.predict_proba((x - mean) / std), atol=1e-4)


@pytest.mark.parametrize("n_examples, d_model", [(40, 120), (160, 12)])
def test_the_two_formulations_agree(n_examples, d_model):
    """Same problem, same objective, same stopping rule: the same probes either way, to the tolerance."""
    features, answers = fold_problem(n_examples, d_model, seed=4)
    valid = torch.ones(n_examples, 3, dtype=torch.bool)
    train = fold_masks(torch.arange(n_examples) % 5, 5)
    dual, primal = (
        fit_probes(features, answers, valid, train, FitSettings(l2=1e-2, tolerance=1e-7, formulation=formulation))
        for formulation in ("dual", "primal")
    )
    torch.testing.assert_close(primal["w"], dual["w"], atol=2e-4, rtol=0)
    probs = [torch.softmax(probe_logits(params, features, valid), -1) for params in (dual, primal)]
    torch.testing.assert_close(probs[1], probs[0], atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "n_rows, d_model, expected",
    [(64, 96, "dual"), (95, 96, "dual"), (96, 96, "primal"), (512, 4096, "dual"), (2048, 1024, "primal")],
)
def test_automatic_choice_of_formulation(n_rows, d_model, expected):
    """The rule as stated: the smaller Gram matrix, dual while the training rows are fewer than the dimensions."""
    assert choose_formulation(n_rows, d_model) == expected


@pytest.mark.parametrize("kind", ["logistic", "mlp"])
def test_every_fit_standardises_with_all_training_rows(kind):
    """Folds and refit share the statistics of every row some fit trains on (here all of them)."""
    features, answers = fold_problem(60, 8)
    valid = torch.ones(60, 3, dtype=torch.bool)
    train = fold_masks(torch.arange(60) % 3, 3)
    params = fit_probes(features, answers, valid, train, FitSettings(kind=kind, l2=1e-2, max_iter=50))
    mean, std = training_stats(features, torch.ones(1, 60, dtype=torch.bool))
    torch.testing.assert_close(params["mean"], mean.expand(4, -1, -1))
    torch.testing.assert_close(params["std"], std.expand(4, -1, -1))


@pytest.mark.parametrize("formulation", ["dual", "primal"])
def test_a_fold_never_sees_its_held_out_labels(formulation):
    """The held-out rows lend their features' moments to the shared standardisation, never their answers: a
    fold's probe is the same whatever answers its held-out rows carry."""
    features, answers = fold_problem(60, 90 if formulation == "dual" else 8)
    valid = torch.ones(60, 3, dtype=torch.bool)
    fold_of = torch.arange(60) % 3
    train = fold_masks(fold_of, 3)
    settings = FitSettings(l2=1e-2, tolerance=1e-7, formulation=formulation)
    shuffled = answers.clone()
    shuffled[fold_of == 0] = (answers[fold_of == 0] + 1) % 3  # every answer of fold 0 changed
    first, second = (fit_probes(features, a, valid, train, settings) for a in (answers, shuffled))
    for name in ("w", "b"):
        torch.testing.assert_close(first[name][0], second[name][0], atol=1e-6, rtol=0)
        assert not torch.allclose(first[name][1], second[name][1], atol=1e-3)  # fold 1 trains on them


@pytest.mark.parametrize("n_examples, d_model, expected", [(40, 120, "dual"), (160, 12, "primal")])
def test_auto_runs_the_chosen_formulation(n_examples, d_model, expected):
    features, answers = fold_problem(n_examples, d_model)
    valid = torch.ones(n_examples, 3, dtype=torch.bool)
    train = fold_masks(torch.arange(n_examples) % 4, 4)
    auto, chosen = (
        fit_probes(features, answers, valid, train, FitSettings(l2=1e-2, formulation=formulation))
        for formulation in ("auto", expected)
    )
    assert all(torch.equal(auto[name], chosen[name]) for name in auto)


def test_unknown_formulation_is_an_error():
    features, answers = fold_problem(20, 5)
    with pytest.raises(ValueError, match="formulation='newton'"):
        fit_probes(
            features,
            answers,
            torch.ones(20, 3, dtype=torch.bool),
            torch.ones(1, 20, dtype=torch.bool),
            FitSettings(formulation="newton"),
        )
