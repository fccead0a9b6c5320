"""Write README.md from nbs/index.ipynb without Quarto: the home page as plain Markdown, so that `make test` can
check that the two agree. Hidden and exported cells are dropped (cell directives as fastcore/nbdev read them), code
cells become fenced Python and their text outputs fenced text blocks."""
from pathlib import Path
from fastcore.nbio import read_nb

ROOT = Path(__file__).resolve().parent.parent
DROP = {'hide', 'export', 'exports', 'exporti', 'default_exp'}

def text_outputs(cell):
    "Plain-text outputs of a code cell (streams and text/plain results)."
    for out in cell.get('outputs', []):
        if out.output_type == 'stream': yield out.text
        elif 'text/plain' in out.get('data', {}): yield out.data['text/plain']

def render(nb):
    parts = []
    for cell in nb.cells:
        d = cell.directives
        if DROP & set(d) or str(d.get('include', '')).lower() == 'false': continue
        cell.directives = {}
        body = cell.source.strip()
        if not body: continue
        if cell.cell_type == 'markdown': parts.append(body)
        elif cell.cell_type == 'code':
            parts.append(f'```python\n{body}\n```')
            parts += [f'```\n{t.rstrip()}\n```' for t in text_outputs(cell) if t.strip()]
    note = '<!-- Generated from nbs/index.ipynb by docs/readme.py: edit the notebook, then run `make export`. -->'
    return '\n\n'.join([note] + parts) + '\n'

if __name__ == '__main__': (ROOT/'README.md').write_text(render(read_nb(ROOT/'nbs'/'index.ipynb')))
