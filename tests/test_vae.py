"Tests of chapter 4 (gumbel_tut.vae) and its library notes (gumbel_tut.train, gumbel_tut.cli): resume, checkpoints, NaN handling, the CLI, the evaluation bounds, bad arguments."
import errno, itertools, json, math, os, re, shlex, shutil, subprocess, sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from dataclasses import asdict, fields

import gumbel_tut.vae as vae
import gumbel_tut.train as train
import gumbel_tut.cli as cli
from gumbel_tut.data import load_dataset
from gumbel_tut.vae import CategoricalVAE, NonFiniteLossError, bernoulli_nll, categorical_kl, evaluate_hard, parse_latent
from gumbel_tut.train import load_checkpoint, save_checkpoint, train_vae
from gumbel_tut.cli import vae_cli

SMALL = dict(latent='4x5', hidden='64,32', iw_samples=20, valid_samples=2, progress=False)
TIMING = ('seconds', 'eval_seconds', 'seconds_per_epoch', 'total_seconds')


@pytest.fixture(scope='module')
def digits(): return load_dataset('digits')


def _strip(d): return {k: v for k, v in d.items() if k not in TIMING and k != 'config'}


def _same(a, b):
    "Equal nested checkpoint content: tensors bit for bit, containers item by item."
    if isinstance(a, torch.Tensor): return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict): return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)): return type(a) == type(b) and len(a) == len(b) and all(map(_same, a, b))
    return a == b

# reinforce-ma: the moving-average baseline must resume too; relax: tuned temperature, scale, network and Adam state
@pytest.mark.parametrize('estimator', ['gs', 'reinforce-ma', 'relax'])
def test_resume_is_bit_identical(tmp_path, digits, estimator):
    full = train_vae(digits, estimator=estimator, epochs=4, out=tmp_path / 'full', **SMALL)
    train_vae(digits, estimator=estimator, epochs=2, out=tmp_path / 'part', **SMALL)
    part = train_vae(digits, estimator=estimator, epochs=4, out=tmp_path / 'part', resume=True, **SMALL)
    a, b = load_checkpoint(tmp_path / 'full' / 'checkpoint.pt'), load_checkpoint(tmp_path / 'part' / 'checkpoint.pt')
    for key in ('model', 'best_state'):
        assert a[key].keys() == b[key].keys()
        for k in a[key]: assert torch.equal(a[key][k], b[key][k]), (key, k)
    for k in full.model.state_dict(): assert torch.equal(full.model.state_dict()[k], part.model.state_dict()[k])
    sa, sb = a['optimizer']['state'], b['optimizer']['state']
    for i in sa:
        for k in sa[i]: assert torch.equal(sa[i][k], sb[i][k])
    assert torch.equal(a['noise_rng'], b['noise_rng']) and a['step'] == b['step'] == 48
    assert _same(a['estimator_state'], b['estimator_state'])
    assert [_strip(r) for r in full.history] == [_strip(r) for r in part.history]
    assert _strip(full.metrics) == _strip(part.metrics)
    ja, jb = (json.loads((tmp_path / d / 'metrics.json').read_text()) for d in ('full', 'part'))
    assert _strip(ja) == _strip(jb) and ja['epochs'] == 4
    rows = (tmp_path / 'part' / 'metrics.csv').read_text().splitlines()
    assert len(rows) == 5 and rows[0].startswith('epoch,')


def test_checkpoint_weights_only_and_atomic(tmp_path, digits, monkeypatch):
    train_vae(digits, epochs=1, out=tmp_path, **SMALL)
    path = tmp_path / 'checkpoint.pt'
    ck = torch.load(path, weights_only=True)  # plain tensors and containers: no pickled code
    assert {'model', 'optimizer', 'noise_rng', 'torch_rng', 'best_state', 'bad_epochs', 'step', 'epoch', 'config'} <= ck.keys()
    assert not list(tmp_path.glob('*.tmp'))
    before = path.read_bytes()

    def crash(obj, f, *a, **k):  # a writer that dies half way through
        f.write(b'partial'); raise OSError('disk full')
    monkeypatch.setattr(torch, 'save', crash)
    with pytest.raises(OSError): save_checkpoint({'x': torch.ones(3)}, path)
    assert path.read_bytes() == before  # the old checkpoint is untouched
    monkeypatch.undo()
    save_checkpoint({'x': torch.ones(3)}, path)
    assert torch.equal(load_checkpoint(path)['x'], torch.ones(3))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, digits, monkeypatch):
    calls = itertools.count()
    real = train.vae_loss
    def poisoned(*a, **k):  # the 25th step (epoch 3: 12 steps per epoch) returns a NaN loss
        out = real(*a, **k)
        if next(calls) == 24: out['loss'] = out['loss'] * float('nan')
        return out
    monkeypatch.setattr(train, 'vae_loss', poisoned)
    with pytest.raises(NonFiniteLossError, match=r'epoch 3.*last good checkpoint \(epoch 2\)'):
        train_vae(digits, epochs=5, out=tmp_path, **SMALL)
    ck = load_checkpoint(tmp_path / 'checkpoint.pt')
    assert ck['epoch'] == 2 and ck['step'] == 24
    assert all(torch.isfinite(v).all() for v in ck['model'].values())
    assert len((tmp_path / 'metrics.csv').read_text().splitlines()) == 3
    monkeypatch.undo()  # the kept checkpoint resumes normally
    run = train_vae(digits, epochs=3, out=tmp_path, resume=True, **SMALL)
    assert run.metrics['epochs'] == 3 and math.isfinite(run.metrics['test_nll_iw'])


