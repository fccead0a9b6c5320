"""Build the gumbel_tut website from nbs/ without Quarto: `python docs/build.py` (what `make docs` runs).

1. **Execute** every `nbs/*.ipynb` fresh (file-name order, 2 worker processes, one fresh process per
   notebook) the way `nbdev-test` does: execnb's `CaptureShell`, working directory `nbs/`, `IN_TEST=1`,
   cells flagged with `tst_flags` or `#| eval: false` skipped. A failing cell stops the build, naming the
   notebook, the cell and the traceback. `nbs/` is never written; executed copies go to docs/_build/exec.
2. **Process** each executed notebook with nbdev's own notebook processors (`FilterDefaults`, as
   `nbdev.serve.proc_nbs` does): front matter, `show_doc` cells for exports, `#| hide`/`#| export` cells
   removed, backticked names linked. `show_doc` cells nbdev adds are inserted *before* execution, so every
   output comes from the single run (nbdev's `exec_show_docs` second run is left out).
3. **Convert** the Quarto-only syntax nbdev leaves for Quarto (see `myst.py`) so that Sphinx + myst-nb
   render the same page: docs/_build/src holds the MyST notebooks, one per page, named like nbdev's
   Quarto pages (`00_gumbel.ipynb` -> `gumbel.html`).
4. **Render** with `sphinx-build -W` (warnings are errors; conf.py next to this file) into docs/_build/html.
"""
import argparse, json, os, shutil, subprocess, sys, time, traceback
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS))

class NotebookFailed(Exception): pass

def execute_and_process(nb_path, exec_dir, skip_flags, force_flags, cell_timeout):
    """Run in a fresh worker process: execute `nb_path` once, then apply nbdev's doc processors.
    Returns (processed notebook as a dict, seconds) or raises `NotebookFailed` naming notebook and cell."""
    os.environ['IN_TEST'] = '1'  # nbdev_export() calls in notebooks do nothing, as under nbdev-test
    os.environ.setdefault('MPLBACKEND', 'agg')
    from fastcore.nbio import read_nb, write_nb, nb2dict
    from fastcore.xtras import working_directory
    from execnb.shell import CaptureShell
    from nbdev.process import NBProcessor
    from nbdev.processors import populate_language, add_show_docs
    from nbdev.test import _skip_cell
    from myst import NbdevDocProcs
    start = time.time()
    nb_path = Path(nb_path)
    # nbdev inserts show_doc cells after exported definitions that have none: do it before running,
    # so that they run with everything else.
    nb = NBProcessor(nb_path, procs=[populate_language, add_show_docs], rm_directives=False, process=True).nb
    for cell in nb.cells:
        if getattr(cell, 'has_sd', False): cell.metadata['nbdev_has_sd'] = True
    skip = _skip_cell(nb, skip_flags, force_flags)
    shell = CaptureShell(nb_path)
    shell.run_cell('from nbdev.showdoc import show_doc')  # as nbdev's exec_show_docs does, for the cells added above
    try:
        with working_directory(nb_path.parent):
            shell.run_all(nb, exc_stop=True, preproc=skip, cell_timeout=cell_timeout)
    except BaseException as e:
        cell = next((c for c in nb.cells if c.get('idx_') == (shell._cell_idx or 0) - 1), None)
        src = cell.source if cell is not None else '?'
        raise NotebookFailed(f'{nb_path.name}: cell {shell._cell_idx} (counting every cell from 1) failed:\n'
                             f'{"-"*70}\n{src}\n{"-"*70}\n{shell.prettytb(fname=nb_path) or traceback.format_exc()}') from None
    # Round-trip through disk, as nbdev.serve does, so outputs have their on-disk form
    exec_path = Path(exec_dir)/nb_path.name
    write_nb(nb, exec_path)
    nb = read_nb(exec_path)
    for cell in nb.cells:
        if cell.metadata.pop('nbdev_has_sd', False): cell.has_sd = True
    NbdevDocProcs()(nb)
    return nb2dict(nb), time.time() - start

def notebooks(nbs_dir):
    "The site's notebooks in chapter (file-name) order; `index.ipynb` is the home page."
    return sorted(p for p in Path(nbs_dir).glob('*.ipynb') if not p.name.startswith(('_', '.')))

def run_notebooks(paths, exec_dir, workers, skip_flags, force_flags, cell_timeout):
    "Execute and process `paths` in parallel, each in a fresh process; fail listing every failing notebook."
    ctx = get_context('spawn')  # fresh interpreter: no torch/matplotlib state shared between notebooks
    results, failures = {}, []
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, max_tasks_per_child=1) as pool:
        futs = {p: pool.submit(execute_and_process, str(p), str(exec_dir), skip_flags, force_flags, cell_timeout) for p in paths}
        for p, fut in futs.items():
            try:
                results[p], secs = fut.result()
                print(f'  executed {p.name} in {secs:.1f}s', flush=True)
            except NotebookFailed as e: failures.append(str(e))
            except Exception as e: failures.append(f'{p.name}: {type(e).__name__}: {e}\n{traceback.format_exc()}')
    if failures:
        sys.stderr.write('\n'.join(['', 'Notebook execution failed (the website build stops here):', *failures, '']))
        sys.exit(1)
    return results

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--nbs', default=str(ROOT/'nbs'), help='folder of notebooks (default: nbs/)')
    ap.add_argument('--out', default=str(DOCS/'_build'), help='build folder (html goes to OUT/html)')
    ap.add_argument('--workers', type=int, default=2, help='notebooks executed at once')
    ap.add_argument('--flags', default='', help='space-separated tst_flags to run anyway (e.g. "slow")')
    args = ap.parse_args()
    from nbdev.config import get_config
    from myst import to_myst, write_source_pages, site_info
    cfg = get_config()
    skip_flags = cfg.tst_flags.split() if isinstance(cfg.tst_flags, str) else list(cfg.tst_flags or [])
    out = Path(args.out).resolve()
    exec_dir, src_dir, html_dir = out/'exec', out/'src', out/'html'
    for d in (exec_dir, src_dir): shutil.rmtree(d, ignore_errors=True); d.mkdir(parents=True)
    paths = notebooks(args.nbs)
    if not any(p.name == 'index.ipynb' for p in paths): sys.exit(f'{args.nbs}/index.ipynb (the home page) is missing')
    t0 = time.time()
    print(f'Executing {len(paths)} notebooks with {args.workers} workers', flush=True)
    processed = run_notebooks(paths, exec_dir, args.workers, skip_flags, args.flags.split(), cfg.cell_timeout or None)
    t1 = time.time()
    pages = to_myst(processed, src_dir, cfg)
    write_source_pages(src_dir/'_extra', cfg)
    (src_dir/'_site.json').write_text(json.dumps(site_info(pages, cfg, Path(args.nbs).resolve()), indent=1))
    shutil.rmtree(html_dir, ignore_errors=True)
    shutil.rmtree(out/'screenshots', ignore_errors=True)  # tests/test_site.py takes them of this build
    cmd = [sys.executable, '-m', 'sphinx', '-W', '--keep-going', '-q', '-b', 'html', '-c', str(DOCS), str(src_dir), str(html_dir)]
    if subprocess.run(cmd).returncode: sys.exit('sphinx-build failed (warnings count as errors): see the messages above')
    print(f'Built {len(pages)} pages into {html_dir} (notebooks {t1-t0:.1f}s, sphinx {time.time()-t1:.1f}s)')

if __name__ == '__main__': main()
