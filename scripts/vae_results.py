"""The estimator comparison of chapter 4: every estimator, several seeds, each run until validation early stopping,
written to nbs/results/vae_<data>.json with the provenance of the runs.

    make results                                   # digits, then Fashion-MNIST (long: run it in the background)
    python scripts/vae_results.py --data digits    # one data set

Each run trains in its own folder under runs/results/<data>/ (a checkpoint every epoch), so a call that was interrupted
(Ctrl-C, kill -9, a crash, a reboot) continues where it stopped when called again. Each finished run also leaves its
record, the row it contributes to the results file, in nbs/results/records/<data>/: commit the records, and a call on
another machine (without the run folders) reuses every record made with today's settings, so that a comparison too
long for one machine's session is spread over several. A run folder is trusted only as far
as it agrees with itself and with today's settings: its checkpoint (checksummed, written atomically) holds the settings
and the curve, and its metrics.json must be the evaluation of that checkpoint with those settings. A folder that does
not agree is continued from its checkpoint, evaluated again, or trained again, and the call says which and why. One
call at a time per data set (a lock in runs/results/<data>/); the JSON file is written only when every run has finished.
Budgets are in epochs, so the numbers do not depend on the machine's load (only the seconds do).

RULES holds the rules of the comparison, the same for every data set."""
import argparse, datetime, json, math, os, platform, shlex, signal, statistics, sys, threading, time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

import gumbel_tut
from gumbel_tut.data import load_dataset
from gumbel_tut.vae import NonFiniteLossError
from gumbel_tut.train import CHECKPOINT, METRICS_JSON, CheckpointError, VAEConfig, load_checkpoint, train_vae

ROOT = Path(__file__).resolve().parent.parent
PROG = 'vae_results.py'
ESTIMATORS = ('gs', 'st-gs', 'st', 'reinforce-loo', 'gumbel-rao', 'rebar', 'relax')

# The rules of the comparison, for every data set:
# - early stopping after `patience` epochs without a better validation -ELBO, and no run is reported while its best
#   epoch is within `patience` epochs of its epoch budget: such a run is continued (`next_budget`), so every run
#   ends by early stopping and the budget only says how far a run trains before it is looked at;
# - the test bound (importance weighted) with `iw_samples` one-hot samples per test image, Jang et al.'s m, on every
#   data set whose cost allows it; `iw_samples_by_cost` names those that do not, with their m.
RULES = dict(patience=30, iw_samples=1000,
             # 10,000 test images x 1000 samples through the 784-pixel decoder cost a large part of a run
             iw_samples_by_cost={'fashion-mnist': 100})


def rules_config(data:str) -> dict:
    "The settings RULES fixes for `data`."
    return dict(patience=RULES['patience'], iw_samples=RULES['iw_samples_by_cost'].get(data, RULES['iw_samples']))


# The settings of each data set; everything else is VAEConfig's default (the chapter states both).
SETTINGS = {
    'digits': dict(seeds=(0, 1, 2), estimators=ESTIMATORS,
                   config=dict(data='digits', latent='8x10', hidden='256,128', lr=3e-3, epochs=500, **rules_config('digits'))),
    'fashion-mnist': dict(seeds=(0, 1, 2), estimators=ESTIMATORS,
                          config=dict(data='fashion-mnist', latent='20x10', binarize='fixed', lr=1e-3, epochs=60,
                                      **rules_config('fashion-mnist'))),
}


def cpu_model() -> str:
    "The processor's model name (Linux), else what `platform` knows."
    try: return next(l.split(':', 1)[1].strip() for l in Path('/proc/cpuinfo').read_text().splitlines() if l.startswith('model name'))
    except (OSError, StopIteration): return platform.processor() or platform.machine()


def results_path(data): return ROOT / 'nbs' / 'results' / f"vae_{data.replace('-', '_')}.json"
def runs_folder(data): return ROOT / 'runs' / 'results' / data
def records_folder(data): return ROOT / 'nbs' / 'results' / 'records' / data


def next_budget(epochs:int, best_epoch:int, budget:int, patience:int|None) -> int:
    "The epoch budget to train to: `budget`, or best_epoch + patience once the run has used it with its best epoch within `patience` of it."
    return best_epoch + patience if patience and epochs >= budget and epochs - best_epoch < patience else budget


