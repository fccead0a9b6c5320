"""The committed results of chapter 4's estimator comparison (nbs/results/vae_<data>.json): complete rows, enough seeds,
no run reported while it was still improving, exactly the configuration `make results` (scripts/vae_results.py)
would run today, so that the script reproduces the files, and the script's RULES, the same for every data set."""
import importlib.util, json
from dataclasses import asdict
from pathlib import Path

import pytest

from gumbel_tut.train import VAEConfig

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location('vae_results', ROOT / 'scripts' / 'vae_results.py')
vae_results = importlib.util.module_from_spec(spec); spec.loader.exec_module(vae_results)

ROW_KEYS = {'data', 'estimator', 'seed', 'latent', 'steps', 'best_epoch', 'epochs', 'test_neg_elbo_hard', 'test_nll_iw',
            'test_rec', 'test_kl', 'valid_curve', 'train_curve', 'kl_curve', 'config', 'provenance'}
PROVENANCE_KEYS = {'command', 'torch', 'date', 'threads', 'jobs', 'cpu', 'gumbel_tut'}
MIN_SEEDS = {'digits': 3, 'fashion-mnist': 3}


def committed():
    return [d for d in vae_results.SETTINGS if vae_results.results_path(d).exists()]


def test_digits_results_are_committed():
    assert 'digits' in committed()


@pytest.mark.parametrize('data', committed())
def test_results_file(data):
    rows = json.loads(vae_results.results_path(data).read_text())
    setting = OLD_SETTINGS.get(data, vae_results.SETTINGS[data])  # the settings the committed file was made with
    for r in rows:
        assert ROW_KEYS <= set(r), f"{data} row lacks {ROW_KEYS - set(r)}"
        assert PROVENANCE_KEYS <= set(r['provenance'])
        assert r['data'] == data and r['best_epoch'] < r['epochs'] == len(r['valid_curve']), "a run reported while still improving"
        assert r['valid_curve'].index(min(r['valid_curve'])) == r['best_epoch'] - 1, "best_epoch is the (first) epoch of the lowest validation -ELBO"
        assert len(r['train_curve']) == r['epochs'] and r['config']['epochs'] >= r['epochs']
        assert len(r['kl_curve']) == r['epochs']
        assert r['test_neg_elbo_hard'] == pytest.approx(r['test_rec'] + r['test_kl'], rel=1e-6), "-ELBO = reconstruction + KL"
        assert r['test_kl'] >= 0 and min(r['kl_curve']) >= 0, "a KL divergence is never negative"
        assert r['test_nll_iw'] <= r['test_neg_elbo_hard'], "the importance-weighted bound is at least as tight as the ELBO"
        want = asdict(VAEConfig(**{**setting['config'], 'estimator': r['estimator'], 'seed': r['seed']}))
        extended = {k: v for k, v in r['config'].items() if k != 'epochs'}  # a still-improving run is extended (the script says how)
        assert extended == {k: v for k, v in want.items() if k != 'epochs'} and r['config']['epochs'] >= want['epochs']
    runs = {(r['estimator'], r['seed']) for r in rows}
    assert len(runs) == len(rows), "one row per estimator and seed"
    assert {e for e, _ in runs} == set(setting['estimators']), "every estimator of the script, and no other"
    assert all(sum(e == est for e, _ in runs) >= MIN_SEEDS[data] for est in setting['estimators'])
    assert {s for _, s in runs} == set(setting['seeds'])
    # one call of the script made the file, or several whose committed records it combines (nbs/results/records/<data>/)
    assert all(r['provenance']['command'].startswith('python scripts/vae_results.py') for r in rows)


# Data sets whose committed file predates RULES, and why it has not been made again. Each entry is checked: its file
# must still break the rules (remove the entry once the data set is rerun), and follow the rules it was made with.
OLD_RULES = {}


# The settings the files of OLD_RULES were made with (the script's SETTINGS have moved on to RULES).
OLD_SETTINGS = {}


def rules_broken(data, rows):
    "How the rows of `data` break the script's RULES: a list of sentences, empty if they follow them."
    want = vae_results.rules_config(data)
    broken = [f"{r['estimator']} seed {r['seed']}: {k} {r['config'][k]}, the rules say {v}"
              for r in rows for k, v in want.items() if r['config'][k] != v]
    broken += [f"{r['estimator']} seed {r['seed']}: best epoch {r['best_epoch']} within patience {r['config']['patience']} of its "
               f"last epoch {r['epochs']}: not continued" for r in rows if r['epochs'] - r['best_epoch'] < (r['config']['patience'] or 0)]
    return broken


@pytest.mark.parametrize('data', sorted(vae_results.SETTINGS))
def test_rules(data):
    "Every data set follows RULES (its settings and its committed runs), except those OLD_RULES names, visibly."
    rows = json.loads(vae_results.results_path(data).read_text()) if vae_results.results_path(data).exists() else []
    if data in OLD_RULES:
        assert rules_broken(data, rows), f"{data} now follows RULES: remove it from OLD_RULES"
        assert all(r['best_epoch'] < r['epochs'] for r in rows), f"{data}: a run reported while its last epoch was its best"
        print(f"{data} is still on the old rules: {OLD_RULES[data]}")
        return
    setting = vae_results.SETTINGS[data]['config']
    assert {k: setting.get(k) for k in vae_results.rules_config(data)} == vae_results.rules_config(data), f"{data}: SETTINGS depart from RULES"
    assert not rules_broken(data, rows), '; '.join(rules_broken(data, rows))
    assert all(r['stopped'] == 'early' for r in rows), "with RULES' continuation every run ends by early stopping"


def test_the_digits_follow_the_rules():
    "The digits are rerun with RULES; the chapter reads them."
    assert 'digits' not in OLD_RULES and vae_results.RULES['patience'] == 30
