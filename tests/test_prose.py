"""Measured numbers belong to the run that renders them, not to the prose.

Every Markdown cell of every notebook in `nbs/` and the README is scanned for numbers that look like
measurements: a number followed by a unit of time, a percentage, nats or bits, a memory size, or a ratio
("4x", "3 times faster", "a factor of 5", "10-fold"), and counts of NaN/inf results. Such a number must come
from code (a Markdown output computed in the run) or be asserted by a check cell. The few allowed exceptions
(figures from papers, mathematical constants, parameters the text chooses, labelled external measurements)
are listed in `tests/prose_allowlist.txt`, each with its source.
"""
import json, re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALLOWLIST = ROOT / 'tests' / 'prose_allowlist.txt'
KINDS = ('paper', 'constant', 'parameter', 'external')

_NUM = r'(?<![\w.])\d+(?:[.,]\d+)*(?:\s*(?:\\cdot|·|\*)\s*10\^\{?-?\d+\}?)?'
_UNIT = (r'(?:ms|µs|us|ns|s|sec|secs|seconds?|minutes?|min|hours?|h|'
         r'nats?|bits/dim|[KMGT]i?B|[KMGT]i?B/s|GFLOP/s)')
_SPACE = r'(?:\s|~|\\,|\\;|\\ )*'
# inside $...$ a letter after a number is a variable (15s, 2h): there only units spelled as text count
MATH_MEASUREMENT = re.compile('|'.join([
    _NUM + _SPACE + r'\\(?:mathrm|text|mbox)\{\s*' + _UNIT + r'\s*\}',                     # 3\,\mathrm{ms}
    _NUM + r'\s*\\%',                                                                  # 0.4\%
    _NUM + r'\s*\\times(?!\s*[\w({\\])',                                                # a ratio 3\times (not 3 \times 4)
]))
MEASUREMENT = re.compile('|'.join([
    _NUM + _SPACE + _UNIT + r'(?![\w/])',                                               # 12 ms, 3.5 s, 101.5 nats, 4 GB
    _NUM + r'\s*%',                                                                     # 40%
    _NUM + r'\s*(?:x|×)(?!\w)(?!\s*[\d(])',                                               # 4x, 2.5× (not 8x8, 8 x 8)
    _NUM + r'(?:\s*(?:-|to|–)\s*\d+(?:\.\d+)?)?\s+times\s+(?:faster|slower|more|less|larger|smaller|lower|higher|as)\b',
    r'factor of\s+(?:up to\s+|about\s+|roughly\s+)?' + _NUM,
    _NUM + r'(?:-|\s)fold\b',
    _NUM + r'(?:\s*(?:-|to|–)\s*\d+)?\s+(?:NaN|nan|inf|non-finite)\b',                 # 3 NaN rows
]))

def _strip(text:str) -> str:
    "Remove what is not prose: fenced code, inline code, link targets, HTML tags."
    text = re.sub(r'```.*?```', ' ', text, flags=re.S)
    text = re.sub(r'`[^`\n]*`', ' ', text)
    text = re.sub(r'\]\([^)]*\)', ']', text)
    text = re.sub(r'<[^>\n]+>', ' ', text)
    return text

def markdown_sources():
    "(file, cell label, text) for every Markdown cell of every notebook, and every paragraph of the README."
    for path in sorted((ROOT / 'nbs').glob('*.ipynb')):
        for i, cell in enumerate(json.loads(path.read_text())['cells']):
            if cell['cell_type'] == 'markdown':
                yield path.name, f"cell {i} (id {cell.get('id')})", ''.join(cell['source'])
    readme = ROOT / 'README.md'
    if readme.exists():
        for j, para in enumerate(readme.read_text().split('\n\n')):
            yield 'README.md', f'paragraph {j}', para

_MATH = re.compile(r'\$\$.*?\$\$|\$[^$\n]*\$', re.S)

def find_measurements(text:str) -> list[str]:
    "Measurement-like snippets in `text` (prose and math scanned by their own rules), whitespace-normalized."
    text = _strip(text)
    math = ' '.join(m.group(0) for m in _MATH.finditer(text))
    prose = _MATH.sub(' ', text)
    found = [m.group(0) for m in MEASUREMENT.finditer(prose)] + [m.group(0) for m in MATH_MEASUREMENT.finditer(math)]
    return [' '.join(f.split()) for f in found]

