"""Fault injection through the command line `gumbel-tut-vae`: damaged checkpoints (truncated, bit flip, missing keys,
empty), two runs on one folder, a reader during writes, an unwritable output folder, SIGKILL and resume.

Every failure must be one line on stderr naming the file or folder and what is wrong, a non-zero exit status, and no
traceback; a killed run must resume to exactly the result of an uninterrupted one."""
import json, os, shutil, signal, subprocess, sys, time
from pathlib import Path

import pytest
import torch

from gumbel_tut.train import CHECKPOINT, METRICS_JSON, load_checkpoint, save_checkpoint, train_vae

ARGS = ['--latent', '4x5', '--hidden', '64,32', '--iw-samples', '20', '--quiet', '--threads', '1']
KW = dict(latent='4x5', hidden='64,32', iw_samples=20, progress=False)
TIMING = ('seconds', 'eval_seconds', 'seconds_per_epoch', 'total_seconds')


def _script():
    exe = Path(sys.executable).with_name('gumbel-tut-vae')
    return str(exe) if exe.exists() else shutil.which('gumbel-tut-vae')


def _cli(*args, **popen):
    return subprocess.Popen([_script(), *map(str, args), *ARGS], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def _done(p, timeout=180):
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('finished') / 'run'
    train_vae('digits', epochs=1, out=out, **KW)
    return out


def _flip_tensor_byte(path):
    "Flip one bit in the middle of the largest tensor record of a checkpoint (a torch zip file)."
    import zipfile
    with zipfile.ZipFile(path) as z: info = max(z.infolist(), key=lambda i: i.file_size)
    raw = bytearray(path.read_bytes())
    off = info.header_offset
    start = off + 30 + int.from_bytes(raw[off + 26:off + 28], 'little') + int.from_bytes(raw[off + 28:off + 30], 'little')
    raw[start + info.file_size // 2] ^= 0x08
    path.write_bytes(bytes(raw))


def _missing_keys(path):
    ck = load_checkpoint(path); del ck['optimizer']; save_checkpoint(ck, path)


DAMAGE = {'truncated': (lambda p: p.write_bytes(p.read_bytes()[:p.stat().st_size // 3]), 'truncated'),
          'empty': (lambda p: p.write_bytes(b''), 'empty'),
          'bit flip': (_flip_tensor_byte, 'checksum mismatch'),
          'missing keys': (_missing_keys, "missing key.*'optimizer'")}


def test_resume_from_damaged_checkpoints(tmp_path, finished_run):
    "All four damages at once (four processes): each exits non-zero with one clear line naming the file."
    import re
    procs = {}
    for name, (damage, _) in DAMAGE.items():
        out = tmp_path / name.replace(' ', '-'); shutil.copytree(finished_run, out)
        damage(out / CHECKPOINT)
        procs[name] = out, _cli('--resume', '--epochs', 2, '--out', out)
    for name, (out, p) in procs.items():
        rc, _, err = _done(p)
        assert rc != 0 and 'Traceback' not in err, (name, err[-2000:])
        assert str(out / CHECKPOINT) in err and re.search(DAMAGE[name][1], err), (name, err)
        assert not (out / METRICS_JSON).exists() or (out / METRICS_JSON).read_bytes() == (finished_run / METRICS_JSON).read_bytes()


def _unwritable_folder(tmp_path):
    "A folder this process cannot create files in: a mode-0o555 folder, or, for root (who ignores modes), a sysfs folder."
    d = tmp_path / 'read-only'; d.mkdir(); d.chmod(0o555)
    try: (d / 'probe').touch()
    except PermissionError: return d
    (d / 'probe').unlink()
    return Path('/sys')


def test_read_only_out_fails_before_training(tmp_path):
    out = _unwritable_folder(tmp_path)
    t0 = time.perf_counter()
    rc, _, err = _done(_cli('--epochs', 50, '--max-seconds', 'none', '--out', out))
    assert rc != 0 and 'Traceback' not in err and f'{out} is not writable' in err, err[-2000:]
    assert not list(out.glob('*.tmp')) and not (out / CHECKPOINT).exists()


def _wait_for_checkpoint(proc, ck, timeout=120):
    deadline = time.time() + timeout
    while not ck.exists():
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.time() < deadline, 'no checkpoint in time'
        time.sleep(0.02)


def test_concurrent_runs_kill_and_resume(tmp_path):
    """Two long runs start. The first is killed with SIGKILL at its first checkpoint, and resuming it gives exactly an
    uninterrupted run's result. The second keeps training while another run on its folder is refused and a reader
    loads its checkpoint as it is rewritten."""
    killed, busy = tmp_path / 'killed', tmp_path / 'busy'
    slow = ['--patience', 'none', '--max-seconds', 'none', '--seed', 5]
    first, running = _cli('--epochs', 10_000, '--out', killed, *slow), _cli('--epochs', 10_000, '--out', busy, *slow)
    try:
        _wait_for_checkpoint(first, killed / CHECKPOINT)
        first.send_signal(signal.SIGKILL); first.wait(timeout=60)
        epoch = load_checkpoint(killed / CHECKPOINT)['epoch']  # whatever the moment of the kill, the checkpoint is whole
        resume = _cli('--epochs', epoch + 2, '--resume', '--out', killed, *slow)  # the kernel released the killed run's lock

        _wait_for_checkpoint(running, busy / CHECKPOINT)
        second = _cli('--epochs', 2, '--overwrite', '--out', busy)
        loads = 0
        while second.poll() is None:  # read while the running run rewrites its checkpoint every epoch
            assert load_checkpoint(busy / CHECKPOINT)['epoch'] >= 1; loads += 1
        rc, _, err = _done(second)
        assert rc != 0 and 'in use by another training run' in err and str(busy) in err and 'Traceback' not in err, err[-2000:]
        assert loads > 0 and running.poll() is None  # refused without disturbing the run that holds the folder
    finally:
        running.kill(); first.kill()
    rc, _, err = _done(resume)
    assert rc == 0, err[-2000:]
    resumed = json.loads((killed / METRICS_JSON).read_text())
    whole = train_vae('digits', epochs=epoch + 2, patience=None, seed=5, **KW).metrics
    strip = lambda m: {k: v for k, v in m.items() if k not in TIMING and k != 'config'}
    assert resumed['epochs'] == epoch + 2 and strip(resumed) == strip(json.loads(json.dumps(whole)))


def test_ctrl_c_stops_at_a_step_and_the_printed_command_resumes_it(tmp_path):
    """SIGINT (Ctrl-C) during training: the run stops at the next step, saves it, prints one line with the exact command
    that resumes (the default out folder spelled out, --overwrite dropped) and exits 130; that command finishes the run
    with exactly an uninterrupted run's result, so nothing trained before the Ctrl-C is lost."""
    import shlex
    epochs = 12
    p = _cli('--epochs', epochs, '--patience', 'none', '--seed', 7, '--overwrite', cwd=tmp_path)  # out: runs/... under tmp_path
    ck = tmp_path / 'runs' / 'digits-gs-4x5-seed7' / CHECKPOINT
    _wait_for_checkpoint(p, ck)
    p.send_signal(signal.SIGINT)
    rc, out, err = _done(p, timeout=60)
    assert rc == 130 and out == '' and err.count('\n') == 1 and 'Traceback' not in err, (rc, err[-2000:])
    saved = load_checkpoint(ck)
    assert saved['step'] < epochs * 12, 'the run ended before the interrupt; nothing was tested'
    command = shlex.split(err.split('resume with: ', 1)[1])
    assert command[0] == 'gumbel-tut-vae' and '--resume' in command and '--overwrite' not in command, command
    assert command[command.index('--out') + 1] == 'runs/digits-gs-4x5-seed7', command
    r = subprocess.run([_script(), *command[1:]], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    resumed = json.loads((ck.parent / METRICS_JSON).read_text())
    whole = train_vae('digits', epochs=epochs, patience=None, seed=7, **KW).metrics
    strip = lambda m: {k: v for k, v in m.items() if k not in TIMING and k != 'config'}
    assert strip(resumed) == strip(json.loads(json.dumps(whole)))
