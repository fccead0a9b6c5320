"""Build the gumbel_tut website: `python docs/build.py` (what `make docs` runs).

1. **Stage** each `nbs/*.ipynb` into docs/_build/src under nbdev's page name (`01_relax.ipynb` -> `relax`, so that
   the links of nbdev's `_modidx.py` and of the module docstrings reach the page), with only what MyST cannot infer:
   nbdev's cell directives become myst-nb tags (`#| hide` and exported cells: `remove-cell`; `#| echo: false`:
   `remove-input`, ...; `#| eval: false` and test flags: `skip-execution`); `show_doc(f)` cells become Python-domain
   entries (`{py:function}`, ...) with nbdev's parameter table, and exported names without one get an entry after their
   cell, as nbdev does; a class's entry holds its public methods that have no entry of their own; names of the public
   API (`gumbel_tut.__all__`) are also entered under `gumbel_tut.` (the names users write); each page declares its module
   (`{py:module}`); a hidden first cell holds a hash of the package sources. Markdown is untouched (tests/test_site.py
   lints it). A file is rewritten only when its content changes, so Sphinx re-reads only changed pages.
2. **Render** with `sphinx-build -W` (conf.py): myst-nb executes each notebook through jupyter-cache, keyed on its code
   cells (and so on the package hash): a prose-only edit re-renders without executing. Each entry gets an anchor (and
   nbdev's anchor, conf.py) and an `objects.inv` line; `api.md` lists the public API and every module's names;
   viewcode links the source. The navigation has two parts: the tutorial (notebooks 00-09) and the library notes
   (10-19, with the API page).
3. **Markdown twins**: each page also as `<page>.html.md` (prose, code and outputs), the page nbdev's module docstrings
   link to (`Docs: .../relax.html.md`).

`--time-prose-edit` (in `make test`, after `make docs`) rebuilds with one Markdown cell added to a copy of nbs/, prints
the time as a ratio to the last build, restores the site, and fails above a quarter of a cold build (or 20 s after a
build that was not cold).
"""
import argparse, hashlib, importlib, inspect, json, os, re, shutil, subprocess, sys, tempfile, time
from pathlib import Path
from fastcore.nbio import read_nb, write_nb, mk_cell
from nbdev.config import nbpath2html

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
BUILD = DOCS/'_build'
HIDE = {'hide', 'export', 'exporti', 'default_exp'}  # nbdev shows none of these on its pages
OPTION_TAGS = {('echo', 'false'): 'remove-input', ('output', 'false'): 'remove-output', ('include', 'false'): 'remove-cell',
               ('code-fold', 'true'): 'hide-input', ('eval', 'false'): 'skip-execution'}

def chapters(nbs): return sorted(p for p in Path(nbs).glob('*.ipynb') if not p.name.startswith(('_', '.')))

def page_name(nb):
    "The page of notebook `nb`: nbdev's name for it (`01_relax.ipynb` -> `relax`), which `_modidx.py` links to."
    return nbpath2html(Path(nb).name).stem

def nbdev_anchor(qualname):
    "nbdev's anchor of an entry (`GumbelSoftmax.rsample` -> `gumbelsoftmax.rsample`); conf.py adds it to each entry."
    return qualname.lower()

def site_pages(nbs=ROOT/'nbs'):
    "The pages the site serves (known before a build): each notebook's page and its Markdown twin, and the API page."
    names = [page_name(p) for p in chapters(nbs)]
    return {f'{n}.html' for n in names + ['api']} | {f'{n}.html.md' for n in names}

def part(nb):
    "'Tutorial' for the chapters (notebooks 00-09), 'Library notes' for notebooks 10-19, None for the home page."
    number = Path(nb).name[:2]
    return None if not number.isdigit() else 'Tutorial' if int(number) < 10 else 'Library notes'

def navigation(paths):
    "The toctrees of the home page: the tutorial's chapters, then the library notes and the API reference."
    def toc(caption, docs): return '\n'.join(['```{toctree}', f':caption: {caption}', ':hidden:', ':maxdepth: 1', '', *docs, '```'])
    return '\n\n'.join([toc('Tutorial', [page_name(p) for p in paths if part(p) == 'Tutorial']),
                        toc('Library notes', [page_name(p) for p in paths if part(p) == 'Library notes'] + ['api'])])