def best_epochs(curve:list[float]) -> list[int]:
    "The best epoch (1-based, the first lowest validation -ELBO) after each epoch of `curve`, as the trainer selects it."
    best, out = 0, []
    for i, v in enumerate(curve):
        if v < (curve[best - 1] if best else math.inf): best = i + 1
        out.append(best)
    return out


def stop_epoch(curve:list[float], patience:int|None, budget:int) -> int|None:
    "The epoch at which a run with `patience` (and RULES' continuation; without patience: at `budget`) stops, if `curve` reaches it."
    for e, best in enumerate(best_epochs(curve), 1):
        if (e - best >= patience) if patience else e >= budget: return e
    return None


ADJUSTABLE = ('epochs', 'patience', 'iw_samples')  # a run can be continued or evaluated again with other values of these
ROW_METRICS = ('test_neg_elbo_hard', 'test_nll_iw', 'test_rec', 'test_kl', 'valid_neg_elbo_hard', 'train_neg_elbo_hard',
               'best_epoch', 'epochs', 'steps', 'stopped', 'seconds', 'config')
CURVES = ('valid_curve', 'train_curve', 'kl_curve')  # per epoch: validation -ELBO (hard), training loss, training KL term


def _changes(diff:dict) -> str: return ', '.join(f"{k} {a!r} -> {b!r}" for k, (a, b) in diff.items())


@dataclass
class Plan:
    "What a run folder needs (`action`, one of ACTIONS) and why; a finished run's metrics and history; the budget to train to."
    action: str
    why: str = ''
    budget: int = 0
    metrics: dict|None = None
    history: list|None = None
    row: dict|None = None  # 'recorded': the committed record of the run

ACTIONS = {'recorded': 'recorded earlier', 'finished': 'finished earlier', 'evaluate': 'evaluated again', 'resume': 'resumed', 'train': 'trained', 'redo': 'trained again'}


def plan_run(out:Path, want:VAEConfig, record:Path|None=None) -> Plan:
    "Read the run folder `out` (checkpoint, then metrics.json), else the run's `record`, and decide what it needs to be the run `want` describes."
    ck_path = out / CHECKPOINT
    if not ck_path.exists():
        if record is None or not record.exists(): return Plan('train', budget=want.epochs)
        row, problem = read_record(record, want)
        return Plan('recorded', row=row) if row else Plan('train', problem, budget=want.epochs)
    try: ck = load_checkpoint(ck_path, keys=('config', 'epoch', 'best_epoch', 'best_valid', 'history'))
    except CheckpointError as e: return Plan('redo', str(e), budget=want.epochs)
    saved, epoch, history = ck['config'], ck['epoch'], ck['history']
    if diff := {k: (saved.get(k), v) for k, v in asdict(want).items() if k not in ADJUSTABLE and saved.get(k) != v}:
        return Plan('redo', f"{ck_path} was trained with other settings: {_changes(diff)}", budget=want.epochs)
    curve = [r['valid_neg_elbo_hard'] for r in history]
    if [r['epoch'] for r in history] != list(range(1, epoch + 1)) or (epoch and best_epochs(curve)[-1] != ck['best_epoch']):
        return Plan('redo', f"{ck_path}: its history does not match its epoch {epoch} and best epoch {ck['best_epoch']}", budget=want.epochs)
    adjusted = _changes({k: (saved[k], getattr(want, k)) for k in ('patience', 'iw_samples') if saved[k] != getattr(want, k)})
    stop = stop_epoch(curve, want.patience, want.epochs)
    if stop is not None and stop < epoch:
        return Plan('redo', f"{adjusted or 'its budget'}: it would have stopped at epoch {stop}, before its checkpoint (epoch {epoch})",
                    budget=want.epochs)
    budget = next_budget(epoch, ck['best_epoch'], max(want.epochs, saved['epochs']) if want.patience else want.epochs, want.patience)
    if stop is None: return Plan('resume', adjusted or f"interrupted at epoch {epoch}", budget=budget)
    # trained to its end: reuse metrics.json if it is the evaluation of this checkpoint with these settings
    m, problem = _read_metrics(out / METRICS_JSON, want, ck)
    if problem: return Plan('evaluate', problem, budget=max(budget, epoch + 1) if want.patience else budget)  # +1: early stopping ends it, as it did
    return Plan('finished', metrics=m, history=history)


