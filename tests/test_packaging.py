"""Packaging and the nbdev workflow, as a user and a contributor meet them: the license ships in the sdist and the
wheel, the version has one source that `nbdev-bump-version` changes and `nbdev-export` keeps, both command lines
answer `--version`, `help(gumbel_tut)` starts with the description, a core install stays small, chapters that need
the `[vae]` extra say so when it is missing, and the notebooks keep imports in their own cells."""
import ast, json, os, shutil, subprocess, sys, tarfile, tomllib, zipfile
from pathlib import Path

import nbformat, pytest, torch

import gumbel_tut

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PYPROJECT = tomllib.loads((ROOT/'pyproject.toml').read_text())
MAX_CORE_PACKAGES = 20  # a plain `pip install gumbel_tut`, torch's own dependencies and gumbel_tut included
VAE_EXTRA_IMPORTS = ('sklearn', 'matplotlib', 'tqdm')

def run(*cmd, cwd=ROOT, **kw):
    "Run `cmd`, failing with its output when it fails."
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, **kw)
    assert r.returncode == 0, f'{cmd} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}'
    return r

@pytest.fixture(scope='module')
def dists(tmp_path_factory):
    "The sdist and wheel of this checkout, built with the installed setuptools (no download)."
    out = tmp_path_factory.mktemp('dist')
    run(sys.executable, '-m', 'build', '--no-isolation', '--sdist', '--wheel', '--outdir', out, ROOT)
    return next(out.glob('*.tar.gz')), next(out.glob('*.whl'))

def test_license_in_sdist_and_wheel(dists):
    sdist, wheel = dists
    license_text = (ROOT/'LICENSE').read_text()
    assert 'Apache License' in license_text and 'Version 2.0' in license_text
    with tarfile.open(sdist) as t:
        names = t.getnames()
        assert any(n.endswith('/LICENSE') for n in names), names
    with zipfile.ZipFile(wheel) as z:
        lic = [n for n in z.namelist() if n.endswith('.dist-info/licenses/LICENSE')]
        assert lic and z.read(lic[0]).decode() == license_text, z.namelist()
        meta = z.read(next(n for n in z.namelist() if n.endswith('.dist-info/METADATA'))).decode()
    assert 'License-Expression: Apache-2.0' in meta
    assert f'Version: {gumbel_tut.__version__}' in meta

def test_wheel_requires_only_the_core(dists):
    "The wheel's unconditional requirements are the declared core; scikit-learn, matplotlib, tqdm only with [vae]."
    with zipfile.ZipFile(dists[1]) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith('.dist-info/METADATA'))).decode()
    reqs = [l.split(':', 1)[1].strip() for l in meta.splitlines() if l.startswith('Requires-Dist:')]
    core = sorted(r.split('>')[0].split('<')[0].split('=')[0] for r in reqs if 'extra ==' not in r)
    assert core == ['fastcore', 'numpy', 'torch'], reqs
    for pkg in ('scikit-learn', 'matplotlib', 'tqdm'): assert any(r.startswith(pkg) and 'extra == "vae"' in r for r in reqs), reqs
    assert not any('fastprogress' in r for r in reqs), reqs

def test_core_install_is_small(tmp_path):
    """What `pip install .` with no extras would install into an empty environment (pip's own resolver, dry run,
    the tested pins of constraints.txt): at most MAX_CORE_PACKAGES packages, torch and its dependencies included."""
    report = tmp_path/'report.json'
    run(BIN/'pip', 'install', '--dry-run', '--ignore-installed', '--quiet', '--report', report,
        '-c', ROOT/'constraints.txt', ROOT)
    names = sorted(i['metadata']['name'].lower() for i in json.loads(report.read_text())['install'])
    print(f'core install: {len(names)} packages: {names}')
    assert len(names) <= MAX_CORE_PACKAGES, names
    assert 'torch' in names and not {'matplotlib', 'scikit-learn', 'scipy', 'fastprogress', 'python-fasthtml'} & set(names), names

def _copy_project(dest):
    "The files nbdev's commands read and write, copied to `dest`."
    for p in ('nbs', 'gumbel_tut', 'pyproject.toml'):
        (shutil.copytree if (ROOT/p).is_dir() else shutil.copy)(ROOT/p, dest/p)
    shutil.rmtree(dest/'gumbel_tut'/'__pycache__', ignore_errors=True)

def _init_version(path):
    "(docstring, __version__) of `path/__init__.py`, read without importing it."
    tree = ast.parse((path/'__init__.py').read_text())
    version = next(n.value.value for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == '__version__')
    return ast.get_docstring(tree), version

