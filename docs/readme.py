"""Write README.md from nbs/index.ipynb without Quarto.

Cells marked `#| hide` (or holding `#| export` machinery) are dropped, other `#|` option lines are
removed, code cells become fenced Python and their text outputs fenced text blocks. The README is
a plain rendering of the home page, so `make test` can check that the two agree."""
from pathlib import Path
import nbformat

ROOT = Path(__file__).resolve().parent.parent
DROP = {'hide', 'export', 'exports', 'exporti', 'default_exp', 'eval: false'}

def cell_options(source):
    "The `#|` option lines at the top of a cell, and the rest of its source."
    lines = source.splitlines()
    n = 0
    while n < len(lines) and lines[n].startswith('#|'): n += 1
    return [l[2:].strip() for l in lines[:n]], '\n'.join(lines[n:]).strip()

def text_outputs(cell):
    "Plain-text outputs of a code cell (streams and text/plain results)."
    for out in cell.get('outputs', []):
        if out.output_type == 'stream': yield out.text
        elif 'text/plain' in out.get('data', {}): yield out.data['text/plain']

def render(nb):
    parts = []
    for cell in nb.cells:
        opts, body = cell_options(cell.source)
        if any(o.split()[0] in DROP for o in opts if o) or not body: continue
        if cell.cell_type == 'markdown':
            if body.startswith('---') and 'title:' in body: continue  # Quarto front matter, if any
            parts.append(body)
        elif cell.cell_type == 'code':
            parts.append(f'```python\n{body}\n```')
            parts += [f'```\n{t.rstrip()}\n```' for t in text_outputs(cell) if t.strip()]
    note = '<!-- Generated from nbs/index.ipynb by docs/readme.py: edit the notebook, then run `make export`. -->'
    return '\n\n'.join([note] + parts) + '\n'

if __name__ == '__main__':
    nb = nbformat.read(ROOT / 'nbs' / 'index.ipynb', as_version=4)
    (ROOT / 'README.md').write_text(render(nb))
