"""Chapter 0's `markdown_table`, which renders every computed table of the tutorial: a `|` in a column name or a cell
is escaped (the website's Markdown parser, markdown-it as MyST uses it, still sees every cell), the columns are the ones
asked for in their order, floats follow `floatfmt` while ints, strings and None print as they should, and bad input
raises a `ValueError` that names the argument. Without IPython, see tests/test_packaging.py."""
import math
import numpy as np, pytest
from hypothesis import given, strategies as st
from markdown_it import MarkdownIt

from gumbel_tut.gumbel import markdown_table  # a tutorial helper, not in the public API

def parsed(table) -> list[list[str]]:
    "The cell texts of each line of a Markdown table (header first), as markdown-it reads them."
    tokens = MarkdownIt('commonmark').enable('table').parse(table.data)
    rows, cells = [], None
    for t in tokens:
        if t.type == 'tr_open': cells = []
        elif t.type == 'inline' and cells is not None: cells.append(''.join(c.content for c in t.children))
        elif t.type == 'tr_close': rows.append(cells); cells = None
    return rows

def test_pipes_escaped_in_names_and_cells():
    t = markdown_table([{'a | b': 'x|y', 'c': '`p | q`'}])
    assert t.data == '| a \\| b | c |\n|---|---|\n| x\\|y | `p \\| q` |'
    assert parsed(t) == [['a | b', 'c'], ['x|y', 'p | q']]  # two cells on each line, the pipes inside them

def test_newline_in_a_cell_stays_on_its_row():
    assert parsed(markdown_table([{'note': 'two\nlines', 'n': 1}])) == [['note', 'n'], ['two lines', '1']]

@given(st.lists(st.text('ab |\nτ-', max_size=6), min_size=1, max_size=4, unique=True).flatmap(
    lambda names: st.tuples(st.just(names), st.lists(st.lists(st.text('ab |\nτ-', max_size=6), min_size=len(names),
                                                             max_size=len(names)), min_size=1, max_size=4))))
def test_any_text_keeps_the_table_shape(names_rows):
    "Whatever pipes, newlines and dashes the names and cells hold, markdown-it reads back every cell where it was."
    names, rows = names_rows
    got = parsed(markdown_table([dict(zip(names, r)) for r in rows]))
    want = [[s.replace('\n', ' ').strip() for s in line] for line in [names, *rows]]
    assert [[c.strip() for c in line] for line in got] == want

def test_columns_selected_and_ordered():
    rows = [{'K': 10, 'ms': 0.5, 'extra': 'x'}, {'K': 1000, 'ms': 2.25, 'extra': 'y'}]
    assert markdown_table(rows, cols=['ms', 'K']).data == '| ms | K |\n|---|---|\n| 0.5 | 10 |\n| 2.25 | 1000 |'
    assert markdown_table(rows, cols=('extra',)).data == '| extra |\n|---|\n| x |\n| y |'
    assert markdown_table(rows).data.splitlines()[0] == '| K | ms | extra |'  # None: the first row's keys, in order
    assert parsed(markdown_table(rows + [{'K': 1, 'ms': 0.1, 'extra': 'z', 'later': 'ignored'}]))[0] == ['K', 'ms', 'extra']

@pytest.mark.parametrize('value, floatfmt, cell', [
    (1 / 3, '.3g', '0.333'), (1 / 3, '.2f', '0.33'), (12345.678, '.3g', '1.23e+04'), (2.0, '.3g', '2'),
    (1 / 3, '', str(1 / 3)), (0.1, '', '0.1'),                         # '' prints a float as str does
    (np.float32(0.25), '.2f', '0.25'), (np.float64(1 / 3), '.2f', '0.33'),  # numpy floats are floats too
    (math.inf, '.3g', 'inf'), (math.nan, '.2f', 'nan'),
    (10, '.2f', '10'), (np.int64(1000), '.3g', '1000'), (True, '.2f', 'True'),  # ints (and bools) as they are
    ('0.123456', '.2f', '0.123456'), ('', '.3g', ''), (None, '.3g', ''),      # strings untouched, None empty
    ((3, 4), '.3g', '(3, 4)'),                                          # anything else: str
])
def test_cell_formatting(value, floatfmt, cell):
    assert markdown_table([{'v': value}], floatfmt=floatfmt).data.splitlines()[2] == f'| {cell} |'

def test_header_names_are_not_float_formatted():
    assert markdown_table([{0.5: 1.0, 7: 2}], floatfmt='.2f').data.splitlines()[:1] == ['| 0.5 | 7 |']

@pytest.mark.parametrize('kwargs, message', [
    (dict(rows=[]), 'rows=[]'),
    (dict(rows=None), 'rows=None'),
    (dict(rows={'a': 1}), "rows={'a': 1}"),            # one dict, not a list of them
    (dict(rows='ab'), "rows='ab'"),
    (dict(rows=[{'a': 1}, 2]), 'rows[1]=2'),
    (dict(rows=[{'a': 1}], cols=[]), 'cols=[]'),
    (dict(rows=[{}]), 'cols=[]'),
    (dict(rows=[{'a': 1}], cols='a'), "cols='a'"),
    (dict(rows=[{'a': 1}], cols=3), 'cols=3'),
    (dict(rows=[{'a': 1}], cols=['a', 'b']), "column 'b' is missing from rows[0]"),
    (dict(rows=[{'a': 1}, {'b': 2}]), "column 'a' is missing from rows[1]"),
    (dict(rows=[{'a': 1.0}], floatfmt='d'), "floatfmt='d'"),
    (dict(rows=[{'a': 1.0}], floatfmt=3), 'floatfmt=3'),
])
def test_bad_input_names_the_argument(kwargs, message):
    with pytest.raises(ValueError) as e: markdown_table(**kwargs)
    assert message in str(e.value), str(e.value)