def test_version_bump_survives_export(tmp_path):
    "`nbdev-bump-version` changes the one version source (`__init__.py`), and `nbdev-export` afterwards keeps it."
    _copy_project(tmp_path)
    doc0, v0 = _init_version(tmp_path/'gumbel_tut')
    assert v0 == gumbel_tut.__version__
    run(BIN/'nbdev-bump-version', cwd=tmp_path)
    doc1, v1 = _init_version(tmp_path/'gumbel_tut')
    major, minor, patch = v0.split('.')
    assert v1 == f'{major}.{minor}.{int(patch) + 1}', (v0, v1)
    run(BIN/'nbdev-export', cwd=tmp_path)
    doc2, v2 = _init_version(tmp_path/'gumbel_tut')
    assert v2 == v1 and doc2 == doc1 == doc0
    # everything else nbdev-export writes is what this checkout has: the sources are in sync
    for py in (ROOT/'gumbel_tut').glob('*.py'):
        if py.name != '__init__.py': assert (tmp_path/'gumbel_tut'/py.name).read_text() == py.read_text(), py.name
    # setuptools reads the same attribute: the built metadata would carry v1
    assert PYPROJECT['tool']['setuptools']['dynamic']['version'] == {'attr': 'gumbel_tut.__version__'}

def test_help_shows_the_description():
    "The package docstring comes first in `__init__.py`, so `help(gumbel_tut)` shows it."
    import pydoc
    doc, _ = _init_version(ROOT/'gumbel_tut')
    assert doc and doc.startswith(PYPROJECT['project']['description']), doc
    assert gumbel_tut.__doc__ == doc
    text = pydoc.render_doc(gumbel_tut, renderer=pydoc.plaintext)
    assert PYPROJECT['project']['description'] in text

@pytest.mark.parametrize('cli', ['gumbel-tut-vae', 'gumbel-tut-bench'])
def test_cli_version(cli):
    r = run(BIN/cli, '--version')
    assert r.stdout.strip() == f'{cli} {gumbel_tut.__version__}', r.stdout

BLOCKER = '''
import importlib.machinery, sys
BLOCKED = set(sys.argv[1].split(','))
_find = importlib.machinery.PathFinder.find_spec
def find_spec(name, path=None, target=None):  # as if the package were not installed
    return None if name.split('.')[0] in BLOCKED else _find(name, path, target)
importlib.machinery.PathFinder.find_spec = find_spec
'''

def run_without(packages, code):
    "Run `code` in a fresh interpreter in which `packages` (import names) cannot be imported."
    return subprocess.run([sys.executable, '-c', BLOCKER + code, ','.join(packages)], capture_output=True, text=True, cwd=ROOT)

def test_core_works_without_the_extras():
    "With the [vae] extra (and scipy) missing: the samplers work, and the optional chapters name the extra to install."
    code = '''
import gumbel_tut, torch
from gumbel_tut import *
g = torch.Generator().manual_seed(0)
assert gumbel_max(torch.zeros(3, 4), generator=g).shape == (3,)
assert gumbel_softmax(torch.zeros(3, 4), tau=0.5, generator=g).shape == (3, 4)
from gumbel_tut.helpers import chi_square_pvalue
assert get_estimator('st-gs') is not None and 0 <= chi_square_pvalue(torch.tensor([5., 5.]), torch.tensor([.5, .5])) <= 1
assert 'gumbel_softmax' in gumbel_tut.__all__ and 'train_vae' not in gumbel_tut.__all__
for name in ('train_vae', 'load_dataset'):
    try: getattr(gumbel_tut, name)
    except ImportError as e: assert "pip install 'gumbel_tut[vae]'" in str(e), e
    else: raise AssertionError(name + ' did not raise')
for mod in ('gumbel_tut.data', 'gumbel_tut.vae'):
    try: __import__(mod)
    except ImportError as e: assert "pip install 'gumbel_tut[vae]'" in str(e), e
    else: raise AssertionError(mod + ' imported')
try: gumbel_tut.no_such_name
except AttributeError: pass
blocked = {'sklearn', 'matplotlib', 'tqdm', 'scipy', 'fastprogress'} & {m.split('.')[0] for m in sys.modules}
assert not blocked, blocked
print('ok')
'''
    r = run_without(VAE_EXTRA_IMPORTS + ('scipy', 'fastprogress'), code)
    assert r.returncode == 0 and r.stdout.strip() == 'ok', r.stdout + r.stderr

