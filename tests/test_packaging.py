"""Packaging and the nbdev workflow, as a user and a contributor meet them: the license and `py.typed` ship in the
wheel, the version has one source that `nbdev-bump-version` changes and `nbdev-export` keeps, both command lines
answer `--version`, `help(gumbel_tut)` starts with the description and `help()` of a public name documents every
parameter, a core install stays small, the public API is short, the same with or without the `[vae]` extra, and
shadows no name a user already imports, chapters that need the extra say so when it is missing, `make help` lists
the targets, the changelog and citation file are in order, and the notebooks keep imports in their own cells."""
import ast, importlib, inspect, json, os, pydoc, re, shutil, subprocess, sys, tarfile, tomllib, zipfile
from pathlib import Path

import nbformat, pytest, torch

import gumbel_tut

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PYPROJECT = tomllib.loads((ROOT/'pyproject.toml').read_text())
MAX_CORE_PACKAGES = 20  # a plain `pip install gumbel_tut`, torch's own dependencies and gumbel_tut included
VAE_EXTRA_IMPORTS = ('sklearn', 'matplotlib', 'tqdm')
HELPERS = 'gumbel_tut.helpers'  # markdown_table, chi_square_pvalue
MAX_PUBLIC_NAMES = 40
LAZY_NAMES = ('CategoricalVAE', 'VAEConfig', 'train_vae', 'load_dataset')  # the [vae] extra's entry points
# fastai's names that `from fastai.vision.all import *` gives a notebook (fastai is not installed here)
FASTAI_NAMES = {'Learner', 'Callback', 'CancelFitException', 'CancelEpochException', 'CancelBatchException',
                'CancelTrainException', 'CancelValidException', 'CancelStepException', 'CancelBackwardException',
                'TrainEvalCallback', 'Recorder', 'ProgressCallback', 'EarlyStoppingCallback', 'SaveModelCallback',
                'DataLoaders', 'DataLoader', 'DataBlock', 'Datasets', 'TfmdDL', 'Metric', 'Optimizer', 'Adam', 'SGD',
                'Module', 'L', 'Transform', 'Pipeline', 'Split', 'batches', 'LOCK', 'ParamScheduler', 'SchedExp',
                'SchedLin', 'SchedCos', 'accuracy', 'vision_learner', 'tabular_learner', 'show_images'}

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

def test_py_typed_in_wheel(dists):
    "PEP 561: the wheel carries `gumbel_tut/py.typed`, so type checkers read the package's annotations."
    assert (ROOT/'gumbel_tut'/'py.typed').is_file()
    with zipfile.ZipFile(dists[1]) as z: assert 'gumbel_tut/py.typed' in z.namelist(), z.namelist()
    with tarfile.open(dists[0]) as t: assert any(n.endswith('/gumbel_tut/py.typed') for n in t.getnames())

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

def _comments(obj):
    "obj's docments comments, read by fastcore itself (not through gumbel_tut's code that writes the section)."
    from fastcore.docments import docments
    return {k: p['docment'] for k, p in docments(obj, full=True, args_kwargs=True).items() if k not in ('self', 'return') and p['docment']}

def test_help_documents_every_parameter_of_gumbel_softmax():
    "`help(gumbel_tut.gumbel_softmax)` gives each parameter's comment, once, not just the one-line docstring."
    text = pydoc.render_doc(gumbel_tut.gumbel_softmax, renderer=pydoc.plaintext)
    comments = _comments(gumbel_tut.gumbel_softmax)
    assert {'logits', 'tau', 'hard', 'dim', 'generator', 'backend'} <= set(comments), comments
    for name, comment in comments.items():
        assert re.search(rf'^\s*{name} : ', text, re.M), f'{name}: no entry in help()\n{text}'
        for line in comment.splitlines(): assert line.strip() in text, f'{name}: {line!r} missing from help()'
    assert text.count('Parameters') == 1 and 'Returns' in text, text

@pytest.mark.parametrize('name', [n for n in gumbel_tut.__all__ if callable(getattr(gumbel_tut, n))])
def test_help_documents_every_parameter(name):
    "Every public function and class (its constructor's parameters): each docments comment appears in help()."
    obj = getattr(gumbel_tut, name)
    text = pydoc.render_doc(obj, renderer=pydoc.plaintext)
    for param, comment in _comments(obj).items():
        for line in comment.splitlines(): assert line.strip() in text, f'{name}({param}): {line!r} missing from help()'

