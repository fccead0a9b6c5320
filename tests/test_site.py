"""The built website (docs/_build/html, from `make docs`) in a real browser: headless Debian Chromium driven
by Playwright, over http://127.0.0.1, with every request to another host refused and reported.

For every page: math is typeset by the local MathJax, no raw TeX, no `#|` directives, no content of hidden
cells, every image loads, every internal link (and its #anchor) resolves, no request leaves 127.0.0.1.
Search finds `gumbel_max`. A full-page screenshot of each page goes to docs/_build/screenshots/.
Without a browser: every public name has an entry (an anchor and an `objects.inv` line) and a row on the API page,
`objects.inv` resolves the names users write (`gumbel_tut.GumbelSoftmax.rsample`), lists every module and carries the
version, nbdev's links (`_modidx.py`) reach their anchors, the navigation has its two parts, ids are unique, there
is one search box. `make test` builds the site first (where every notebook is executed); a plain `pytest` without a
built site skips these tests, saying so. Without a site: the Markdown lint, and that nbdev's links, the module
docstrings and the navigation name pages the site has (docs/build.py knows them before a build)."""
import collections, functools, http.server, importlib, importlib.util, json, re, threading, urllib.error, urllib.request
from pathlib import Path
from urllib.parse import urldefrag, urlsplit, unquote
import nbformat, pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT_DOCS = __import__('tomllib').loads((ROOT/'pyproject.toml').read_text())['project']['urls']['Documentation']
SITE = ROOT/'docs'/'_build'/'html'
SHOTS = ROOT/'docs'/'_build'/'screenshots'
CHROMIUM = '/usr/bin/chromium'
CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync']
SITE_INFO = ROOT/'docs'/'_build'/'src'/'_site.json'
MISSING = 'run `make docs` first: docs/_build/html is missing'
needs_site = pytest.mark.skipif(not (SITE/'index.html').exists(), reason='no website built (docs/_build/html): `make docs` builds it')

