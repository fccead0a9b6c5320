"""The committed results of chapter 4's estimator comparison (nbs/results/vae_<data>.json): complete rows, enough seeds,
no run reported while it was still improving, and exactly the configuration `make results` (scripts/vae_results.py)
would run today, so that the script reproduces the files."""
import importlib.util, json
from dataclasses import asdict
from pathlib import Path

import pytest

from gumbel_tut.vae import VAEConfig

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location('vae_results', ROOT / 'scripts' / 'vae_results.py')
vae_results = importlib.util.module_from_spec(spec); spec.loader.exec_module(vae_results)

ROW_KEYS = {'data', 'estimator', 'seed', 'latent', 'steps', 'best_epoch', 'epochs', 'test_neg_elbo_hard', 'test_nll_iw',
            'valid_curve', 'train_curve', 'config', 'provenance'}
PROVENANCE_KEYS = {'command', 'torch', 'date', 'threads', 'jobs', 'cpu', 'gumbel_tut'}
MIN_SEEDS = {'digits': 3, 'fashion-mnist': 2}


def committed():
    return [d for d in vae_results.SETTINGS if vae_results.results_path(d).exists()]


def test_digits_results_are_committed():
    assert 'digits' in committed()


@pytest.mark.parametrize('data', committed())
def test_results_file(data):
    rows = json.loads(vae_results.results_path(data).read_text())
    setting = vae_results.SETTINGS[data]
    for r in rows:
        assert ROW_KEYS <= set(r), f"{data} row lacks {ROW_KEYS - set(r)}"
        assert PROVENANCE_KEYS <= set(r['provenance'])
        assert r['data'] == data and r['best_epoch'] < r['epochs'] == len(r['valid_curve']), "a run reported while still improving"
        assert min(r['valid_curve']) == r['valid_curve'][r['best_epoch'] - 1], "best_epoch is the epoch of the lowest validation -ELBO"
        assert r['test_nll_iw'] <= r['test_neg_elbo_hard'], "the importance-weighted bound is at least as tight as the ELBO"
        want = asdict(VAEConfig(**{**setting['config'], 'estimator': r['estimator'], 'seed': r['seed']}))
        extended = {k: v for k, v in r['config'].items() if k != 'epochs'}  # a still-improving run is extended (the script says how)
        assert extended == {k: v for k, v in want.items() if k != 'epochs'} and r['config']['epochs'] >= want['epochs']
    runs = {(r['estimator'], r['seed']) for r in rows}
    assert len(runs) == len(rows), "one row per estimator and seed"
    assert {e for e, _ in runs} == set(setting['estimators']), "every estimator of the script, and no other"
    assert all(sum(e == est for e, _ in runs) >= MIN_SEEDS[data] for est in setting['estimators'])
    assert {s for _, s in runs} == set(setting['seeds'])
    assert len({json.dumps(r['provenance'], sort_keys=True) for r in rows}) == 1, "one call of the script made the file"