def _script():
    exe = Path(sys.executable).with_name('gumbel-tut-vae')
    return str(exe) if exe.exists() else shutil.which('gumbel-tut-vae')


def test_cli_end_to_end(tmp_path):
    out = tmp_path / 'run'
    r = subprocess.run([_script(), '--data', 'digits', '--estimator', 'st-gs', '--latent', '4x5', '--hidden', '64,32',
                        '--epochs', '2', '--iw-samples', '20', '--seed', '3', '--out', str(out), '--quiet', '--threads', '1'],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    m = json.loads((out / 'metrics.json').read_text())
    for k in ('test_neg_elbo_hard', 'test_nll_iw', 'epochs', 'seconds'): assert k in m
    assert m['epochs'] == 2 and m['config']['estimator'] == 'st-gs' and m['config']['seed'] == 3
    assert 0 < m['test_nll_iw'] < 64 * math.log(2) + 1  # below a uniform model plus slack... well below, in fact
    assert len((out / 'metrics.csv').read_text().splitlines()) == 3
    assert 'test -log p(x)' in r.stdout
    # the same directory again without --resume is refused (nothing overwritten), with a clear message
    r2 = subprocess.run([_script(), '--epochs', '1', '--out', str(out), '--quiet'], capture_output=True, text=True, timeout=120)
    assert r2.returncode != 0 and '--resume' in r2.stderr


def test_cli_in_process(tmp_path, capsys):
    run = vae_cli(['--data', 'digits', '--estimator', 'gumbel-rao', '--latent', '4x5', '--hidden', '64,32', '--epochs', '1',
                   '--iw-samples', '10', '--out', str(tmp_path), '--quiet', '--threads', '1'])
    assert run.metrics['epochs'] == 1 and (tmp_path / 'metrics.json').exists()
    assert 'test -ELBO (hard)' in capsys.readouterr().out


def _cli_error(capsys, args, tmp_path):
    "Run the command line in this process on arguments that must fail: (exit status, stderr)."
    with pytest.raises(SystemExit) as e: vae_cli(['--epochs', '1', '--quiet', '--out', str(tmp_path / 'x'), *args])
    return e.value.code, capsys.readouterr().err


def _one_error_line(err, option):
    "The command line's error style: one line on stderr, `gumbel-tut-vae: error: --option ...`."
    assert err.count('\n') == 1 and err.startswith(f'gumbel-tut-vae: error: {option}') and 'Traceback' not in err, err
    return err


@pytest.mark.parametrize('args,option,msg', [
    (['--latent', '8x0'], '--latent', 'K >= 2'), (['--latent', '0x10'], '--latent', 'N >= 1'), (['--latent', 'eight'], '--latent', 'NxK'),
    (['--estimator', 'nope'], '--estimator', 'unknown estimator'), (['--epochs', '0'], '--epochs', 'epochs'),
    (['--hidden', '512,-1'], '--hidden', 'hidden'), (['--kl', 'relaxed', '--estimator', 'st'], '--kl', 'relaxed'),
    (['--lr', '-1'], '--lr', 'lr'), (['--data', '/no/such/folder'], '--data', 'no/such'),
    (['--binarize', 'maybe'], '--binarize', 'binarize'), (['--kl', 'approx'], '--kl', 'kl'),
    (['--seed', str(2**64)], '--seed', 'seed'), (['--data', 'mnist:'], '--data', 'after the colon'),
    (['--max-seconds', '1e-9'], '--max-seconds', 'before the first epoch'),
    # the names as typed, never the Python fields (batch_size)
    (['--batch-size', '0'], '--batch-size', 'got 0'), (['--tau-min', '0'], '--tau-min', 'got 0'),
    (['--tau0', 'inf'], '--tau0', 'got inf'), (['--anneal-rate', '-1'], '--anneal-rate', 'got -1'),
    (['--anneal-every', '0'], '--anneal-every', 'got 0'), (['--valid-samples', '0'], '--valid-samples', 'got 0'),
    (['--iw-samples', '0'], '--iw-samples', 'got 0'), (['--max-steps', '0'], '--max-steps', 'got 0'),
    (['--split-seed', '-1'], '--split-seed', 'got -1'), (['--prior-tau', '0'], '--prior-tau', 'got 0'),
    (['--patience', '0'], '--patience', 'got 0'),
    # sizes no machine holds, and text that is not a number: one line, never MemoryError, OverflowError or a traceback
    (['--hidden', '1000000000000'], '--hidden', '1000000000000'), (['--latent', '1x100000000000'], '--latent', '100000000000'),
    (['--hidden', '512,100000000000'], '--hidden', '100000000000'), (['--threads', '10000000000'], '--threads', '10000000000'),
    (['--threads', '0'], '--threads', 'got 0'), (['--hidden', '²'], '--hidden', '²'), (['--latent', '²x10'], '--latent', '²'),
    (['--out', ''], '--out', "''"), (['--out', '  '], '--out', "'  '"),
])
def test_cli_bad_args(tmp_path, capsys, args, option, msg):
    code, err = _cli_error(capsys, args, tmp_path)
    as_typed = f'got {option} {msg[4:]}' if msg.startswith('got ') else msg  # the value as typed: `--batch-size 0`
    assert code == 2 and (msg in _one_error_line(err, option) or as_typed in err), err
    assert not re.search(r'\b(%s)\b' % '|'.join(f.name for f in fields(VAEConfig) if '_' in f.name), err), err
    assert not (tmp_path / 'x' / 'checkpoint.pt').exists()


@pytest.mark.parametrize('args,option', [(['--latent', '8x0'], '--latent'), (['--batch-size', '0'], '--batch-size'),
                                         (['--hidden', '1000000000000'], '--hidden'), (['--epochs', 'many'], '--epochs')])
def test_cli_bad_arg_subprocess(tmp_path, args, option):
    "As a console script: exit status 2 (argparse's convention) and one line on stderr, whoever finds the bad value."
    r = subprocess.run([_script(), *args, '--out', str(tmp_path / 'x')], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stdout == '', (r.returncode, r.stderr)
    _one_error_line(r.stderr, f'argument {option}' if 'many' in args else option)


def test_resume_errors(tmp_path, digits):
    with pytest.raises(FileNotFoundError, match='no checkpoint'): train_vae(digits, epochs=1, out=tmp_path, resume=True, **SMALL)
    with pytest.raises(ValueError, match='needs out'): train_vae(digits, epochs=1, resume=True, **SMALL)
    train_vae(digits, epochs=1, out=tmp_path, **SMALL)
    with pytest.raises(FileExistsError, match='resume'): train_vae(digits, epochs=1, out=tmp_path, **SMALL)
    with pytest.raises(ValueError, match='other settings.*estimator'):
        train_vae(digits, estimator='st', epochs=2, out=tmp_path, resume=True, **SMALL)


def test_parse_latent():
    assert parse_latent('8x10') == (8, 10) and parse_latent(' 30X10 ') == (30, 10) and parse_latent((2, 3)) == (2, 3)
    for bad in ('8x0', '8x1', '0x10', '8x', 'x10', '8*10', '', (8,), (8, 1.5), (True, 3)):
        with pytest.raises(ValueError, match='latent'): parse_latent(bad)


def _enumerate(model, x):
    "Exact -log p(x), exact -ELBO, and the moments the Monte Carlo estimates need, by summing over every z."
    n, k = model.n_latent, model.n_categories
    idx = torch.tensor(list(itertools.product(range(k), repeat=n)))           # [k^n, n]
    z = F.one_hot(idx, k).float()                                             # [k^n, n, k]
    with torch.no_grad():
        log_q = model.encode(x)                                               # [b, n, k]
        log_p = model.prior_log_probs()
        log_px = -bernoulli_nll(model.decode(z)[:, None], x)                  # [k^n, b]
        log_qz = log_q[:, torch.arange(n), idx].sum(-1).T                     # [k^n, b]
        log_pz = log_p[torch.arange(n), idx].sum(-1)[:, None]
    q = log_qz.exp()
    nll = -torch.logsumexp(log_px + log_pz, 0)                                # [b]
    kl = categorical_kl(log_q, log_p)
    neg_elbo = -(q * log_px).sum(0) + kl
    var_rec = (q * (log_px + (neg_elbo - kl)) ** 2).sum(0)                    # Var_q[log p(x|z)]
    w = (log_px + log_pz - log_qz + nll).exp()                                # w / p(x): mean 1 under q
    var_w = (q * (w - 1) ** 2).sum(0)                                         # Var_q[w / p(x)]
    return nll, neg_elbo, var_rec, var_w


def test_evaluate_hard_against_exact_enumeration(digits):
    "A 3x4 latent has 64 codes: the exact -log p(x) and -ELBO bracket the estimates, within Monte Carlo error."
    torch.manual_seed(0)
    model = CategoricalVAE(64, '3x4', (32,), learn_prior=True)
    with torch.no_grad(): model.prior_logits.normal_()
    x = digits.test.x[:100]
    m = 1000
    nll, neg_elbo, var_rec, var_w = _enumerate(model, x)
    est = evaluate_hard(model, x, m, generator=torch.Generator().manual_seed(1), max_rows=5000)
    b = len(x)
    # the hard -ELBO estimate: mean of m i.i.d. terms per image; z-test against the exact value
    se_elbo = (var_rec.sum() / m).sqrt() / b
    assert abs(est['neg_elbo_hard'] - neg_elbo.mean().item()) < 4 * se_elbo.item()
    # IW: E[-log mean w] >= -log p(x); delta method: bias ~ Var(w)/(2m p^2), sd ~ sqrt(Var(w)/m)/p per image
    bias = (var_w / (2 * m)).mean().item()
    se_iw = (var_w / m).sum().sqrt().item() / b
    assert abs(est['nll_iw'] - (nll.mean().item() + bias)) < 4 * se_iw + bias
    # the ordering the papers rely on: exact nll <= IW bound <= -ELBO (gaps far larger than the errors here)
    assert nll.mean().item() < neg_elbo.mean().item()
    assert est['nll_iw'] < est['neg_elbo_hard']


def test_iw_bound_below_hard_elbo_after_training(digits):
    run = train_vae(digits, epochs=3, **{**SMALL, 'iw_samples': 200})
    m = run.metrics
    assert m['test_nll_iw'] <= m['test_neg_elbo_hard']
    assert m['test_neg_elbo_hard'] < 64 * math.log(2)  # better than a uniform model (44.4 nats)


def test_relaxed_kl_and_learned_prior(digits):
    run = train_vae(digits, estimator='gs', kl='relaxed', prior_tau=0.5, learn_prior=True, epochs=2, **SMALL)
    assert all(math.isfinite(r['train_loss']) for r in run.history)
    assert run.model.prior_logits.requires_grad and not torch.equal(run.model.prior_logits, torch.zeros(4, 5))
    with pytest.raises(ValueError, match='relaxed'): train_vae(digits, estimator='reinforce', kl='relaxed', epochs=1, **SMALL)


def test_time_budget_and_early_stopping(digits):
    run = train_vae(digits, epochs=10_000, max_seconds=5.0, patience=None, **SMALL)  # room for a slow setup on a busy machine
    assert run.metrics['stopped'] == 'time' and run.metrics['seconds'] <= 5.0 + 1.0
    run = train_vae(digits, epochs=10_000, patience=1, lr=1e-1, **SMALL)  # a huge step size stops improving at once
    assert run.metrics['stopped'] == 'early' and run.metrics['epochs'] < 10_000
    assert run.metrics['best_epoch'] == run.metrics['epochs'] - 1


def test_load_vae_rebuilds_the_best_model(tmp_path, digits):
    run = train_vae(digits, epochs=2, out=tmp_path, **SMALL)
    model = train.load_vae(tmp_path)
    for k, v in run.model.state_dict().items(): assert torch.equal(model.state_dict()[k], v)
    last = train.load_vae(tmp_path, best=False)
    assert last.n_latent == 4 and last.n_categories == 5 and last.hidden == (64, 32)


# ---- reliability: concurrent writers, damaged checkpoints, divergence, filesystem errors, the caller's RNG ----

def _tensor_data_offset(path):
    "Offset of the middle byte of the largest tensor record inside a checkpoint (a torch zip file)."
    import zipfile
    with zipfile.ZipFile(path) as z: info = max(z.infolist(), key=lambda i: i.file_size)
    raw = path.read_bytes()
    off = info.header_offset
    start = off + 30 + int.from_bytes(raw[off + 26:off + 28], 'little') + int.from_bytes(raw[off + 28:off + 30], 'little')
    return start + info.file_size // 2


def test_concurrent_writers_use_unique_temp_files(tmp_path):
    "Writers on one path never collide on a shared temporary file, and a reader never sees a half-written file."
    import threading
    path, errors, loads = tmp_path / 'checkpoint.pt', [], [0]
    save_checkpoint({'w': torch.zeros(1000)}, path)
    def write(i):
        try:
            for _ in range(25): save_checkpoint({'w': torch.full((1000,), float(i))}, path)
        except Exception as e: errors.append(e)
    def read():
        try:
            for _ in range(50): assert load_checkpoint(path)['w'].unique().numel() == 1; loads[0] += 1
        except Exception as e: errors.append(e)
    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)] + [threading.Thread(target=read)]
    for t in threads: t.start()
    for t in threads: t.join()
    assert not errors, errors[:3]
    assert loads[0] == 50 and not list(tmp_path.glob('*.tmp'))