def _load_build():
    "docs/build.py as a module: the site's page names, anchors and navigation, known without a build."
    spec = importlib.util.spec_from_file_location('gumbel_tut_docs_build', ROOT/'docs'/'build.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

build = _load_build()

def site_pages():
    "Every HTML page Sphinx wrote at the top of the site (chapters, home, search, index)."
    return sorted(p.name for p in SITE.glob('*.html')) if (SITE/'index.html').exists() else [MISSING]

@pytest.fixture(scope='session')
def base_url():
    "Serve the built site on a free 127.0.0.1 port for the whole session."
    assert (SITE/'index.html').exists(), MISSING
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args): pass
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(Quiet, directory=str(SITE)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{srv.server_address[1]}/'
    srv.shutdown(); srv.server_close()

@pytest.fixture(scope='session')
def browser():
    assert Path(CHROMIUM).exists(), f'{CHROMIUM} is missing: run `make chromium` (apt-get install -y chromium)'
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()

@pytest.fixture
def page(browser, base_url):
    "A fresh page that refuses (and records) every request to a host other than 127.0.0.1."
    ctx = browser.new_context(viewport={'width': 1280, 'height': 900}, service_workers='block')
    pg = ctx.new_page()
    pg.foreign_requests, pg.console_errors = [], []
    def route(r):
        host = urlsplit(r.request.url).hostname
        if r.request.url.startswith(('data:', 'blob:', 'about:')) or host == '127.0.0.1': r.continue_()
        else: pg.foreign_requests.append(r.request.url); r.abort()
    pg.route('**/*', route)
    pg.on('pageerror', lambda e: pg.console_errors.append(str(e)))
    yield pg
    ctx.close()

def load(pg, url):
    "Open `url`, wait for the network to settle and MathJax to finish typesetting."
    resp = pg.goto(url, wait_until='networkidle')
    assert resp is not None and resp.status == 200, f'{url}: HTTP {resp and resp.status}'
    pg.wait_for_function('() => !window.MathJax || (window.MathJax.startup && window.MathJax.startup.promise)', timeout=20000)
    pg.evaluate('() => window.MathJax ? MathJax.startup.promise.then(() => true) : true')
    return resp

@functools.lru_cache(maxsize=None)
def fetch(url):
    "(status, body) of a URL on the local server; anchors are checked against the body's ids."
    try:
        with urllib.request.urlopen(url, timeout=10) as r: return r.status, r.read().decode('utf-8', 'replace')
    except urllib.error.HTTPError as e: return e.code, ''

def ids_in(html): return set(re.findall(r'''\s(?:id|name)=["']([^"']+)["']''', html))

def hidden_snippets(nb_name):
    """Source lines (and text outputs) of `#| hide` / `#| include: false` cells of a notebook that appear
    nowhere visible in that notebook: none of them may show up on its page."""
    nb = nbformat.read(Path(json.loads(SITE_INFO.read_text())['nbs'])/nb_name, as_version=4)
    hidden, visible = set(), set()
    for c in nb.cells:
        opts = re.findall(r'^\s*#\|\s*(.*?)\s*$', c.source, re.MULTILINE)
        is_hidden = c.cell_type == 'code' and any(o == 'hide' or re.fullmatch(r'include:\s*false', o) for o in opts)
        lines = {l.strip() for l in c.source.splitlines() if not l.strip().startswith('#|')}
        (hidden if is_hidden else visible).update(lines)
    return sorted(l for l in hidden - visible if len(l) >= 12 and not any(l in v for v in visible))

def page_notebooks():
    info = json.loads(SITE_INFO.read_text()) if SITE_INFO.exists() else {'pages': []}
    return {p['docname'] + '.html': p['notebook'] for p in info['pages'] if p['notebook']}

@needs_site
def test_every_notebook_has_a_page_in_chapter_order(base_url):
    "Every nbs/*.ipynb is a page, reachable from the home page's navigation in file-name order."
    nbs_dir = Path(json.loads(SITE_INFO.read_text())['nbs'])
    nbs = sorted(p.name for p in nbs_dir.glob('*.ipynb') if not p.name.startswith(('_', '.')))
    pages = page_notebooks()
    assert sorted(pages.values()) == nbs
    for html in pages: assert (SITE/html).exists(), html
    status, home = fetch(base_url + 'index.html')
    nav = home[home.index('bd-sidebar-primary'):]
    order = [m for m in re.findall(r'href="([\w.-]+\.html)"', nav) if m in pages and m != 'index.html']
    chapters = [h for h, n in sorted(pages.items(), key=lambda kv: kv[1]) if h != 'index.html']
    assert list(dict.fromkeys(order))[:len(chapters)] == chapters
    assert nbs_dir == ROOT/'nbs', f'the site was built from {nbs_dir}, not nbs/'

@needs_site
@pytest.mark.parametrize('name', site_pages())
def test_page(page, base_url, name):
    assert name != MISSING, MISSING
    load(page, base_url + name)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS/(name.removesuffix('.html') + '.png')), full_page=True)
    problems = []

    # Math: every TeX element typeset by MathJax; no raw TeX left in the text (code excluded).
    n_math, n_typeset = page.evaluate('''() => [document.querySelectorAll('.math').length,
        [...document.querySelectorAll('.math')].filter(e => e.querySelector('mjx-container')).length]''')
    if n_math != n_typeset: problems.append(f'{n_math - n_typeset} of {n_math} math elements not typeset')
    if n_math: assert page.evaluate('() => document.querySelectorAll("mjx-container").length') >= n_math
    for err, tex in page.evaluate('''() => [...document.querySelectorAll('mjx-merror')].map(e =>
            [e.getAttribute('data-mjx-error') || e.textContent, (e.closest('.math') || e).textContent.slice(0, 120)])'''):
        problems.append(f'MathJax error {err!r} in: {tex!r}')
    prose = page.evaluate('''() => { const a = (document.querySelector('article') || document.body).cloneNode(true);
        a.querySelectorAll('mjx-container, pre, code, script, style').forEach(e => e.remove()); return a.textContent; }''')
    for tex in (r'$$', r'\(', r'\[', r'\begin{'):
        if tex in prose: problems.append(f'raw TeX {tex!r} in the page text')
    if m := re.search(r'\$[^$\n]*\\[a-zA-Z]+[^$\n]*\$', prose): problems.append(f'raw TeX in the page text: {m.group(0)!r}')

    # No nbdev/Quarto directives and nothing from hidden cells.
    text = page.evaluate('() => (document.querySelector("article") || document.body).innerText')
    for bad in ('#|', 'nbdev_export', 'default_exp', ':::', '{.callout', 'WARNING: THIS FILE WAS AUTOGENERATED'):
        if bad in text: problems.append(f'{bad!r} shown on the page')
    if nb := page_notebooks().get(name):
        for line in hidden_snippets(nb):
            if line in text: problems.append(f'hidden cell content shown: {line!r}')

    # Images load.
    broken = page.evaluate('''() => [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)''')
    problems += [f'image does not load: {s}' for s in broken]

    # Internal links resolve, anchors included.
    for href in sorted(set(page.evaluate('() => [...document.querySelectorAll("a[href]")].map(a => a.href)'))):
        if not href.startswith(base_url): continue
        url, frag = urldefrag(href)
        status, body = fetch(url)
        if status != 200: problems.append(f'broken link {href} (HTTP {status})'); continue
        if frag and unquote(frag) not in ids_in(body): problems.append(f'missing anchor {href}')

    problems += [f'request to another host: {u}' for u in page.foreign_requests]
    problems += [f'JavaScript error: {e}' for e in page.console_errors]
    assert not problems, f'{name}:\n  ' + '\n  '.join(problems)

