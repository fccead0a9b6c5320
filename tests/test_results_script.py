"""What users do to the long job behind chapter 4's estimator comparison (scripts/vae_results.py, `make results`):
kill -9, two calls at once, damaged or inconsistent run folders, changed settings. Each must end in a results file
equal to the one an undisturbed call writes, or in a one-line refusal; never in a file that reports what it did not check.

Each test calls the script in a subprocess, on tiny settings (a 4x4 latent, a 32-unit MLP, m = 4) in a temporary
folder, through HARNESS, which points the script's ROOT and SETTINGS there. VAE_RESULTS_SCRIPT=FILE runs the tests
against another version of the script (the version before these fixes fails them)."""
import fcntl, json, os, re, shutil, signal, subprocess, sys, time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(os.environ.get('VAE_RESULTS_SCRIPT', ROOT / 'scripts' / 'vae_results.py'))
HARNESS = """
import importlib.util, json, sys
from pathlib import Path
script, root, settings, *argv = sys.argv[1:]
spec = importlib.util.spec_from_file_location('vae_results', script)
mod = importlib.util.module_from_spec(spec); sys.modules['vae_results'] = mod; spec.loader.exec_module(mod)
mod.ROOT, mod.SETTINGS = Path(root), {'digits': json.loads(settings)}
sys.exit(mod.main(argv))
"""
TINY_CONFIG = dict(data='digits', latent='4x4', hidden='32', iw_samples=4, valid_samples=1)
# a budget of 10 epochs and patience 2: both runs end at the budget with their best epoch within patience of it
TINY = dict(seeds=[0], estimators=['gs', 'st'], config=dict(TINY_CONFIG, epochs=10, patience=2))
# runs of a few seconds each, to be interrupted
LONG = dict(seeds=[0, 1], estimators=['gs', 'st'], config=dict(TINY_CONFIG, epochs=300, patience=None))
KEYS = ('estimator', 'seed', 'epochs', 'best_epoch', 'stopped', 'test_neg_elbo_hard', 'test_nll_iw', 'valid_curve', 'train_curve')