def _read_metrics(path:Path, want:VAEConfig, ck:dict) -> tuple[dict|None, str]:
    "metrics.json, and what is wrong with it ('' if it is the evaluation of the checkpoint `ck` with the settings `want`)."
    try: m = json.loads(path.read_text())
    except FileNotFoundError: return None, f"{path.name} is missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e: return None, f"{path} is damaged ({type(e).__name__}: {e})"
    if not isinstance(m, dict) or not set(ROW_METRICS) <= set(m) or not isinstance(m['config'], dict):
        return None, f"{path} lacks some of {', '.join(ROW_METRICS)}"
    if diff := {k: (m['config'].get(k), v) for k, v in asdict(want).items() if k != 'epochs' and m['config'].get(k) != v}:
        return None, f"{path} was evaluated with other settings: {_changes(diff)}"
    expect = dict(epochs=ck['epoch'], best_epoch=ck['best_epoch'], valid_neg_elbo_hard=ck['best_valid'],
                  stopped='early' if want.patience else 'epochs')
    if diff := {k: (m[k], v) for k, v in expect.items() if m[k] != v}:
        return None, f"{path} does not match its checkpoint: {_changes(diff)}"
    return m, ''


def run_row(data:str, config:VAEConfig, m:dict, history:list, provenance:dict) -> dict:
    "The row of the results file for the run `config`: its metrics `m` (from metrics.json), its curves and `provenance`."
    return dict(data=data, estimator=config.estimator, seed=config.seed, latent=config.latent, binarize=config.binarize,
                steps=m['steps'], best_epoch=m['best_epoch'], epochs=m['epochs'], stopped=m['stopped'],
                test_neg_elbo_hard=m['test_neg_elbo_hard'], test_nll_iw=m['test_nll_iw'], test_rec=m['test_rec'],
                test_kl=m['test_kl'], valid_neg_elbo_hard=m['valid_neg_elbo_hard'],
                train_neg_elbo_hard=m['train_neg_elbo_hard'], seconds=m['seconds'],
                valid_curve=[r['valid_neg_elbo_hard'] for r in history], train_curve=[r['train_loss'] for r in history],
                kl_curve=[r['train_kl'] for r in history], config=m['config'], provenance=provenance)


def read_record(path:Path, want:VAEConfig) -> tuple[dict|None, str]:
    "The record at `path` if it is a finished run of `want` under RULES, else None and what is wrong with it."
    try: row = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e: return None, f"{path} is damaged ({type(e).__name__}: {e})"
    keys = ('estimator', 'seed', 'provenance', *CURVES, *ROW_METRICS)
    if not isinstance(row, dict) or not set(keys) <= set(row) or not isinstance(row['config'], dict):
        return None, f"{path} lacks some of {', '.join(keys)}"
    if diff := {k: (row['config'].get(k), v) for k, v in asdict(want).items() if k != 'epochs' and row['config'].get(k) != v}:
        return None, f"{path} was made with other settings: {_changes(diff)}"
    curve, epochs = row['valid_curve'], row['epochs']
    if not (all(isinstance(row[k], list) and len(row[k]) == epochs for k in CURVES) and curve
            and best_epochs(curve)[-1] == row['best_epoch'] and stop_epoch(curve, want.patience, want.epochs) == epochs
            and (row['estimator'], row['seed']) == (want.estimator, want.seed)):
        return None, f"{path} is not a run that RULES ends at its epoch {epochs}"
    return row, ''


def write_record(path:Path, row:dict) -> dict:
    """Write `row` to `path` atomically, unless the record there already holds the same run: the record as it now stands.
    A record of the same run that lacks fields this script now records gets them and keeps its provenance."""
    try:
        old = json.loads(path.read_text())
        if all(row[k] == v for k, v in old.items() if k != 'provenance') and set(old) <= set(row):
            row = {**row, 'provenance': old['provenance']}  # the same run: the provenance of the call that made it
            if old == row: return old
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError, KeyError, TypeError): pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
    tmp.write_text(json.dumps(row, indent=1) + '\n'); os.replace(tmp, path)
    return row