@needs_site
def test_search_finds_gumbel_max(page, base_url):
    load(page, base_url + 'search.html?q=gumbel_max')
    page.wait_for_selector('#search-results ul.search li', timeout=30000)
    results = page.evaluate('() => [...document.querySelectorAll("#search-results ul.search li a")].map(a => a.getAttribute("href"))')
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS/'search-gumbel_max.png'), full_page=True)
    assert any(r.startswith(build.page_name('00_gumbel.ipynb') + '.html') for r in results), results
    assert not page.foreign_requests, page.foreign_requests

# ---------------------------------------------------------------- without a browser
def fetch_file(name): return (SITE/name).read_text()

def modules():
    "The package's public modules (those nbdev indexes in `_modidx.py`)."
    from gumbel_tut._modidx import d
    return sorted(d['syms'])

def public_names():
    "(module, name) of every module's public names."
    return [(m, n) for m in modules() for n in importlib.import_module(m).__all__]

def inventory():
    "objects.inv of the built site: {(role, name): item}, and the version it carries."
    from sphinx.util.inventory import InventoryFile
    with open(SITE/'objects.inv', 'rb') as f: inv = InventoryFile.load(f, '', lambda base, uri: uri)
    items = {(role, name): item for role, entries in inv.items() for name, item in entries.items()}
    return items, {item.project_version for item in items.values()}

@needs_site
def test_objects_inv_has_every_public_name():
    "Other Sphinx projects can link to every public name (intersphinx), at an anchor that exists."
    objects = {name: item.uri for (role, name), item in inventory()[0].items() if role.startswith('py:')}
    missing = [f'{m}.{n}' for m, n in public_names() if f'{m}.{n}' not in objects]
    assert not missing, f'no objects.inv entry for: {missing}'
    for m, n in public_names():
        page, _, anchor = objects[f'{m}.{n}'].partition('#')
        assert f'id="{anchor}"' in (SITE/page).read_text(), objects[f'{m}.{n}']

@needs_site
def test_objects_inv_resolves_the_names_users_write():
    """`gumbel_tut.X` for every name of the public API (and the methods users call on its distributions), a
    `py:module` entry for each module, and the package's version, as intersphinx reads them."""
    import gumbel_tut
    items, versions = inventory()
    objects = {name: item.uri for (role, name), item in items.items() if role.startswith('py:')}
    wanted = [f'gumbel_tut.{n}' for n in gumbel_tut.__all__] + ['gumbel_tut.GumbelSoftmax.rsample', 'gumbel_tut.GumbelSoftmax.log_prob']
    missing = [n for n in wanted if n not in objects]
    assert not missing, f'objects.inv does not resolve: {missing}'
    for name in wanted:
        page, _, anchor = objects[name].partition('#')
        assert f'id="{anchor}"' in (SITE/page).read_text(), objects[name]
    assert objects['gumbel_tut.gumbel_softmax'] == objects[f'{gumbel_tut.gumbel_softmax.__module__}.gumbel_softmax']
    listed = {name for (role, name) in items if role == 'py:module'}
    assert set(modules()) | {'gumbel_tut'} <= listed, set(modules()) - listed
    assert versions == {gumbel_tut.__version__}, versions