def load_allowlist(path=ALLOWLIST) -> list[tuple[str, str, str]]:
    "(file, snippet, source) per entry: `file :: snippet :: kind: source`, '#' comments."
    entries = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith('#'): continue
        parts = [p.strip() for p in line.split('::')]
        assert len(parts) == 3 and all(parts), f'{path.name}:{n}: expected "file :: snippet :: kind: source", got {line!r}'
        kind = parts[2].split(':')[0].strip()
        assert kind in KINDS, f'{path.name}:{n}: kind must be one of {KINDS}, got {kind!r}'
        assert len(parts[2].split(':', 1)[-1].strip()) > 5, f'{path.name}:{n}: give the source after the kind'
        entries.append(tuple(parts))
    return entries

def test_detector_flags_measurements_and_spares_the_rest():
    flagged = ['took 12 ms', 'about 3.5 s per epoch', 'reaches 101.5 nats', 'is 40% faster', 'a 4x speedup',
               'at 2.5× the cost', '3 times faster', 'by a factor of 4-7', 'a 10-fold drop', '1 to 3 NaN rows',
               'uses 4 GB', r'$0.4\%$ of draws', '7 seconds', r'$3\,\mathrm{ms}$', r'$2.5\times$ faster']
    spared = ['8x8 digits', 'a 20x10 latent', '$10^6$ samples', r'$\tau = 0.5$', 'chapter 5', '`--max-seconds 120`',
              '[arXiv:1611.01144](https://arxiv.org/abs/1611.01144)', '2 samples', '$S = 4$ samples',
              '$g(s) = s^3(10 - 15s + 6s^2)$', r'$60000 \times 28 \times 28$', '8 x 8 pixels', '64 random bits']
    for text in flagged: assert find_measurements(text), text
    for text in spared: assert not find_measurements(text), (text, find_measurements(text))

def test_allowlist_is_short_and_sourced():
    "At most ten facts that are neither paper figures nor constants; README.md repeats index.ipynb's (it is generated)."
    entries = load_allowlist()
    others = sorted({(s, src) for f, s, src in entries if src.split(':')[0] not in ('paper', 'constant')})
    assert len(others) <= 10, f'{len(others)} allow-list entries that are neither paper figures nor constants: {others}'

def test_allowlist_entries_are_used():
    found = {(f, s) for f, _, text in markdown_sources() for s in find_measurements(text)}
    stale = [(f, s) for f, s, _ in load_allowlist() if (f, s) not in found]
    assert not stale, f'allow-list entries that no longer match any prose (remove them): {stale}'

def test_no_typed_measurements_in_prose():
    allowed = {(f, s) for f, s, _ in load_allowlist()}
    bad = [f'{f} {where}: {s!r}' for f, where, text in markdown_sources() for s in find_measurements(text) if (f, s) not in allowed]
    assert not bad, ('Markdown states measurements that the run does not compute; render them from code, assert them '
                     'in a check cell, or (paper figure, constant, chosen parameter, labelled external measurement) add '
                     'them to tests/prose_allowlist.txt with their source:\n' + '\n'.join(bad))

# Chapters whose last section is "References" (full titles and links); the home page collects them all.
CHAPTERS_WITH_REFERENCES = ('00_gumbel.ipynb', '01_relax.ipynb', '02_estimators.ipynb', '03_data.ipynb', '04_vae.ipynb',
                            '12_fast.ipynb', '14_triton.ipynb')
_ARXIV = re.compile(r'arXiv:(\d{4}\.\d{4,5})')

def _markdown_cells(name:str) -> list[str]:
    return [''.join(c['source']) for c in json.loads((ROOT / 'nbs' / name).read_text())['cells'] if c['cell_type'] == 'markdown']

def _section(cells:list[str], heading:str) -> str:
    found = [c for c in cells if c.lstrip().startswith(heading)]
    assert found, f'no Markdown cell starting with {heading!r}'
    return found[-1]

@pytest.mark.parametrize('name', CHAPTERS_WITH_REFERENCES)
def test_chapter_ends_with_references_collected_on_home_page(name):
    cells = _markdown_cells(name)
    refs = _section(cells, '## References')
    assert _ARXIV.search(refs), f'{name}: the References section cites no arXiv paper'
    for heading in [c.lstrip().split('\n')[0] for c in cells[cells.index(refs) + 1:] if c.lstrip().startswith('## ')]:
        assert heading.startswith('## Appendix'), f'{name}: only appendices may follow the References section, found {heading!r}'
    bibliography = _section(_markdown_cells('index.ipynb'), '## Bibliography')
    missing = set(_ARXIV.findall(refs)) - set(_ARXIV.findall(bibliography))
    assert not missing, f'{name} cites arXiv papers missing from the bibliography of index.ipynb: {sorted(missing)}'