def run_one(data:str, config:VAEConfig, out:Path, threads:int) -> tuple[Plan, dict, list, float]:
    "Bring the run folder `out` to the end of the run `config` describes (RULES' continuation included); its plan, metrics, history and wall seconds."
    t0 = time.perf_counter()
    torch.set_num_threads(threads)
    plan = plan_run(out, config)
    if plan.action == 'finished': return plan, plan.metrics, plan.history, time.perf_counter() - t0
    splits = load_dataset(data, binarize=config.binarize, split_seed=config.split_seed)
    budget, resume = plan.budget, plan.action in ('resume', 'evaluate')
    while True:
        run = train_vae(splits, config=replace(config, epochs=budget), out=out, resume=resume, overwrite=not resume, progress=False)
        m = run.metrics
        more = next_budget(m['epochs'], m['best_epoch'], budget, config.patience) if m['stopped'] == 'epochs' else budget
        if more == budget: break
        budget, resume = more, True  # RULES: its best epoch is within patience of its budget
    return plan, m, run.history, time.perf_counter() - t0


def _die_with_parent(parent:int):
    "Pool worker initializer: end this worker when `parent` (the script) dies, even by SIGKILL, so that no orphan trains on holding run folders."
    if sys.platform.startswith('linux'):
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG, sent when the parent exits
    else:
        def watch():
            while os.getppid() == parent: time.sleep(1)
            os._exit(1)
        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent: os._exit(1)  # the parent died before prctl took effect


def lock_output(folder:Path):
    "Hold an exclusive `flock` on folder/.lock for this call (the kernel drops it when the process dies); a second call exits with status 2."
    folder.mkdir(parents=True, exist_ok=True)
    f = open(folder / '.lock', 'a+')
    try: import fcntl
    except ImportError: return f  # no flock (Windows): no lock
    try: fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0); holder = f.read().strip()
        print(f"{PROG}: error: {folder} is in use by another call of this script{f' (pid {holder})' if holder else ''}; "
              f"wait for it to finish, or stop it and call again to continue", file=sys.stderr)
        sys.exit(2)
    f.truncate(0); f.write(f"{os.getpid()}\n"); f.flush()
    return f


def _eta(left:list[str], took:dict[str, list[float]], jobs:int) -> str:
    "The expected end, from the wall times of the runs trained in this call: each run left costs the mean of its estimator (else of all)."
    every = [s for ss in took.values() for s in ss]
    if not left: return ''
    if not every: return ' | ETA after the first run'
    seconds = sum(statistics.mean(took.get(e) or every) for e in left) / min(jobs, len(left))
    return f" | ETA in {_duration(seconds)} ({time.strftime('%H:%M', time.localtime(time.time() + seconds))})"


def _duration(seconds:float) -> str:
    "`seconds` for a person: '40 s', '12 min', '3 h 05 min'."
    if seconds < 60: return f"{seconds:.0f} s"
    h, m = divmod(round(seconds / 60), 60)
    return f"{h} h {m:02d} min" if h else f"{m} min"


def _summary(m:dict) -> str:
    return (f"{m['epochs']} epochs ({m['stopped']}), best {m['best_epoch']}: test -ELBO {m['test_neg_elbo_hard']:.2f}, "
            f"IW {m['test_nll_iw']:.2f}")