@needs_site
def test_api_page_lists_every_public_name_by_page():
    import gumbel_tut
    html = (SITE/'api.html').read_text()
    for m, n in public_names(): assert re.search(rf'href="\w+\.html#{re.escape(m)}\.{n}"', html), f'{m}.{n}: no link on the API page'
    for n in gumbel_tut.__all__: assert re.search(rf'href="\w+\.html#gumbel_tut\.\w+\.{n}"', html), f'gumbel_tut.{n}: no link'
    assert ':py:' not in re.sub(r'<[^>]+>', '', html), 'an unrendered role on the API page'
    sections = re.findall(r'<h2>(?:Chapter \d|Library note): <code[^>]*><span class="pre">gumbel_tut\.', html)
    assert len(sections) == len(modules()), 'one section per module'

@needs_site
def test_navigation_has_the_tutorial_and_the_library_notes():
    "The sidebar's two captions, each over its own pages."
    nav = fetch_file('index.html')
    nav = nav[nav.index('bd-sidebar-primary'):]
    captions = re.findall(r'caption-text">([^<]+)<', nav)
    assert captions[:2] == ['Tutorial', 'Library notes'], captions
    tutorial, notes = nav.split('caption-text">Library notes')[0], nav.split('caption-text">Library notes')[1]
    assert 'href="gumbel.html"' in tutorial and 'href="api.html"' in notes

def tutorial_pages():
    "The pages of the Tutorial part (chapters 00-09), by build.py's names."
    return [build.page_name(p) + '.html' for p in build.chapters(ROOT/'nbs') if build.part(p) == 'Tutorial']

@needs_site
@pytest.mark.parametrize('name', tutorial_pages())
def test_tutorial_code_does_not_scroll_sideways(page, base_url, name):
    "At 1280 px, no visible code block or output of a chapter needs a horizontal scroll bar (100-character lines fit)."
    load(page, base_url + name)
    wide = page.evaluate('''() => [...document.querySelectorAll('article pre')]
        .filter(pre => pre.offsetParent && pre.scrollWidth > pre.clientWidth + 1)
        .map(pre => [pre.clientWidth, pre.scrollWidth, pre.innerText.split('\\n').sort((a, b) => b.length - a.length)[0]])''')
    assert not wide, f'{name}: {len(wide)} code blocks scroll sideways, for example ' + '; '.join(
        f'{w}px shown of {sw}px: {line[:120]!r}' for w, sw, line in wide[:3])

def _pages_with(marker):
    return [p.name for p in SITE.glob('*.html') if marker in p.read_text(errors='replace')] if SITE.exists() else []

@needs_site
def test_simplex_player_responds(page, base_url):
    "Chapter 1's player (matplotlib's to_jshtml, no CDN): moving its slider shows another frame."
    pages = _pages_with('class="anim-slider"')
    assert pages, 'no page has an animation player (class anim-slider)'
    load(page, base_url + sorted(pages)[0])
    slider = page.locator('input.anim-slider').first
    slider.scroll_into_view_if_needed()
    img = page.locator('div.animation img').first
    first = img.get_attribute('src')
    assert first and first.startswith('data:image'), 'the player shows no embedded frame'
    slider.evaluate("s => { s.value = s.max; s.dispatchEvent(new Event('input')); }")
    last = img.get_attribute('src')
    assert last and last != first, 'moving the slider did not change the frame'
    slider.evaluate("s => { s.value = s.min; s.dispatchEvent(new Event('input')); }")
    assert img.get_attribute('src') == first, 'moving the slider back did not restore the first frame'
    assert not page.foreign_requests and not page.console_errors, (page.foreign_requests, page.console_errors)

def test_navigation_parts_without_a_build():
    "build.py's toctrees: 'Tutorial' over the chapters (notebooks 00-09), 'Library notes' over 10-19 and the API page."
    paths = build.chapters(ROOT/'nbs')
    toc = build.navigation(paths)
    tutorial, _, notes = toc.partition(':caption: Library notes')
    assert ':caption: Tutorial' in tutorial and notes
    for p in paths:
        if build.part(p) == 'Tutorial': assert f'\n{build.page_name(p)}\n' in tutorial, p.name
        elif build.part(p) == 'Library notes': assert f'\n{build.page_name(p)}\n' in notes, p.name
    assert '\napi\n' in notes and build.part('00_gumbel.ipynb') == 'Tutorial' and build.part('10_checks.ipynb') == 'Library notes'