def test_second_run_on_a_locked_folder_is_refused(tmp_path, digits):
    import fcntl
    tmp_path.mkdir(exist_ok=True)
    with open(tmp_path / train.LOCK, 'a') as f:  # another run holds the folder
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(train.OutputFolderError, match=f"{tmp_path}.*in use by another training run"):
            train_vae(digits, epochs=1, out=tmp_path, overwrite=True, **SMALL)
    assert not (tmp_path / 'checkpoint.pt').exists()
    train_vae(digits, epochs=1, out=tmp_path, **SMALL)  # once released (or its process died), the folder is usable
    assert (tmp_path / 'checkpoint.pt').exists()


@pytest.fixture(scope='module')
def one_epoch_run(tmp_path_factory, digits):
    out = tmp_path_factory.mktemp('one_epoch')
    train_vae(digits, epochs=1, out=out, **SMALL)
    return out


def _damage(path, how):
    raw = path.read_bytes()
    if how == 'truncated': path.write_bytes(raw[:len(raw) // 2])
    elif how == 'empty': path.write_bytes(b'')
    elif how == 'not a checkpoint': path.write_text('hello')
    elif how == 'bit flip':
        i = _tensor_data_offset(path)
        path.write_bytes(raw[:i] + bytes([raw[i] ^ 0x40]) + raw[i + 1:])
    elif how == 'missing keys':
        ck = load_checkpoint(path); del ck['config'], ck['optimizer']; save_checkpoint(ck, path)
    elif how == 'pickled code': torch.save({'x': Path('.')}, path)  # a class weights_only refuses
    elif how == 'no checksum': torch.save({'x': torch.ones(2)}, path)


@pytest.mark.parametrize('how,msg', [('truncated', 'truncated'), ('empty', 'empty'), ('not a checkpoint', 'not a checkpoint'),
                                     ('bit flip', 'checksum mismatch'), ('missing keys', "missing key.*'config'"),
                                     ('pickled code', 'refused'), ('no checksum', 'sha256')])
def test_damaged_checkpoint_is_a_clear_error(tmp_path, digits, one_epoch_run, how, msg):
    out = tmp_path / 'run'; shutil.copytree(one_epoch_run, out)
    _damage(out / 'checkpoint.pt', how)
    with pytest.raises(train.CheckpointError, match=msg) as e:
        train_vae(digits, epochs=2, out=out, resume=True, **SMALL)
    assert str(out / 'checkpoint.pt') in str(e.value) and 'weights_only=False' not in str(e.value)
    with pytest.raises(train.CheckpointError, match=msg): train.load_vae(out)


def test_checksum_catches_a_changed_adam_moment(tmp_path, one_epoch_run):
    "The silent corruption that once passed: one value of the optimizer state changed, the file otherwise valid."
    path = tmp_path / 'checkpoint.pt'; shutil.copy(one_epoch_run / 'checkpoint.pt', path)
    ck = torch.load(path, weights_only=True)
    ck['optimizer']['state'][0]['exp_avg_sq'].view(-1)[0] = -102596.
    torch.save(ck, path)  # keeps the stored (now wrong) sha256
    with pytest.raises(train.CheckpointError, match='checksum mismatch'): load_checkpoint(path)


def test_divergence_in_the_encoder_is_a_non_finite_loss_error(tmp_path, digits, monkeypatch):
    "Whichever tensor goes non-finite first (here the encoder output) stops training with epoch, step and advice."
    calls = itertools.count()
    real = CategoricalVAE.encode
    def poisoned(self, x):  # the 20th training step (epoch 2) sees NaN posterior logits
        out = real(self, x)
        return out * float('nan') if self.training and next(calls) == 19 else out
    monkeypatch.setattr(CategoricalVAE, 'encode', poisoned)
    with pytest.raises(NonFiniteLossError, match=r'encoder output.*epoch 2, step 19.*last good checkpoint \(epoch 1\).*lower lr'):
        train_vae(digits, epochs=3, out=tmp_path, **SMALL)
    assert load_checkpoint(tmp_path / 'checkpoint.pt')['epoch'] == 1


def test_huge_learning_rate_is_a_non_finite_loss_error(digits):
    with pytest.raises(NonFiniteLossError, match=r'non-finite .* at epoch 1, step \d+'):
        train_vae(digits, epochs=2, lr=1e30, **SMALL)


def test_unwritable_out_fails_before_training(tmp_path, digits, monkeypatch):
    import tempfile
    def refuse(*a, **k): raise PermissionError(13, 'Permission denied')
    monkeypatch.setattr(train, '_temp_beside', refuse)
    calls = []
    monkeypatch.setattr(train, 'vae_loss', lambda *a, **k: calls.append(1))
    with pytest.raises(train.OutputFolderError, match=f'{tmp_path}.*not writable.*Permission denied'):
        train_vae(digits, epochs=1, out=tmp_path, **SMALL)
    assert not calls  # refused before any training


def test_full_disk_keeps_the_last_good_checkpoint(tmp_path, digits, monkeypatch):
    import errno
    real, calls = os.fsync, itertools.count()
    def fsync(fd):  # writes per epoch: checkpoint, metrics.csv; the third write (epoch 2's checkpoint) meets a full disk
        if next(calls) == 2: raise OSError(errno.ENOSPC, 'No space left on device')
        return real(fd)
    monkeypatch.setattr(os, 'fsync', fsync)
    with pytest.raises(OSError, match=r'checkpoint.pt: No space left on device.*previous checkpoint.*intact'):
        train_vae(digits, epochs=3, out=tmp_path, **SMALL)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / 'checkpoint.pt')['epoch'] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ['.lock', 'checkpoint.pt', 'metrics.csv']  # no temporary file left


def test_training_leaves_the_callers_rng_alone(tmp_path, digits):
    threads = torch.get_num_threads()
    train_vae(digits, epochs=1, out=tmp_path, **SMALL)
    assert torch.get_num_threads() == threads  # the library never sets the thread count (the command line does)
    for resume in (False, True):
        torch.manual_seed(1234); before = torch.get_rng_state()
        train_vae(digits, epochs=2, out=tmp_path / str(resume) if not resume else tmp_path, resume=resume, **SMALL)
        assert torch.equal(torch.get_rng_state(), before), f'resume={resume}'


def test_iw_evaluation_memory_is_bounded_for_any_m(digits):
    torch.manual_seed(0)
    model = CategoricalVAE(64, '3x4', (32,))
    rows, real = [], model.decode
    model.decode = lambda z: rows.append(z[..., 0, 0].numel()) or real(z)
    x = digits.test.x[:3]
    chunked = evaluate_hard(model, x, 5000, generator=torch.Generator().manual_seed(1), max_rows=1000)
    assert max(rows) <= 1000 and sum(rows) == 3 * 5000
    rows.clear()
    whole = evaluate_hard(model, x, 5000, generator=torch.Generator().manual_seed(1), max_rows=5000)
    assert max(rows) == 5000
    for k in whole: assert math.isclose(chunked[k], whole[k], rel_tol=1e-5), k  # same samples, split differently
    with pytest.raises(ValueError, match='max_rows'): evaluate_hard(model, x, 10, max_rows=0)


@pytest.mark.parametrize('kwargs,msg', [(dict(seed=2**64), 'seed'), (dict(seed=-1), 'seed'),
                                        (dict(data='mnist:'), "mnist:.*folder"), (dict(max_seconds=1e-9), 'max_seconds')])
def test_small_unclear_errors(tmp_path, digits, kwargs, msg):
    kwargs = {'data': digits, **kwargs}
    with pytest.raises(ValueError, match=msg): train_vae(epochs=1, out=tmp_path, **{**SMALL, **kwargs})
    assert not (tmp_path / 'metrics.json').exists()


# ---- the configuration, the learner and its callbacks ----

from gumbel_tut.train import Callback, CancelFitException, Learner, StepBudgetCB, VAEConfig, default_callbacks
from gumbel_tut.cli import vae_parser, RUN_OPTIONS


def test_cli_is_generated_from_the_config():
    "Every VAEConfig field is an option with the config's default and its documentation; nothing else but the run options."
    p = vae_parser()
    dests = {a.dest for a in p._actions} - {'help', 'version'}
    assert dests == {f.name for f in fields(VAEConfig)} | set(RUN_OPTIONS)
    args = vars(p.parse_args([]))
    assert {k: v for k, v in args.items() if k not in RUN_OPTIONS} == asdict(VAEConfig())
    text = p.format_help()
    for f in fields(VAEConfig): assert '--' + f.name.replace('_', '-') in text
    assert 'early stopping: epochs without a better validation' in ' '.join(text.split())
    a = p.parse_args(['--max-steps', '40', '--patience', 'none', '--learn-prior', '--prior-tau', '0.5'])
    assert (a.max_steps, a.patience, a.learn_prior, a.prior_tau) == (40, None, True, 0.5)


@pytest.mark.parametrize('field,value', [('latent', '8x1'), ('hidden', '0'), ('batch_size', 0), ('lr', 0.), ('lr', float('nan')),
                                         ('tau0', -1.), ('anneal_rate', -1e-3), ('anneal_every', 0), ('kl', 'approx'),
                                         ('patience', 0), ('max_steps', 0), ('max_seconds', -5.), ('valid_samples', True),
                                         ('binarize', 'maybe'), ('estimator', 'sgd'), ('seed', -1), ('learn_prior', 'yes')])
def test_config_rejects_bad_values_by_name(field, value):
    with pytest.raises(ValueError, match=field.split('_')[0] if field != 'estimator' else 'estimator'):
        VAEConfig(**{field: value})


def test_train_vae_rejects_unknown_options(digits):
    with pytest.raises(TypeError, match='unknown option.*epoch_count'): train_vae(digits, epoch_count=3)


def test_resume_allows_new_budgets_only(tmp_path, digits):
    train_vae(digits, epochs=1, out=tmp_path, **SMALL)
    run = train_vae(digits, epochs=2, patience=5, max_steps=1000, out=tmp_path, resume=True, **{**SMALL, 'iw_samples': 10})
    assert run.metrics['epochs'] == 2
    with pytest.raises(ValueError, match=r"other settings.*'lr': \(0.001, 0.002\)"):
        train_vae(digits, epochs=3, lr=2e-3, out=tmp_path, resume=True, **SMALL)


def test_step_budget_stops_inside_an_epoch_and_resumes_exactly(tmp_path, digits):
    whole = train_vae(digits, epochs=3, **SMALL)
    part = train_vae(digits, epochs=3, max_steps=30, out=tmp_path, **SMALL)  # 2 epochs of 12 steps, then 6 of the third
    assert (part.metrics['stopped'], part.metrics['epochs'], part.metrics['steps']) == ('steps', 2, 30)
    assert load_checkpoint(tmp_path / 'checkpoint.pt')['step'] == 30
    rest = train_vae(digits, epochs=3, out=tmp_path, resume=True, **SMALL)
    assert [_strip(r) for r in rest.history] == [_strip(r) for r in whole.history]
    assert _strip(rest.metrics) == _strip(whole.metrics)
    with pytest.raises(ValueError, match='max_steps=5 ended training before the first epoch'):
        train_vae(digits, epochs=3, max_steps=5, **SMALL)


def test_a_step_budget_at_an_epoch_end_validates_that_epoch(digits):
    run = train_vae(digits, epochs=5, max_steps=24, **SMALL)
    assert (run.metrics['stopped'], run.metrics['epochs'], run.metrics['steps']) == ('steps', 2, 24)


def test_library_calls_leave_threads_and_rng_alone(digits):
    threads = torch.get_num_threads()
    torch.manual_seed(7); before = torch.get_rng_state()
    train_vae(digits, epochs=1, **SMALL)
    assert torch.get_num_threads() == threads and torch.equal(torch.get_rng_state(), before)


def test_callbacks_see_every_event_in_order(digits):
    events = []
    class Record(Callback):
        order = 99
        def __getattr__(self, name):
            if name in ('before_fit', 'before_epoch', 'after_step', 'after_epoch', 'after_fit', 'after_evaluate'):
                return lambda learn: events.append(name)
            raise AttributeError(name)
    class StopAfterOne(Callback):
        def after_epoch(self, learn): raise CancelFitException('mine')
    run = train_vae(digits, epochs=3, cbs=[Record(), StopAfterOne()], **SMALL)
    steps = len(train.batches(digits.train.x, 100))
    assert events == ['before_fit', 'before_epoch', *['after_step'] * steps, 'after_fit', 'after_evaluate']
    assert run.metrics['stopped'] == 'mine' and run.metrics['epochs'] == 1  # a user callback stops training too


def test_default_callbacks_follow_the_config(tmp_path):
    names = lambda cbs: [type(cb).__name__ for cb in cbs]
    assert names(default_callbacks(VAEConfig(), progress=False)) == ['EarlyStoppingCB']
    assert names(default_callbacks(VAEConfig(patience=None, max_steps=10, max_seconds=5.), tmp_path, progress=True)) == \
        ['StepBudgetCB', 'TimeBudgetCB', 'CheckpointCB', 'MetricsFilesCB', 'ProgressCB']


def test_cli_sets_threads_of_its_process_only(tmp_path):
    r = subprocess.run([_script(), '--latent', '4x5', '--hidden', '64,32', '--epochs', '2', '--iw-samples', '10', '--threads', str(min(2, cli._cpu_count())),
                        '--max-steps', '12', '--out', str(tmp_path / 'r'), '--quiet'], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / 'r' / 'metrics.json').read_text())
    assert m['stopped'] == 'steps' and 'threads' not in m['config']
    r = subprocess.run([_script(), '--epochs', 'many'], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr == "gumbel-tut-vae: error: argument --epochs: invalid int value: 'many'\n"


# ---- the command line and the run folder in real use: sizes, permissions, interrupts, damaged fields, a full disk ----

@pytest.mark.parametrize('hidden,latent,name', [((10**12,), '8x10', 'hidden'), ((512, 10**11), '8x10', 'hidden'),
                                                 ((64,), (1, 10**11), 'latent'), ((64,), (10**6, 10**6), 'latent')])
def test_a_model_no_machine_holds_is_a_value_error(hidden, latent, name):
    "Before any allocation: a ValueError naming the setting, never torch's allocation error or a MemoryError."
    with pytest.raises(ValueError, match=f'{name}.*parameters.*memory'): CategoricalVAE(64, latent, hidden)


@pytest.mark.parametrize('umask', [0o022, 0o077, 0o002])
def test_outputs_respect_the_umask(tmp_path, digits, umask):
    "Every file of a run is created with mode 0o666 & ~umask, as `open` would (a temporary file is 0o600 by default)."
    old = os.umask(umask)
    try: train_vae(digits, epochs=1, out=tmp_path / 'run', **SMALL)
    finally: os.umask(old)
    for name in ('checkpoint.pt', 'metrics.csv', 'metrics.json', '.lock'):
        assert (tmp_path / 'run' / name).stat().st_mode & 0o777 == 0o666 & ~umask, (name, oct(umask))


def test_full_disk_while_writing_metrics_names_the_file(tmp_path, digits, monkeypatch, capsys):
    real, calls = os.fsync, itertools.count()
    def fsync(fd):  # the second write of the run (epoch 1's metrics.csv, after its checkpoint) meets a full disk
        if next(calls) == 1: raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)
    monkeypatch.setattr(os, 'fsync', fsync)
    with pytest.raises(OSError, match=f"{re.escape(str(tmp_path / 'a' / 'metrics.csv'))}: No space left on device") as e:
        train_vae(digits, epochs=2, out=tmp_path / 'a', **SMALL)
    assert e.value.errno == errno.ENOSPC
    calls = itertools.count()  # again through the command line: one line that names the file
    code, err = _cli_error(capsys, ['--latent', '4x5', '--hidden', '64,32', '--iw-samples', '20', '--out', str(tmp_path / 'b')], tmp_path)
    monkeypatch.undo()
    assert code == 1 and err.count('\n') == 1 and f"{tmp_path / 'b' / 'metrics.csv'}: No space left on device" in err, err
    assert sorted(p.name for p in (tmp_path / 'b').iterdir()) == ['.lock', 'checkpoint.pt']  # no temporary file left