def sources_hash():
    "What every notebook's outputs depend on besides its own code: the package sources."
    h = hashlib.sha256()
    for p in sorted((ROOT/'gumbel_tut').rglob('*.py')): h.update(p.read_bytes())
    return h.hexdigest()[:16]

def short_type(anno):
    "`torch.Tensor | None` -> `Tensor | None`: a type as the reader writes it, without module paths."
    if anno is inspect.Parameter.empty: return ''
    text = anno if isinstance(anno, str) else anno.__qualname__ if isinstance(anno, type) else inspect.formatannotation(anno)
    return re.sub(r'\b(?:[A-Za-z_]\w*\.)+(\w+)', r'\1', text).replace('|', '\\|')

def plain_doc(obj):
    "The docstring as written: without the Parameters section that gumbel_tut adds for help() (an entry has its table)."
    from gumbel_tut._api import _plain_docs
    try: return _plain_docs[obj]
    except (KeyError, TypeError): return inspect.getdoc(obj) or ''

def entry_kind(obj, parent):
    "The Python-domain directive that documents `obj`, an attribute of `parent` (a module or a class)."
    is_prop = inspect.isclass(parent) and isinstance(obj, property)
    return ('class' if inspect.isclass(obj) else 'property' if is_prop else 'method' if inspect.isclass(parent)
            else 'function' if callable(obj) else 'data')

def public_alias(name, obj, parent):
    "`gumbel_tut.<name>` when `name` (or, for a method, its class) is in the public API as this very object, else None."
    import gumbel_tut
    head, _, rest = name.partition('.')
    if head in gumbel_tut.__all__ and getattr(gumbel_tut, head) is (parent if rest else obj): return f'gumbel_tut.{name}'

def entry_body(obj, kind):
    "Signature, docstring and the table of parameters from their docments comments (nbdev's show_doc)."
    from gumbel_tut._api import _parameter_docs
    sig, table = '', []
    if kind in ('class', 'method', 'function'):
        try: params = inspect.signature(obj).parameters.values()
        except (TypeError, ValueError): params = []
        sig = '(' + ', '.join(str(p.replace(annotation=inspect.Parameter.empty)) for p in params if p.name != 'self') + ')'
        try: docs = _parameter_docs(obj)
        except Exception: docs = {}
        rows = [(k, short_type(v['anno']), '' if v['default'] is inspect.Parameter.empty else f'`{v["default"]!r}`',
                 (v.get('docment') or '').replace('|', '\\|')) for k, v in docs.items() if k not in ('self', 'return')]
        if rows: table = ['', '| | Type | Default | Details |', '|---|---|---|---|'] + [
            f'| **{k}** | {t} | {d} | {c} |'.replace('\n', ' ') for k, t, d, c in rows]
        if (ret := docs.get('return')) and (ret.get('docment') or ret['anno'] is not inspect.Parameter.empty):
            table += ['', f'**Returns** {short_type(ret["anno"])}: {ret.get("docment") or ""}']
    return sig, [plain_doc(obj) if kind != 'data' else '', *table]

def api_entry(module, name, seen, documented=()):
    """A Python-domain entry for `module.name` (what nbdev's show_doc shows): signature, docstring, and a table of the
    parameters from their docments comments; a public name also under `gumbel_tut.` (`:canonical:`); a class with its
    public methods that have no entry of their own (`documented`). Objects from another module, or shown twice, get
    `:no-index:`."""
    obj, parent = importlib.import_module(module), None
    for attr in name.split('.'): parent, obj = obj, getattr(obj, attr)
    kind = entry_kind(obj, parent)
    home = getattr(parent if kind in ('method', 'property') else obj, '__module__', module) if kind != 'data' else module
    where = home if home.startswith('gumbel_tut') else module
    target = f'{where}.{name}'
    indexed = target not in seen and where == module
    seen.add(target)
    alias = public_alias(name, obj, parent) if indexed else None
    opts = [f':module: {where}'] + ([] if indexed else [':no-index:']) + ([f':canonical: {alias}'] if alias else [])
    sig, body = entry_body(obj, kind)
    members = []
    if kind == 'class' and indexed:
        for attr, member in vars(obj).items():
            if attr.startswith('_') or f'{name}.{attr}' in documented or not (inspect.isfunction(member) or isinstance(member, property)): continue
            mkind = entry_kind(member, obj)
            msig, mbody = entry_body(member if mkind != 'property' else member.fget, mkind)
            malias = public_alias(f'{name}.{attr}', member, obj)
            members += ['', f'```{{py:{mkind}}} {attr}{msig if mkind == "method" else ""}',
                        *([f':canonical: {malias}'] if malias else []), '', *mbody, '```']
            seen.add(f'{where}.{name}.{attr}')
    return mk_cell('\n'.join([f'````{{py:{kind}}} {name}{sig}', *opts, '', *body, *members, '````']), 'markdown')

