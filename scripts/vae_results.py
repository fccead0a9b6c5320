"""The estimator comparison of chapter 4: every estimator, several seeds, each run until validation early stopping (or
its epoch budget), written to nbs/results/vae_<data>.json with the provenance of the runs.

    make results                                   # digits, then Fashion-MNIST (long: run it in the background)
    python scripts/vae_results.py --data digits    # one data set

Each run trains in its own folder under runs/results/ (checkpoint every epoch), so an interrupted call continues where it
stopped when called again, and finished runs are not repeated. The JSON file is written only when every run of the data
set has finished; budgets are in epochs, so the numbers do not depend on the machine's load (only the seconds do).
A run that reaches its epoch budget while its last epoch is still its best is resumed for EXTEND more epochs, until
its best epoch is not its last: no run is reported while it was still improving."""
import argparse, datetime, json, os, platform, shlex, sys, time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

import torch

import gumbel_tut
from gumbel_tut.data import load_dataset
from gumbel_tut.vae import CHECKPOINT, METRICS_JSON, CheckpointError, VAEConfig, load_checkpoint, train_vae

ROOT = Path(__file__).resolve().parent.parent
ESTIMATORS = ('gs', 'st-gs', 'st', 'reinforce-loo', 'gumbel-rao', 'rebar', 'relax')
# The settings of each data set; everything else is VAEConfig's default (the chapter states both). REBAR and RELAX
# are run on the digits only: per step they cost more than the others (chapter 2), and Fashion-MNIST's runs are long.
SETTINGS = {
    'digits': dict(seeds=(0, 1, 2), estimators=ESTIMATORS, config=dict(data='digits', latent='8x10', hidden='256,128', lr=3e-3, epochs=500, patience=10)),
    # m = 100 for the test bound: 10,000 test images x 1000 samples through the 784-pixel decoder cost a large part of a run
    'fashion-mnist': dict(seeds=(0, 1), estimators=ESTIMATORS[:5],
                          config=dict(data='fashion-mnist', latent='20x10', binarize='fixed', lr=1e-3, epochs=60, patience=5, iw_samples=100)),
}


def cpu_model() -> str:
    "The processor's model name (Linux), else what `platform` knows."
    try: return next(l.split(':', 1)[1].strip() for l in Path('/proc/cpuinfo').read_text().splitlines() if l.startswith('model name'))
    except (OSError, StopIteration): return platform.processor() or platform.machine()


def results_path(data): return ROOT / 'nbs' / 'results' / f"vae_{data.replace('-', '_')}.json"


EXTEND = 50


def run_one(data, config, out, threads):
    "Train one run into `out` (resuming an interrupted one, reusing a finished one); return its metrics and history."
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    m = json.loads((out / METRICS_JSON).read_text()) if (out / METRICS_JSON).exists() else None
    if m and (out / 'history.json').exists() and not config.resume_mismatch(m['config']) and not _still_improving(m):
        return m, json.loads((out / 'history.json').read_text())
    splits = load_dataset(data, binarize=config.binarize, split_seed=config.split_seed)
    try: resume = (out / CHECKPOINT).exists() and not config.resume_mismatch(load_checkpoint(out / CHECKPOINT, keys=('config',))['config'])
    except CheckpointError: resume = False  # damaged: start again
    if resume and m: config = replace(config, epochs=max(config.epochs, m['config']['epochs']))
    while True:
        run = train_vae(splits, config=config, out=out, resume=resume, overwrite=True, progress=False)
        if not _still_improving(run.metrics): break
        config, resume = replace(config, epochs=config.epochs + EXTEND), True
    (out / 'history.json').write_text(json.dumps(run.history))
    m = run.metrics
    print(f"{data} {config.estimator} seed {config.seed}: {m['epochs']} epochs ({m['stopped']}), best {m['best_epoch']}, "
          f"test -ELBO {m['test_neg_elbo_hard']:.2f}, IW {m['test_nll_iw']:.2f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return m, run.history


def _still_improving(m): return m['stopped'] == 'epochs' and m['best_epoch'] == m['epochs']


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--data', choices=sorted(SETTINGS), required=True)
    p.add_argument('--estimators', nargs='+', help="default: the data set's estimators")
    p.add_argument('--seeds', nargs='+', type=int, help="default: the data set's seeds")
    p.add_argument('--threads', type=int, default=1, help='torch threads of each run')
    p.add_argument('--jobs', type=int, default=1, help='runs trained at once, in separate processes')
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)  # this script owns its process
    setting = SETTINGS[a.data]
    seeds, estimators = a.seeds or setting['seeds'], a.estimators or setting['estimators']
    configs = [VAEConfig(**{**setting['config'], 'estimator': est, 'seed': seed}) for seed in seeds for est in estimators]
    outs = [ROOT / 'runs' / 'results' / a.data / f'{c.estimator}-seed{c.seed}' for c in configs]
    with ProcessPoolExecutor(a.jobs) as pool:
        done = list(pool.map(run_one, [a.data] * len(configs), configs, outs, [a.threads] * len(configs)))
    rows = []
    for config, (m, history) in zip(configs, done):
        rows.append(dict(data=a.data, estimator=config.estimator, seed=config.seed, latent=config.latent, binarize=config.binarize,
                         steps=m['steps'], best_epoch=m['best_epoch'], epochs=m['epochs'], stopped=m['stopped'],
                         test_neg_elbo_hard=m['test_neg_elbo_hard'], test_nll_iw=m['test_nll_iw'],
                         valid_neg_elbo_hard=m['valid_neg_elbo_hard'], train_neg_elbo_hard=m['train_neg_elbo_hard'],
                         seconds=m['seconds'], valid_curve=[r['valid_neg_elbo_hard'] for r in history],
                         train_curve=[r['train_loss'] for r in history], config=m['config']))
    provenance = dict(command=' '.join(['python', 'scripts/vae_results.py', *map(shlex.quote, sys.argv[1:] if argv is None else argv)]),
                      gumbel_tut=gumbel_tut.__version__, torch=torch.__version__, python=platform.python_version(),
                      threads=a.threads, jobs=a.jobs, cpu=cpu_model(), os=platform.platform(),
                      date=datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'))
    rows = [{**r, 'provenance': provenance} for r in rows]
    path = results_path(a.data)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix('.json.tmp')
    tmp.write_text(json.dumps(rows, indent=1) + '\n'); os.replace(tmp, path)
    print(f"wrote {len(rows)} runs to {path.relative_to(ROOT)}")


if __name__ == '__main__': main()