def test_markdown_table_without_ipython():
    "IPython is no core dependency: the package imports without it, and only `markdown_table` needs it, saying so."
    code = '''
from gumbel_tut.helpers import markdown_table
try: markdown_table([{'a': 1}])
except ImportError as e: assert 'pip install ipython' in str(e), e
else: raise AssertionError('markdown_table worked without IPython')
print('ok')
'''
    r = run_without(['IPython'], code)
    assert r.returncode == 0 and r.stdout.strip() == 'ok', r.stdout + r.stderr

@pytest.mark.parametrize('missing', VAE_EXTRA_IMPORTS)
def test_each_missing_extra_package_is_named(missing):
    r = run_without([missing], 'import gumbel_tut.vae')
    assert r.returncode == 1 and f"needs {missing}" in r.stderr and "pip install 'gumbel_tut[vae]'" in r.stderr, r.stderr

def test_import_gumbel_tut_loads_no_extra():
    "Importing the package with everything installed loads none of the heavy optional packages (no surprise cost)."
    r = subprocess.run([sys.executable, '-c', 'import sys, gumbel_tut; print(sorted({m.split(".")[0] for m in sys.modules} & '
                        '{"sklearn", "matplotlib", "scipy", "fastprogress"}))'], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == '[]', r.stdout + r.stderr

def test_chi_square_pvalue_matches_scipy():
    "chi_square_pvalue (torch only) agrees with scipy's Pearson test."
    from scipy import stats
    from gumbel_tut.helpers import chi_square_pvalue
    g = torch.Generator().manual_seed(0)
    for k in (2, 3, 10, 100):
        probs = torch.rand(k, generator=g, dtype=torch.float64); probs /= probs.sum()
        counts = torch.distributions.Multinomial(500, probs=probs).sample().double()
        expected = (counts.sum() * probs).numpy()
        want = stats.chisquare(counts.numpy(), expected).pvalue
        assert abs(chi_square_pvalue(counts, probs) - want) <= 1e-6 * want + 1e-12, k  # vs alpha ~1e-3: ample

# ---------------------------------------------------------------- the notebooks as nbdev reads them
NOTEBOOKS = sorted((ROOT/'nbs').glob('*.ipynb'))

def _directives(source):
    return [l[2:].strip().split(':')[0].split()[0] for l in source.splitlines() if l.startswith('#|') and l[2:].strip()]

@pytest.mark.parametrize('nb_path', NOTEBOOKS, ids=lambda p: p.name)
def test_imports_in_their_own_cells(nb_path):
    """nbdev's doc processing executes every non-exported cell that holds an import: such a cell must hold nothing
    else, or `nbdev-docs` runs half a cell whose other lines need earlier cells."""
    bad = []
    for i, cell in enumerate(nbformat.read(nb_path, as_version=4).cells):
        if cell.cell_type != 'code' or {'export', 'exports', 'exporti', 'exec_doc'} & set(_directives(cell.source)): continue
        if 'nbdev_export()' in cell.source or any(l.replace(' ', '') == '#|eval:false' for l in cell.source.splitlines()): continue
        try: tree = ast.parse('\n'.join(l for l in cell.source.splitlines() if not l.lstrip().startswith(('%', '!'))))
        except SyntaxError: continue
        nodes = list(ast.walk(tree))
        if any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in nodes) and \
           not all(isinstance(n, (ast.Import, ast.ImportFrom)) for n in tree.body):
            bad.append(f'cell {i}: {cell.source[:80]!r}')
    assert not bad, f'{nb_path.name}: cells that mix imports with other code:\n  ' + '\n  '.join(bad)

def _git_status():
    return subprocess.run(['git', 'status', '--porcelain', '--untracked-files=all'], cwd=ROOT, capture_output=True, text=True).stdout

def test_quarto_files_tracked_or_ignored():
    "nbdev's Quarto configuration is tracked (nbdev-readme needs nbs/nbdev.yml); what its commands generate is ignored."
    for f in ('nbs/_quarto.yml', 'nbs/nbdev.yml'): assert (ROOT/f).is_file(), f
    ignored = (ROOT/'.gitignore').read_text().split()
    for f in ('nbs/sidebar.yml', 'nbs/llms.txt', '_proc/', '_docs/'): assert f in ignored, f

@pytest.mark.skipif(shutil.which('quarto') is not None, reason='Quarto is installed: nbdev-readme would rewrite README.md')
def test_nbdev_readme_fails_only_for_lack_of_quarto():
    "Without Quarto, nbdev-readme gets as far as calling `quarto`, and leaves the checkout as it was."
    before = _git_status()
    r = subprocess.run([BIN/'nbdev-readme'], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode != 0 and 'quarto: not found' in r.stdout + r.stderr, r.stdout + r.stderr
    assert _git_status() == before