def start(root, settings, *args):
    return subprocess.Popen([sys.executable, '-c', HARNESS, str(SCRIPT), str(root), json.dumps(settings), '--data', 'digits', *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def call(root, settings, *args, timeout=300):
    p = start(root, settings, *args)
    try: out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired: _stop(p); raise
    return p.returncode, out, err


def rows(root): return json.loads((root / 'nbs' / 'results' / 'vae_digits.json').read_text())
def runs(root): return root / 'runs' / 'results' / 'digits'
def essence(rs): return [({k: r[k] for k in KEYS}, {k: v for k, v in r['config'].items() if k != 'epochs'}) for r in rs]


@pytest.fixture(scope='module')
def finished(tmp_path_factory):
    "A folder where the script has finished TINY: its root, the rows it wrote, and its output."
    root = tmp_path_factory.mktemp('finished')
    rc, out, err = call(root, TINY)
    assert rc == 0, err
    return root, rows(root), out


@pytest.fixture
def copy(finished, tmp_path):
    "A copy of the finished folder to damage."
    shutil.copytree(finished[0], tmp_path / 'root')
    return tmp_path / 'root'


def test_progress_lines(finished, copy):
    "One line per run as it ends (what was done, counts of finished, running and queued runs), an ETA from the runs already trained."
    out = finished[2].splitlines()
    assert re.match(r"digits: 2 runs in .*: 0 finished, 0 recorded in .*, 0 to resume or evaluate, 2 to train", out[0]), out[0]
    assert re.match(r"\[1/2\] gs seed 0: trained in \d+ s, \d+ epochs \(early\), best \d+: .* \| 1 done, 1 running, 0 queued \| ETA in ", out[1]), out[1]
    assert re.match(r"\[2/2\] st seed 0: trained in .* \| 2 done, 0 running, 0 queued$", out[2]), out[2]
    rc, out, err = call(copy, TINY)
    assert rc == 0 and re.match(r"digits: 2 runs in .*: 2 finished", out) and '[2/2] st seed 0: finished earlier' in out, out + err


def test_continued_runs_equal_uninterrupted_ones(finished, tmp_path):
    "RULES: a run whose best epoch is within `patience` of its budget is continued, to what a run without a budget gives."
    root, committed, _ = finished
    assert all(r['epochs'] - r['best_epoch'] >= TINY['config']['patience'] and r['config']['epochs'] > TINY['config']['epochs']
               for r in committed), "both TINY runs had to be continued"
    rc, out, err = call(tmp_path, dict(TINY, config=dict(TINY['config'], epochs=1000)))
    assert rc == 0, err
    assert essence(rows(tmp_path)) == essence(committed)


def _edit_json(path, **changes): path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
def _truncate(path): path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
def _history_of(row): return json.dumps([{'valid_neg_elbo_hard': v, 'train_loss': t} for v, t in zip(row['valid_curve'], row['train_curve'])])

# damage done to the run folder gs-seed0 (`run`), with st-seed0 (`other`) and the undisturbed rows at hand
DAMAGE = {
    'metrics.json truncated': lambda run, other, rs: _truncate(run / 'metrics.json'),
    'metrics.json of another run': lambda run, other, rs: shutil.copy(other / 'metrics.json', run / 'metrics.json'),
    'metrics.json epochs disagree with the curve': lambda run, other, rs: _edit_json(run / 'metrics.json', epochs=rs[0]['epochs'] + 1),
    'metrics.json best epoch off the curve': lambda run, other, rs: _edit_json(run / 'metrics.json', best_epoch=1),
    'history.json truncated': lambda run, other, rs: (run / 'history.json').write_text(_history_of(rs[0])[:100]),
    'history.json empty': lambda run, other, rs: (run / 'history.json').write_text('[]'),
    'history.json of another run': lambda run, other, rs: (run / 'history.json').write_text(_history_of(rs[1])),
    'checkpoint truncated': lambda run, other, rs: _truncate(run / 'checkpoint.pt'),
    'checkpoint of another run': lambda run, other, rs: shutil.copy(other / 'checkpoint.pt', run / 'checkpoint.pt'),
}


@pytest.mark.parametrize('damage', DAMAGE)
def test_damaged_run_folder_is_redone_not_reported(finished, copy, damage):
    "A run folder whose files are damaged or disagree is evaluated or trained again (and named), never reported as it is."
    DAMAGE[damage](runs(copy) / 'gs-seed0', runs(copy) / 'st-seed0', finished[1])
    rc, out, err = call(copy, TINY)
    assert rc == 0 and 'Traceback' not in err, err
    assert essence(rows(copy)) == essence(finished[1]), "the rows of the undisturbed call"
    if not damage.startswith('history.json'):  # the script keeps no history.json: the checkpoint holds the curve
        assert re.search(r"^  gs seed 0: (evaluate|redo): ", out, re.M), out


@pytest.mark.parametrize('change', [dict(iw_samples=7), dict(patience=4), dict(patience=1), dict(lr=2e-3)])
def test_changed_settings_are_applied_to_finished_runs(finished, copy, tmp_path, change):
    "After a change of the settings, finished runs are evaluated again, continued or redone: the file equals a fresh call's."
    changed = dict(TINY, config=dict(TINY['config'], **change))
    rc, out, err = call(copy, changed)
    assert rc == 0, err
    rc, _, err = call(tmp_path / 'fresh', changed)
    assert rc == 0, err
    assert essence(rows(copy)) == essence(rows(tmp_path / 'fresh'))
    assert all(r['config'][k] == v for r in rows(copy) for k, v in change.items())


def records(root): return root / 'nbs' / 'results' / 'records' / 'digits'


def test_records_alone_make_the_file_on_another_machine(finished, tmp_path):
    "The committed records of finished runs, without their run folders (another machine), make the same file without training."
    other = tmp_path / 'other'
    shutil.copytree(records(finished[0]), records(other))
    rc, out, err = call(other, TINY)
    assert rc == 0 and re.match(r"digits: 2 runs in .*: 0 finished, 2 recorded in ", out) and '[2/2] st seed 0: recorded earlier' in out, out + err
    assert rows(other) == rows(finished[0]), "the same rows, each with the provenance of the call that trained it"
    assert not runs(other).exists() or not any(runs(other).glob('*/checkpoint.pt')), "nothing was trained"


def _record_edit(path, change):
    r = json.loads(path.read_text()); change(r); path.write_text(json.dumps(r))


def _record_curve_cut(path):
    "A record whose curves end at their best epoch: a run that RULES would not have ended there."
    r = json.loads(path.read_text()); r['epochs'] = r['best_epoch']
    for k in ('valid_curve', 'train_curve', 'kl_curve'): r[k] = r[k][:r['best_epoch']]
    path.write_text(json.dumps(r))

BAD_RECORD = {
    'truncated': lambda path: path.write_text(path.read_text()[:200]),
    'not an object': lambda path: path.write_text('[]'),
    'other settings': lambda path: _record_edit(path, lambda r: r['config'].update(lr=r['config']['lr'] * 2)),
    'still improving': _record_curve_cut,
    'without its KL curve': lambda path: _record_edit(path, lambda r: r.pop('kl_curve')),
}


@pytest.mark.parametrize('bad', BAD_RECORD)
def test_a_bad_record_is_trained_again_not_reported(finished, tmp_path, bad):
    "A record that is damaged, made with other settings, or not a finished run under RULES is trained again, and named."
    other = tmp_path / 'other'
    shutil.copytree(records(finished[0]), records(other))
    BAD_RECORD[bad](records(other) / 'gs-seed0.json')
    rc, out, err = call(other, TINY)
    assert rc == 0 and 'Traceback' not in err, err
    assert re.search(r"^  gs seed 0: train: .*gs-seed0.json", out, re.M) and 'st seed 0: recorded earlier' in out, out
    assert essence(rows(other)) == essence(finished[1]), "the rows of the undisturbed call"
    assert essence([json.loads((records(other) / 'gs-seed0.json').read_text())]) == essence(finished[1][:1]), "the record is made again"


def test_a_record_lacking_new_fields_is_completed_from_its_run_folder(finished, copy):
    "A record made before the script recorded the KL terms gets them from its run folder, and keeps its provenance."
    path = records(copy) / 'gs-seed0.json'
    r = json.loads(path.read_text())
    old = {k: v for k, v in r.items() if k not in ('test_rec', 'test_kl', 'kl_curve')}
    old['provenance'] = dict(r['provenance'], date='an earlier call')
    path.write_text(json.dumps(old))
    rc, out, err = call(copy, TINY)
    assert rc == 0 and 'gs seed 0: finished earlier' in out, out + err
    assert json.loads(path.read_text()) == dict(r, provenance=old['provenance'])
    assert rows(copy)[0]['provenance']['date'] == 'an earlier call'
    row = rows(copy)[0]
    assert abs(row['test_rec'] + row['test_kl'] - row['test_neg_elbo_hard']) < 1e-6 * row['test_neg_elbo_hard']
    assert len(row['kl_curve']) == row['epochs'] and min(row['kl_curve']) >= 0


def _children(pid):
    "The processes whose parent is `pid` (Linux /proc)."
    kids = []
    for p in Path('/proc').iterdir():
        try: stat = (p / 'stat').read_text()
        except (OSError, ValueError): continue
        if p.name.isdigit() and int(stat[stat.rindex(')') + 2:].split()[1]) == pid: kids.append(int(p.name))
    return kids


def _alive(pid):
    "Running (a zombie is dead: only its exit status is left for a parent to collect)."
    try: stat = Path(f'/proc/{pid}/stat').read_text()
    except OSError: return False
    return stat[stat.rindex(')') + 2] != 'Z'


def _stop(p):
    "Kill the call `p` and the processes it started, by id (a script without the fix leaves its workers running)."
    kids = _children(p.pid) if p.poll() is None else []
    if p.poll() is None: p.kill()
    p.wait()
    for k in kids:
        if _alive(k): os.kill(k, signal.SIGKILL)
    p.communicate()  # only now: its workers held its pipes open


def _wait_for(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline: pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


@pytest.mark.skipif(not Path('/proc/self/stat').exists(), reason='reads the process tree from /proc (Linux)')
def test_kill_9_leaves_no_worker_and_a_rerun_continues(tmp_path):
    "kill -9 of the script ends its pool workers too (no orphan trains on, holding run folders); calling it again finishes the job."
    p = start(tmp_path, LONG, '--jobs', '2')
    workers = []
    try:
        _wait_for(lambda: p.poll() is not None or any(runs(tmp_path).glob('*/checkpoint.pt')), 120, 'the first checkpoint')
        assert p.poll() is None, p.communicate()
        workers = _children(p.pid)
        assert workers, "the pool has worker processes"
        os.kill(p.pid, signal.SIGKILL); p.wait()  # not communicate(): orphans would hold its pipes open
        deadline = time.monotonic() + 10
        while any(map(_alive, workers)) and time.monotonic() < deadline: time.sleep(0.05)
        assert not [w for w in workers if _alive(w)], "workers outlived the script they worked for"
    finally:
        for w in workers:  # the orphans of a script without the fix: end them, by id
            if _alive(w): os.kill(w, signal.SIGKILL)
        if p.poll() is None: p.kill()
        p.communicate()
    rc, out, err = call(tmp_path, LONG, '--jobs', '2')
    assert rc == 0 and 'Traceback' not in err, err
    assert len(rows(tmp_path)) == 4 and re.search(r"to resume or evaluate", out)


def test_second_call_on_the_same_output_is_refused(tmp_path):
    "A second call while one runs on the same data set: refused at once, one line, status 2; the first finishes undisturbed."
    first = start(tmp_path, LONG)
    try:
        _wait_for(lambda: first.poll() is not None or any(runs(tmp_path).glob('*/checkpoint.pt')), 120, 'the first checkpoint')
        rc, out, err = call(tmp_path, LONG, timeout=120)
        assert first.poll() is None, f"the first call ended (status {first.poll()}) before the second returned (status {rc}): {err[-300:]}"
        assert rc == 2 and len(err.strip().splitlines()) == 1 and 'in use by another call' in err and str(first.pid) in err, (rc, err)
        out, err = first.communicate(timeout=300)
        assert first.returncode == 0, err
        assert len(rows(tmp_path)) == 4
    finally: _stop(first)


def test_a_failing_run_is_one_line_and_the_others_finish(finished, copy):
    "A run that cannot train (its folder held by another program) is named on one line; the file is not written without it."
    (copy / 'nbs' / 'results' / 'vae_digits.json').unlink()
    with open(runs(copy) / 'gs-seed0' / '.lock', 'a') as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        rc, out, err = call(copy, dict(TINY, config=dict(TINY['config'], iw_samples=5)))
    assert rc == 1 and 'Traceback' not in err and len(err.strip().splitlines()) == 1, err
    assert 'gs seed 0' in err and 'gs-seed0' in err and 'in use' in err, err
    assert '[2/2] st seed 0: evaluated again' in out and not (copy / 'nbs' / 'results' / 'vae_digits.json').exists()