FIELD_DAMAGE = [('epoch', 'x'), ('epoch', -1), ('step', 2.5), ('history', None), ('history', [1, 2]), ('torch_rng', 1.5),
                ('noise_rng', 1.5), ('noise_rng', torch.zeros(3)), ('elapsed', 'x'), ('best_valid', None), ('best_epoch', True),
                ('sums', [1]), ('sums', {'loss': 'x', 'rec': 0., 'kl': 0.}), ('best_state', None), ('model', 3),
                ('optimizer', None), ('estimator_state', 3), ('config', [])]
@pytest.mark.parametrize('field,value', FIELD_DAMAGE, ids=[f'{f}={v!r}' for f, v in FIELD_DAMAGE])
def test_resume_from_a_checkpoint_with_wrong_field_types(tmp_path, digits, one_epoch_run, capsys, field, value):
    "A checkpoint re-saved with a valid checksum but a field of the wrong type: a CheckpointError naming the file and the field."
    out = tmp_path / 'run'; shutil.copytree(one_epoch_run, out)
    ck = load_checkpoint(out / 'checkpoint.pt'); ck[field] = value; save_checkpoint(ck, out / 'checkpoint.pt')
    with pytest.raises(train.CheckpointError, match=re.escape(f"{out / 'checkpoint.pt'}: field '{field}'")):
        train_vae(digits, epochs=2, out=out, resume=True, **SMALL)
    code, err = _cli_error(capsys, ['--latent', '4x5', '--hidden', '64,32', '--iw-samples', '20', '--resume', '--out', str(out)], tmp_path)
    assert code == 2 and err.count('\n') == 1 and f"{out / 'checkpoint.pt'}: field '{field}'" in err, err