def main(argv=None):
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0])
    p.add_argument('--data', choices=sorted(SETTINGS), required=True)
    p.add_argument('--threads', type=int, default=1, help='torch threads of each run')
    p.add_argument('--jobs', type=int, default=1, help='runs trained at once, in separate processes')
    a = p.parse_args(argv)
    if a.threads < 1: p.error(f"--threads must be at least 1, got {a.threads}")
    if a.jobs < 1: p.error(f"--jobs must be at least 1, got {a.jobs}")
    torch.set_num_threads(a.threads)  # this script owns its process
    setting = SETTINGS[a.data]
    folder = runs_folder(a.data)
    lock = lock_output(folder)  # noqa: F841 (held until the process ends)
    configs = [VAEConfig(**{**setting['config'], 'estimator': est, 'seed': seed}) for seed in setting['seeds'] for est in setting['estimators']]
    outs = [folder / f'{c.estimator}-seed{c.seed}' for c in configs]
    records = [records_folder(a.data) / f'{out.name}.json' for out in outs]
    plans = [plan_run(out, c, record) for out, c, record in zip(outs, configs, records)]
    n = len(configs)
    count = lambda *actions: sum(pl.action in actions for pl in plans)
    print(f"{a.data}: {n} runs in {folder}: {count('finished')} finished, {count('recorded')} recorded in {records_folder(a.data)}, "
          f"{count('resume', 'evaluate')} to resume or evaluate, "
          f"{count('train', 'redo')} to train; {a.jobs} at once, {a.threads} thread(s) each", flush=True)
    for c, pl in zip(configs, plans):
        if pl.why: print(f"  {c.estimator} seed {c.seed}: {pl.action}: {pl.why}", flush=True)
    done, failed, took = {}, {}, {}  # index -> row; index -> error; estimator -> wall seconds of runs trained here
    todo = [i for i, pl in enumerate(plans) if pl.action not in ('finished', 'recorded')]
    provenance = lambda: dict(command=' '.join(['python', 'scripts/vae_results.py', *map(shlex.quote, sys.argv[1:] if argv is None else argv)]),
                              gumbel_tut=gumbel_tut.__version__, torch=torch.__version__, python=platform.python_version(),
                              threads=a.threads, jobs=a.jobs, cpu=cpu_model(), os=platform.platform(),
                              date=datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'))

    def report(i, result=None, error=None):
        "One line per run as it ends: what was done, its numbers, the counts, the expected end."
        c = configs[i]
        if error is not None: failed[i] = f"{c.estimator} seed {c.seed}: {error}"; what = f"FAILED: {error}"
        else:
            plan, m, history, seconds = result
            done[i] = plan.row if plan.action == 'recorded' else write_record(records[i], run_row(a.data, c, m, history, provenance()))
            if plan.action in ('train', 'redo'): took.setdefault(c.estimator, []).append(seconds)
            what = ACTIONS[plan.action] + ('' if plan.action in ('finished', 'recorded') else f" in {seconds:.0f} s") + f", {_summary(m)}"
        left = [configs[j].estimator for j in todo if j not in done and j not in failed]
        print(f"[{len(done) + len(failed)}/{n}] {c.estimator} seed {c.seed}: {what} | {len(done) + len(failed)} done, "
              f"{min(a.jobs, len(left))} running, {max(0, len(left) - a.jobs)} queued{_eta(left, took, a.jobs)}", flush=True)

    for i, pl in enumerate(plans):
        if pl.action in ('finished', 'recorded'): report(i, (pl, pl.metrics or pl.row, pl.history, 0.))
    errors = (ValueError, OSError, NonFiniteLossError)  # a run's own failure (its message names it); the other runs go on
    try:
        if a.jobs == 1:
            for i in todo:
                try: report(i, run_one(a.data, configs[i], outs[i], a.threads))
                except errors as e: report(i, error=e)
        else:
            import multiprocessing
            ctx = multiprocessing.get_context('fork') if sys.platform.startswith('linux') else None  # workers are children of this process
            with ProcessPoolExecutor(a.jobs, mp_context=ctx, initializer=_die_with_parent, initargs=(os.getpid(),)) as pool:
                futures = {pool.submit(run_one, a.data, configs[i], outs[i], a.threads): i for i in todo}
                for f in as_completed(futures):
                    try: report(futures[f], f.result())
                    except errors as e: report(futures[f], error=e)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; call it again to continue where it stopped", file=sys.stderr, flush=True)
        os._exit(130)  # at once: the workers die with this process
    except Exception as e:
        if type(e).__name__ != 'BrokenProcessPool': raise
        print(f"{PROG}: error: a worker process died ({e}); call it again to continue where it stopped", file=sys.stderr)
        return 1
    path = results_path(a.data)
    if failed:
        print(f"{PROG}: error: {len(failed)} of {n} runs failed, so {path} was not written: " + '; '.join(failed.values()), file=sys.stderr)
        return 1
    rows = [done[i] for i in range(n)]  # each with the provenance of the call that trained or evaluated it
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
    tmp.write_text(json.dumps(rows, indent=1) + '\n'); os.replace(tmp, path)
    continued = sum(r['config']['epochs'] > setting['config']['epochs'] for r in rows)
    print(f"wrote {len(rows)} runs to {path} ({continued} continued past their budget of {setting['config']['epochs']} epochs)")
    return 0


if __name__ == '__main__': sys.exit(main())