def test_modidx_links_reach_site_pages():
    """Every link of nbdev's `_modidx.py` (what other nbdev projects' docs and `show_doc` link to) names a page the
    site has, with the site's form of nbdev's anchor, on the page of the notebook that defines the symbol."""
    from gumbel_tut._modidx import d
    pages = build.site_pages()
    assert d['settings']['doc_host'] + d['settings']['doc_baseurl'] + '/' == PYPROJECT_DOCS
    for module, syms in d['syms'].items():
        for sym, (url, path) in syms.items():
            page, _, anchor = url.partition('#')
            assert page in pages, f'{sym}: {url} is not a page of the site ({sorted(pages)})'
            assert anchor == build.nbdev_anchor(sym.removeprefix(module + '.')), (sym, url)

def test_module_docstrings_link_to_site_pages():
    "Each module's docstring ends with `Docs: <a page of the site>` (nbdev's Markdown twin of the page)."
    for module in modules() + ['gumbel_tut._api']:
        doc = importlib.import_module(module).__doc__
        url = re.search(r'^Docs: (\S+)$', doc, re.M).group(1)
        assert url.startswith(PYPROJECT_DOCS) and url.removeprefix(PYPROJECT_DOCS) in build.site_pages(), (module, url)

@needs_site
def test_nbdev_links_reach_their_anchors():
    "On the built site, nbdev's link to each public name (and each module docstring's page) exists."
    from gumbel_tut._modidx import d
    missing = []
    for m, n in public_names():
        url = d['syms'][m].get(f'{m}.{n}', (None,))[0]
        if url is None: continue  # a constant: nbdev indexes only functions and classes
        page, _, anchor = url.partition('#')
        if f'id="{anchor}"' not in fetch_file(page): missing.append(url)
    assert not missing, missing
    for page in build.site_pages(): assert (SITE/page).is_file(), page

@needs_site
@pytest.mark.parametrize('name', [p for p in site_pages() if p != MISSING])
def test_ids_unique_and_one_search_box(name):
    html = (SITE/name).read_text()
    dup = [i for i, k in collections.Counter(re.findall(r'\sid="([^"]+)"', html)).items() if k > 1]
    assert not dup, f'{name}: ids used twice: {dup}'
    boxes, buttons = len(re.findall(r'<input[^>]*type="search"', html)), html.count('search-button__button')
    assert (boxes, buttons) == (1, 1) or name == 'search.html', f'{name}: {boxes} search boxes, {buttons} search buttons'

# Markdown the notebooks may use: what Jupyter and MyST both read as it is, with nothing translated in between
QUARTO_ONLY = {
    r'^\s*:::': 'a fenced div (Quarto callout / div): use plain Markdown or a heading',
    r'\]\([^)]*\)\{[^}]*\}': 'pandoc attributes on a link or image: `[text](url){...}`',
    r'\]\{[^}]*\}': 'a pandoc span `[text]{.class}`',
    r'^\s*#\|': 'a cell option in a Markdown cell',
    r'\{\{<': 'a Quarto shortcode',
    r'^```\{=\w+\}': 'a raw pandoc block',
    r'^---\s*$\n(?:.*\n)*?\w+:': 'YAML front matter (nbdev reads the title from the first `# ` heading)',
}

@pytest.mark.parametrize('nb_path', sorted((ROOT/'nbs').glob('*.ipynb')), ids=lambda p: p.name)
def test_markdown_is_what_myst_reads(nb_path):
    "Markdown cells (and text written in Markdown outputs' source) use no Quarto/pandoc-only syntax."
    problems = []
    for i, cell in enumerate(nbformat.read(nb_path, as_version=4).cells):
        if cell.cell_type != 'markdown': continue
        text = re.sub(r'(?ms)^(```|~~~).*?^\1', '', cell.source)  # code blocks may show anything
        text = re.sub(r'`[^`\n]+`', '', text)
        for pattern, why in QUARTO_ONLY.items():
            if m := re.search(pattern, text, re.M): problems.append(f'cell {i}: {why}: {m.group(0)!r}')
        if cell.source.count('$$') % 2: problems.append(f'cell {i}: unbalanced $$')
    assert not problems, f'{nb_path.name}:\n  ' + '\n  '.join(problems)
