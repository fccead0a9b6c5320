"""Run a command that regenerates files and fail, naming the files, if it changed any.

Usage: python .ci/check_unchanged.py "what is checked" -- command args...
Compares `git status --porcelain` (plus file hashes of dirty files) before and after."""
import hashlib, subprocess, sys
from pathlib import Path

def snapshot():
    "Map of every modified/untracked path to a hash of its contents."
    out = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=all'], capture_output=True, text=True, check=True).stdout
    paths = [line[3:].split(' -> ')[-1] for line in out.splitlines()]
    return {p: hashlib.sha256(Path(p).read_bytes()).hexdigest() if Path(p).is_file() else None for p in paths}

def main():
    what, sep, *cmd = sys.argv[1:]
    assert sep == '--', __doc__
    before = snapshot()
    subprocess.run(cmd, check=True)
    after = snapshot()
    changed = sorted(p for p in before.keys() | after.keys() if before.get(p, 'clean') != after.get(p, 'clean'))
    if changed:
        print(f'FAILED {what}: these files changed:\n  ' + '\n  '.join(changed), file=sys.stderr)
        print('Run `make export` and commit the result.', file=sys.stderr)
        sys.exit(1)
    print(f'ok: {what}')

if __name__ == '__main__': main()