def test_ctrl_c_prints_the_resume_command_and_loses_nothing(tmp_path, digits, monkeypatch, capsys):
    "KeyboardInterrupt mid-step: one line with the exact command to resume, exit status 130, the checkpoint intact."
    out = tmp_path / 'run with space'
    args = ['--latent', '4x5', '--hidden', '64,32', '--epochs', '3', '--iw-samples', '20', '--valid-samples', '2', '--quiet',
            '--overwrite', '--out', str(out)]
    real, calls = Learner.train_step, itertools.count()
    def interrupted(self, xb):  # Ctrl-C in the middle of step 16 (epoch 2)
        if next(calls) == 15: raise KeyboardInterrupt
        return real(self, xb)
    monkeypatch.setattr(Learner, 'train_step', interrupted)
    try:
        with pytest.raises(SystemExit) as e: vae_cli(args)
    except KeyboardInterrupt: pytest.fail('KeyboardInterrupt escaped the command line')
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert e.value.code == 130 and err.count('\n') == 1 and 'Traceback' not in err, err
    assert load_checkpoint(out / 'checkpoint.pt')['epoch'] == 1 and not list(out.glob('*.tmp'))
    command = shlex.split(err.split('resume with: ', 1)[1])
    assert command[0] == 'gumbel-tut-vae' and '--resume' in command and '--overwrite' not in command, command
    resumed = vae_cli(command[1:])
    whole = train_vae(digits, epochs=3, **SMALL)
    assert _strip(resumed.metrics) == _strip(whole.metrics)


