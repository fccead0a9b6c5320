"""The tutorial's rules, read from the notebooks (docs/TUTORIAL_RULES.md states them for authors).

A tutorial chapter (notebooks 00-09) opens with what the reader will learn and what they need first, keeps to 3,000
words of prose before its appendices, keeps the code of its main flow narrow (no line over 100 characters, so nothing
scrolls sideways on the website) and short (no cell over 30 lines), and ends with Takeaways that point to their
evidence and with at least three exercises whose solutions are code, executed when the website is built."""
import json, re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / 'nbs').glob('0[0-9]_*.ipynb'))
MAX_WORDS, MAX_CELL_LINES, MAX_LINE = 3000, 30, 100


def cells(path:Path) -> list[dict]: return json.loads(path.read_text())['cells']
def text(cell:dict) -> str: return ''.join(cell['source'])
def heading(cell:dict) -> str:
    "The cell's first line if it is a Markdown heading, else ''."
    first = text(cell).lstrip().split('\n', 1)[0]
    return first if cell['cell_type'] == 'markdown' and first.startswith('#') else ''


def main_flow(path:Path) -> list[dict]:
    "The cells before the first `## Appendix` heading."
    out = []
    for c in cells(path):
        if heading(c).startswith('## Appendix'): break
        out.append(c)
    return out


def sections(path:Path) -> dict[str, list[dict]]:
    "`## Heading` (first line) -> the cells from it to the next `## ` heading."
    out, current = {}, None
    for c in cells(path):
        if heading(c).startswith('## '): current = out.setdefault(heading(c)[3:].strip(), [])
        if current is not None: current.append(c)
    return out


_MATH = re.compile(r'\$\$.*?\$\$|\$[^$\n]*\$', re.S)
_DIRECTIVE = re.compile(r'^\s*(```+|````+|:[\w-]+:.*)$', re.M)   # fences and directive options are not prose


def prose_words(path:Path) -> int:
    "Words of Markdown in the main flow, without math, link targets, directive syntax and the References section."
    n, in_references = 0, False
    for c in main_flow(path):
        if c['cell_type'] != 'markdown': continue
        if heading(c).startswith('## '): in_references = heading(c).startswith('## References')
        if in_references: continue
        t = _DIRECTIVE.sub(' ', _MATH.sub(' ', re.sub(r'\]\([^)]*\)', ']', text(c))))
        t = re.sub(r'\{[\w-]+\}', ' ', t)
        n += len(re.findall(r"[A-Za-z0-9][\w'’.-]*", t))
    return n


def slug(title:str) -> str:
    "MyST's heading anchor (GitHub's rule): lower case, punctuation dropped, spaces to hyphens."
    t = re.sub(r'`|\*|\$', '', title.strip().lstrip('#').strip()).lower()
    return re.sub(r'\s', '-', re.sub(r'[^\w\s-]', '', t))


def chapter_ids(path:Path) -> list[str]:
    return [p.stem for p in CHAPTERS]


@pytest.fixture(params=CHAPTERS, ids=lambda p: p.stem)
def chapter(request): return request.param


def test_the_tutorial_has_its_chapters():
    assert [p.name[:2] for p in CHAPTERS][:5] == ['00', '01', '02', '03', '04']


def test_opening_says_what_you_will_learn_and_what_you_need(chapter):
    opening = [c for c in cells(chapter)[:5] if heading(c).startswith('## What you will learn')]
    assert opening, f"{chapter.name}: one of its first cells must be '## What you will learn'"
    body = text(opening[0])
    bullets = re.findall(r'^\s*[-*] ', body, re.M)
    assert 3 <= len(bullets) <= 5, f"{chapter.name}: 3-5 things to learn, got {len(bullets)}"
    assert re.search(r'\*\*Prerequisites', body), f"{chapter.name}: the opening names its **Prerequisites**"


def test_prose_fits_the_budget(chapter):
    n = prose_words(chapter)
    assert n <= MAX_WORDS, f"{chapter.name}: {n} words of prose before its appendices, more than {MAX_WORDS}"