def test_website_docstrings_have_no_parameters_section():
    "The website's entries show the docstring as written, then their own parameter table: no section twice."
    from gumbel_tut._api import _plain_docs
    for name in gumbel_tut.__all__:
        obj = getattr(gumbel_tut, name)
        if not callable(obj): continue
        assert 'Parameters\n----------' not in _plain_docs[obj], name
        if _comments(obj): assert 'Parameters\n----------' in inspect.getdoc(obj), name

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
    """With the [vae] extra (and scipy) missing: the samplers work, the public API is the same list, and the VAE's
    names, their modules and `from gumbel_tut import *` (which touches every name) raise the ImportError naming the extra."""
    code = '''
import json, gumbel_tut, torch
from gumbel_tut import gumbel_max, gumbel_softmax, get_estimator
g = torch.Generator().manual_seed(0)
assert gumbel_max(torch.zeros(3, 4), generator=g).shape == (3,)
assert gumbel_softmax(torch.zeros(3, 4), tau=0.5, generator=g).shape == (3, 4)
assert get_estimator('st-gs') is not None
for name in ('train_vae', 'load_dataset', 'CategoricalVAE', 'VAEConfig'):
    try: getattr(gumbel_tut, name)
    except ImportError as e: assert "pip install 'gumbel_tut[vae]'" in str(e), e
    else: raise AssertionError(name + ' did not raise')
for mod in ('gumbel_tut.data', 'gumbel_tut.vae'):
    try: __import__(mod)
    except ImportError as e: assert "pip install 'gumbel_tut[vae]'" in str(e), e
    else: raise AssertionError(mod + ' imported')
try: exec('from gumbel_tut import *', {})
except ImportError as e: assert "pip install 'gumbel_tut[vae]'" in str(e), e
else: raise AssertionError('from gumbel_tut import * worked without the extra')
try: gumbel_tut.no_such_name
except AttributeError: pass
blocked = {'sklearn', 'matplotlib', 'tqdm', 'scipy', 'fastprogress'} & {m.split('.')[0] for m in sys.modules}
assert not blocked, blocked
print(json.dumps(gumbel_tut.__all__))
'''
    r = run_without(VAE_EXTRA_IMPORTS + ('scipy', 'fastprogress'), code)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout) == gumbel_tut.__all__, 'the public API changes with the installed extras'

def test_public_api_is_short_and_curated():
    "At most MAX_PUBLIC_NAMES names, each once, none private, none a tutorial helper or a trainer name."
    names = gumbel_tut.__all__
    assert len(names) <= MAX_PUBLIC_NAMES, f'{len(names)} public names'
    assert len(set(names)) == len(names), [n for n in names if names.count(n) > 1]
    assert not [n for n in names if n.startswith('_')]
    assert not {'markdown_table', 'chi_square_pvalue', 'interleaved_median_ms', 'Learner', 'Callback', 'LOCK'} & set(names)
    assert set(LAZY_NAMES) <= set(names)

def _well_known_names():
    "Names a user's namespace already holds: builtins, fastai's star import, torch's public names (torch.nn.functional is"
    " left out on purpose: `gumbel_softmax` is meant as a drop-in for `F.gumbel_softmax`)."
    import builtins, torch.nn, torch.optim, torch.distributions, torch.utils.data
    names = set(dir(builtins)) | FASTAI_NAMES
    for m in (torch, torch.nn, torch.optim, torch.distributions, torch.utils.data):
        names |= {n for n in getattr(m, '__all__', dir(m)) if not n.startswith('_')}
    return names

def test_star_import_shadows_no_well_known_name():
    "`from gumbel_tut import *` after `from fastai.vision.all import *` (or torch's) replaces none of their names."
    clash = sorted(set(gumbel_tut.__all__) & _well_known_names())
    assert not clash, f'public names that replace a well-known one: {clash}'

@pytest.mark.parametrize('name', gumbel_tut.__all__)
def test_every_public_name_resolves(name):
    "Each name of `__all__` is an object of this package (with the extras installed, as here)."
    obj = getattr(gumbel_tut, name)
    if inspect.isfunction(obj) or inspect.isclass(obj): assert obj.__module__.startswith('gumbel_tut.'), obj.__module__
    assert name in dir(importlib.import_module(_home_module(name)))

def _home_module(name):
    "The module whose `__all__` holds `name` (the public API re-exports it from there)."
    from gumbel_tut._modidx import d
    for module in d['syms']:
        mod = importlib.import_module(module)
        if name in getattr(mod, '__all__', ()) and getattr(mod, name) is getattr(gumbel_tut, name): return module
    raise AssertionError(f'{name}: no module exports it')