# ---- chapter 4's review fixes: each check fails on the text before them ----

def _markdown(nb_name):
    cells = json.loads((Path(__file__).resolve().parents[1] / 'nbs' / nb_name).read_text())['cells']
    return [''.join(c['source']) for c in cells if c['cell_type'] == 'markdown'], \
           [''.join(c['source']) for c in cells if c['cell_type'] == 'code']


def test_chapter_4_checks_the_continuation_rule_against_every_results_file():
    "No blanket claim that no run is cut off: the rule is stated, and a build cell checks each results file against RULES."
    md, code = _markdown('04_vae.ipynb')
    assert not any('no run is cut off while it is still improving' in m for m in md)
    assert any('`RULES` in the script' in m for m in md)
    check = [c for c in code if "RULES = vae_results.RULES" in c]
    assert check and "load_results('fashion-mnist')" in check[0] and 'cut_off(' in check[0]


def test_chapter_4_says_what_the_relaxed_objective_bounds():
    "The relaxed (Concrete-KL) objective bounds the relaxed model's likelihood, not the discrete model's."
    md, _ = _markdown('04_vae.ipynb')
    objective = next(m for m in md if '**What the relaxed objective is a bound of.**' in m)
    assert '**relaxed model**' in objective and 'not on that of the discrete' in objective


def test_temperature_advice_lives_in_chapter_1():
    "Chapter 4 and the trainer's note link to chapter 1's section instead of giving a temperature rule of their own."
    for nb in ('04_vae.ipynb', '21_train.ipynb'):
        md, _ = _markdown(nb)
        assert any('01_relax.ipynb#choosing-the-temperature' in m for m in md), nb
        assert not any(r'\ln 2 / r' in m for m in md), nb