def test_main_flow_code_is_narrow_and_short(chapter):
    for i, c in enumerate(main_flow(chapter)):
        if c['cell_type'] != 'code': continue
        lines = text(c).split('\n')
        assert len(lines) <= MAX_CELL_LINES, f"{chapter.name} cell {i} (id {c.get('id')}): {len(lines)} lines"
        wide = [l for l in lines if len(l) > MAX_LINE]
        assert not wide, f"{chapter.name} cell {i} (id {c.get('id')}): a line of {len(wide[0])} characters: {wide[0]!r}"


def test_takeaways_point_to_their_evidence(chapter):
    parts = sections(chapter)
    assert 'Takeaways' in parts, f"{chapter.name} has no '## Takeaways'"
    body = text(parts['Takeaways'][0])
    bullets = re.findall(r'^\s*[-*] .*', body, re.M)
    assert 3 <= len(bullets) <= 6, f"{chapter.name}: 3-6 takeaways, got {len(bullets)}"
    anchors = {slug(h) for c in cells(chapter) for h in re.findall(r'^#{2,3} .*', text(c), re.M)}
    anchors |= set(re.findall(r'^\(([\w-]+)\)=', '\n'.join(text(c) for c in cells(chapter)), re.M))  # MyST targets
    for b in bullets:
        links = re.findall(r'\]\(#([\w-]+)\)', b)
        assert links, f"{chapter.name}: a takeaway without a link to its evidence: {b!r}"
        assert all(a in anchors for a in links), f"{chapter.name}: {links} are not anchors of the chapter: {b!r}"


def exercises(path:Path) -> dict[str, list[dict]]:
    "Label -> the code cells of its solution (between `{solution-start} label` and `{solution-end}`)."
    labels, solutions, current = [], {}, None
    for c in cells(path):
        t = text(c)
        if c['cell_type'] == 'markdown':
            labels += re.findall(r'```+\{exercise\}[^\n]*\n(?::[\w-]+:.*\n)*?:label: ([\w-]+)', t)
            if m := re.search(r'```+\{solution-start\} ([\w-]+)', t): current = solutions.setdefault(m[1], [])
            if re.search(r'```+\{solution-end\}', t): current = None
        elif current is not None: current.append(c)
    return {label: solutions.get(label, []) for label in labels}


def test_at_least_three_exercises_with_executed_solutions(chapter):
    assert 'Exercises' in sections(chapter), f"{chapter.name} has no '## Exercises'"
    found = exercises(chapter)
    assert len(found) >= 3, f"{chapter.name}: {len(found)} exercises, at least 3 wanted"
    for label, code in found.items():
        assert code, f"{chapter.name}: exercise {label} has no solution with code (solution-start/solution-end)"
        assert any(re.search(r'\bassert\b|\btest_\w+\(', text(c)) for c in code), \
            f"{chapter.name}: the solution of {label} checks nothing (an assert makes a wrong solution fail the build)"


def test_the_rules_can_fail():
    "The checks above catch what they are for, on small made-up cells."
    assert slug('## The Gumbel-max trick: `gumbel_max`') == 'the-gumbel-max-trick-gumbel_max'
    md = lambda s: {'cell_type': 'markdown', 'source': [s]}
    assert heading(md('## Appendix: tails')) == '## Appendix: tails' and heading(md('text')) == ''


@pytest.mark.parametrize('path', sorted((ROOT / 'nbs').glob('*.ipynb')), ids=lambda p: p.stem)
def test_show_doc_alone_in_its_cell(path):
    "docs/build.py turns a cell holding one `show_doc(name)` into the name's API entry; two in one cell would render"
    " nbdev's Markdown (with its rules) instead, and break the page's structure."
    for i, c in enumerate(cells(path)):
        if c['cell_type'] == 'code' and 'show_doc(' in text(c):
            assert re.fullmatch(r'(?:#\|.*\n)*\s*show_doc\(([\w.]+)\)\s*', text(c)), f"{path.name} cell {i}: {text(c)!r}"


def test_exercise_labels_are_unique_across_the_site():
    "Sphinx labels are global: two chapters with the same exercise label fail the build."
    labels = [label for p in CHAPTERS for label in exercises(p)]
    assert len(labels) == len(set(labels)), sorted({l for l in labels if labels.count(l) > 1})