def test_vae_names_load_on_first_use():
    "`import gumbel_tut` does not import the VAE chapter; the first touch of one of its names does."
    r = subprocess.run([sys.executable, '-c', 'import sys, gumbel_tut; a = "gumbel_tut.vae" in sys.modules; '
                        'gumbel_tut.train_vae; print(a, "gumbel_tut.vae" in sys.modules)'], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.split() == ['False', 'True'], r.stdout + r.stderr

def test_markdown_table_without_ipython():
    "IPython is no core dependency: the package imports without it, and only `markdown_table` needs it, saying so."
    code = f'''
from {HELPERS} import markdown_table
try: markdown_table([{{'a': 1}}])
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
    """Importing the package with everything installed loads none of the heavy optional packages (no surprise cost):
    nothing beyond what `import torch` loads itself (torch.hub imports tqdm when it is installed)."""
    code = ('import sys, torch; before = {m.split(".")[0] for m in sys.modules}; import gumbel_tut; '
            'print(json.dumps([sorted({m.split(".")[0] for m in sys.modules} - before), sorted(before)]))')
    r = subprocess.run([sys.executable, '-c', 'import json; ' + code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    new, torch_own = json.loads(r.stdout)
    assert not {'sklearn', 'matplotlib', 'tqdm', 'scipy', 'fastprogress', 'IPython'} & set(new), new
    assert not {'sklearn', 'matplotlib', 'scipy'} & set(torch_own), torch_own

def test_chi_square_pvalue_matches_scipy():
    "chi_square_pvalue (torch only) agrees with scipy's Pearson test."
    from scipy import stats
    chi_square_pvalue = importlib.import_module(HELPERS).chi_square_pvalue
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

# ---------------------------------------------------------------- make help, make lab, changelog, citation
def test_make_help_lists_every_documented_target():
    "`make help` prints each target that has a `## target:` comment, with that comment, and runs nothing else."
    makefile = (ROOT/'Makefile').read_text()
    documented = re.findall(r'^## ([a-z][a-z-]*): (.*)$', makefile, re.M)
    targets = set(re.findall(r'^([a-z][a-z-]*):', makefile, re.M))
    assert {'help', 'setup', 'test', 'docs', 'lab', 'export'} <= {t for t, _ in documented}
    r = run('make', '-s', 'help')
    listed = dict(re.findall(r'^  ([a-z][a-z-]*) +(.*)$', r.stdout, re.M))
    assert len(listed) == len(documented), r.stdout
    for target, comment in documented:
        assert target in targets, f'`## {target}:` documents no target'
        assert listed.get(target) == comment.strip(), (target, listed.get(target))

def test_make_lab_runs_as_root():
    "Jupyter refuses to run as root without --allow-root: `make lab` adds it exactly when the user is root."
    r = run('make', '-n', '--no-print-directory', 'lab')
    line = r.stdout.strip().splitlines()[-1]
    assert 'jupyter lab' in line and ('--allow-root' in line) == (os.getuid() == 0), line

def test_changelog_has_a_section_for_this_version():
    "CHANGELOG.md (Keep a Changelog) starts its releases with the version the package carries."
    text = (ROOT/'CHANGELOG.md').read_text()
    assert text.startswith('# Changelog') and 'keepachangelog.com' in text
    releases = re.findall(r'^## \[(\d+\.\d+\.\d+)\]', text, re.M)
    assert releases and releases[0] == gumbel_tut.__version__, releases
    first = text.split(f'## [{releases[0]}]')[1].split('\n## ')[0]
    for heading in re.findall(r'^### (.*)$', first, re.M): assert heading in ('Added', 'Changed', 'Deprecated', 'Removed', 'Fixed', 'Security'), heading

def test_citation_cff():
    "CITATION.cff follows CFF 1.2.0 (its required keys and types) and cites the two papers the relaxation comes from."
    import yaml
    cff = yaml.safe_load((ROOT/'CITATION.cff').read_text())
    assert cff['cff-version'] == '1.2.0' and cff['message'] and cff['title'] == PYPROJECT['project']['name']
    assert cff['type'] == 'software' and cff['license'] == PYPROJECT['project']['license']
    assert cff['repository-code'] == PYPROJECT['project']['urls']['Repository']
    assert cff['authors'] and all(a.get('name') or a.get('family-names') for a in cff['authors'])
    allowed = {'cff-version', 'message', 'title', 'authors', 'abstract', 'commit', 'contact', 'date-released', 'doi',
               'identifiers', 'keywords', 'license', 'license-url', 'preferred-citation', 'references', 'repository',
               'repository-artifact', 'repository-code', 'type', 'url', 'version'}
    assert set(cff) <= allowed, set(cff) - allowed
    refs = {r['title']: r for r in cff['references']}
    for title, year, arxiv in [('Categorical Reparameterization with Gumbel-Softmax', 2017, '1611.01144'),
                               ('The Concrete Distribution: A Continuous Relaxation of Discrete Random Variables', 2017, '1611.00712')]:
        ref = refs[title]
        assert ref['type'] in ('article', 'conference-paper') and ref['year'] == year and ref['authors'], ref
        assert any(i['type'] == 'url' and arxiv in i['value'] for i in ref['identifiers']), ref