def defined_names(source):
    "Names a cell defines at top level, in order: functions, classes, assigned variables."
    import ast
    out = []
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)): out.append(node.name)
        for t in node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []:
            out += [n.id for n in ast.walk(t) if isinstance(n, ast.Name)]
    return out

def module_entry(module):
    "The page's `{py:module}` entry (an anchor and an `objects.inv` line for the module; the module index lists it)."
    synopsis = (importlib.import_module(module).__doc__ or '').strip().split('\n')[0]
    return mk_cell(f'```{{py:module}} {module}\n:synopsis: {synopsis}\n```', 'markdown')

def stage_notebook(src, flags, digest):
    "The notebook as the site renders it (see the module docstring)."
    nb = read_nb(src)
    module = next((c.directives['default_exp'] for c in nb.cells if 'default_exp' in c.directives), None)
    lib = f"gumbel_tut.{module}" if module else None
    exported = set(__import__(lib, fromlist=['*']).__all__) if lib else set()
    documented = {m for c in nb.cells if c.cell_type == 'code' for m in re.findall(r'^\s*show_doc\(([\w.]+)\)', c.source, re.M)}
    cells, seen = [mk_cell(f'# package sources {digest}', 'code')], set()
    cells[0].metadata['tags'] = ['remove-cell']
    for cell in nb.cells:
        if cell.cell_type != 'code' or 'nbdev_export()' in cell.source:
            if cell.cell_type == 'markdown': cells.append(cell)
            continue
        d, tags = cell.directives, set(cell.metadata.get('tags', []))
        if m := re.fullmatch(r'(?:#\|.*\n)*\s*show_doc\(([\w.]+)\)\s*', cell.source):
            cells.append(api_entry(lib, m.group(1), seen, documented)); continue
        if HIDE & set(d) or set(d) & set(flags): tags.add('remove-cell')
        if set(d) & set(flags): tags.add('skip-execution')
        tags |= {tag for (k, v), tag in OPTION_TAGS.items() if str(d.get(k, '')).lower() == v}
        cell.directives = {}  # the `#|` lines are not shown
        if tags: cell.metadata['tags'] = sorted(tags)
        cells.append(cell)
        if {'export', 'exports'} & set(d):  # nbdev documents every exported name that has no show_doc cell
            cells += [api_entry(lib, n, seen, documented) for n in defined_names(cell.source) if n in exported and n not in documented]
            documented |= set(defined_names(cell.source))
    title = next(i for i, c in enumerate(cells) if c.cell_type == 'markdown' and c.source.startswith('# '))
    if module is not None or src.name == 'index.ipynb':  # a note without a module (18) declares none
        cells.insert(title + 1, module_entry('gumbel_tut' if module is None or module.startswith('_') else lib))
    for i, cell in enumerate(cells): cell.id = cell.get('id') if cell in nb.cells else f'staged{i:03d}'  # stable bytes
    nb.cells = cells
    nb.metadata = {'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}}
    return nb

def api_page(pages):
    "The public API (`gumbel_tut.__all__`), then every module's public names by page, linking to their entries."
    import gumbel_tut
    def summary(obj): return ((plain_doc(obj)).split('\n')[0] if callable(obj) else 'constant').replace('|', r'\|')
    out = ['# API reference', '', '## The package: `gumbel_tut`', '',
           'The public API, importable from the package itself (`from gumbel_tut import gumbel_softmax`) and the same with or',
           'without the `[vae]` extra; the VAE\'s entry points are imported on first use. Each name links to its entry in the',
           'notebook that derives and tests it.', '', '| Name | Summary |', '|---|---|']
    out += [f'| {{py:obj}}`{name} <gumbel_tut.{name}>` | {summary(getattr(gumbel_tut, name))} |' for name in gumbel_tut.__all__]
    for page, module, title, nb in pages:
        mod = importlib.import_module(f'gumbel_tut.{module}')
        label = f'Chapter {int(nb[:2])}' if part(nb) == 'Tutorial' else 'Library note'
        out += ['', f'## {label}: `gumbel_tut.{module}`', '', f'[{title}]({page}.ipynb)', '', '| Name | Summary |', '|---|---|']
        out += [f'| {{py:obj}}`{name} <gumbel_tut.{module}.{name}>` | {summary(getattr(mod, name))} |' for name in mod.__all__]
    return '\n'.join(out) + '\n'

def write_if_changed(path, write):
    "Write via `write(tmp)` and replace `path` only if the bytes differ, so Sphinx re-reads only what changed."
    tmp = path.with_name(path.name + '.new')
    write(tmp)
    if path.exists() and path.read_bytes() == tmp.read_bytes(): tmp.unlink()
    else: tmp.replace(path)

def stage(nbs, src):
    from nbdev.config import get_config
    cfg = get_config()
    flags = cfg.tst_flags.split() if isinstance(cfg.tst_flags, str) else list(cfg.tst_flags or [])
    src.mkdir(parents=True, exist_ok=True)
    digest, paths, pages = sources_hash(), chapters(nbs), []
    for p in paths:
        nb = stage_notebook(p, flags, digest)
        module = next((c.source.split()[-1] for c in read_nb(p).cells if 'default_exp' in c.directives), None)
        title = next((c.source[2:].split('\n')[0] for c in nb.cells if c.cell_type == 'markdown' and c.source.startswith('# ')), p.stem)
        if part(p) and module: pages.append((page_name(p), module, title, p.name))
        for c in nb.cells:  # links between notebooks (`](12_fast.ipynb)`) point at their pages' names
            if c.cell_type == 'markdown':
                c.source = re.sub(r'\]\((\d+_[\w]+)\.ipynb', lambda m: f'](' + page_name(m[1] + '.ipynb') + '.ipynb', c.source)
        if p.name == 'index.ipynb':
            nb.cells.append(mk_cell(navigation(paths), 'markdown'))
            nb.cells[-1].id = 'staged-toc'
        write_if_changed(src/f'{page_name(p)}.ipynb', lambda t: write_nb(nb, t))
    for stale in set(src.glob('*.ipynb')) - {src/f'{page_name(p)}.ipynb' for p in paths}: stale.unlink()
    write_if_changed(src/'api.md', lambda t: t.write_text(api_page(pages)))
    (src/'_site.json').write_text(json.dumps({'nbs': str(Path(nbs).resolve()), 'pages': [
        {'docname': page_name(p), 'notebook': p.name} for p in paths] + [{'docname': 'api', 'notebook': None}]}, indent=1))

def markdown_twin(nb):
    "A rendered page as Markdown (nbdev's `.html.md`): prose, the code shown, and text and Markdown outputs."
    def text(x): return ''.join(x) if isinstance(x, list) else x
    parts = []
    for cell in nb.cells:
        tags = set(cell.metadata.get('tags', []))
        if 'remove-cell' in tags: continue
        if cell.cell_type == 'markdown': parts.append(cell.source); continue
        if 'remove-input' not in tags and cell.source.strip(): parts.append(f'```python\n{cell.source.strip()}\n```')
        for o in [] if 'remove-output' in tags else cell.get('outputs', []):
            data = o.get('data', {})
            if o.output_type == 'stream': parts.append(f'```\n{text(o.text).rstrip()}\n```')
            elif 'text/markdown' in data: parts.append(text(data['text/markdown']))
            elif 'text/plain' in data: parts.append(f'```\n{text(data["text/plain"]).rstrip()}\n```')
    return '\n\n'.join(parts) + '\n'

def write_markdown_twins(out):
    "`<page>.html.md` next to each notebook's page, from the notebook as executed for the site."
    for page in json.loads((out/'src'/'_site.json').read_text())['pages']:
        if not page['notebook']: continue
        executed = out/'jupyter_execute'/f'{page["docname"]}.ipynb'
        nb = read_nb(executed if executed.exists() else out/'src'/f'{page["docname"]}.ipynb')
        (out/'html'/f'{page["docname"]}.html.md').write_text(markdown_twin(nb))

def build(nbs, out, jobs, execute=True):
    "Stage, render and write the Markdown twins; returns seconds."
    t0 = time.time()
    stage(nbs, out/'src')
    from jupyter_cache import get_cache
    get_cache(out/'jupyter_cache').list_cache_records()  # create the cache's database here: parallel Sphinx processes collide creating it
    env = {**os.environ, 'IN_TEST': '1', 'PATH': f'{Path(sys.executable).parent}{os.pathsep}{os.environ["PATH"]}'}
    cmd = [sys.executable, '-m', 'sphinx', '-W', '--keep-going', '-q', '-j', str(jobs), '-b', 'html', '-c', str(DOCS),
           '-D', f'nb_execution_cache_path={out/"jupyter_cache"}', *([] if execute else ['-D', 'nb_execution_mode=off']),
           '-d', str(out/'doctrees'), str(out/'src'), str(out/'html')]
    if subprocess.run(cmd, env=env).returncode: sys.exit('sphinx-build failed (warnings count as errors, see above)')
    write_markdown_twins(out)
    return time.time() - t0

def time_prose_edit(out, jobs, limit=20.0, max_ratio=0.25):
    "Rebuild with one Markdown cell added to a copy of nbs/; compare with the last full build; restore the site."
    timing = json.loads((out/'timing.json').read_text())
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(ROOT/'nbs', tmp, dirs_exist_ok=True)
        first = chapters(tmp)[1]
        nb = read_nb(first); nb.cells.append(mk_cell('A sentence added to time a prose-only rebuild.', 'markdown'))
        nb.cells[-1].id = 'prose-edit'
        write_nb(nb, first)
        secs = build(tmp, out, jobs)
    build(ROOT/'nbs', out, jobs)  # back to the site of nbs/
    cold = timing['executed'].startswith('cold')
    print(f'prose-only edit rebuilt in {secs:.1f}s; the last build of the site took {timing["seconds"]:.1f}s '
          f'({timing["executed"]}); ratio {secs / timing["seconds"]:.3f}')
    if cold and secs > max_ratio * timing['seconds']:
        sys.exit(f'a prose-only edit took {secs / timing["seconds"]:.2f} of a cold build (limit {max_ratio}): is the execution cache used?')
    if not cold and secs > limit: sys.exit(f'a prose-only edit took {secs:.1f}s to rebuild (limit {limit:.0f}s)')

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--nbs', default=str(ROOT/'nbs'), help='folder of notebooks (default: nbs/)')
    ap.add_argument('--out', default=str(BUILD), help='build folder (html goes to OUT/html)')
    ap.add_argument('--jobs', type=int, default=2, help='Sphinx processes (notebooks executed at once)')
    ap.add_argument('--time-prose-edit', action='store_true', help='time a prose-only rebuild against the last build')
    ap.add_argument('--no-execute', action='store_true',
                    help="render the pages without running the notebooks (no outputs): a quick look at the site's structure")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    if args.time_prose_edit: return time_prose_edit(out, args.jobs)
    if args.no_execute:
        secs = build(args.nbs, out, args.jobs, execute=False)
        return print(f'Built the site, without executing the notebooks, into {out/"html"} in {secs:.1f}s')
    cold = not (out/'jupyter_cache').exists()
    secs = build(args.nbs, out, args.jobs)
    (out/'timing.json').write_text(json.dumps({'seconds': secs, 'executed': 'cold: every notebook executed' if cold else 'with the cache'}))
    print(f'Built the site into {out/"html"} in {secs:.1f}s ({"cold" if cold else "with the execution cache"})')

if __name__ == '__main__': main()
