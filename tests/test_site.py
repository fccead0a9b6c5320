"""The built website (docs/_build/html, from `make docs`) in a real browser: headless Debian Chromium driven
by Playwright, over http://127.0.0.1, with every request to another host refused and reported.

For every page: math is typeset by the local MathJax, no raw TeX, no `#|` directives, no content of hidden
cells, every image loads, every internal link (and its #anchor) resolves, no request leaves 127.0.0.1.
Search finds `gumbel_max`. A full-page screenshot of each page goes to docs/_build/screenshots/.
`make test` builds the site first (that build is where every notebook is executed)."""
import functools, http.server, json, re, threading, urllib.error, urllib.request
from pathlib import Path
from urllib.parse import urldefrag, urlsplit, unquote
import nbformat, pytest

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT/'docs'/'_build'/'html'
SHOTS = ROOT/'docs'/'_build'/'screenshots'
CHROMIUM = '/usr/bin/chromium'
CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync']
SITE_INFO = ROOT/'docs'/'_build'/'src'/'_site.json'
MISSING = 'run `make docs` first: docs/_build/html is missing'

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
    return {p['docname'] + '.html': p['notebook'] for p in info['pages']}

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

def test_search_finds_gumbel_max(page, base_url):
    load(page, base_url + 'search.html?q=gumbel_max')
    page.wait_for_selector('#search-results ul.search li', timeout=30000)
    results = page.evaluate('() => [...document.querySelectorAll("#search-results ul.search li a")].map(a => a.getAttribute("href"))')
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS/'search-gumbel_max.png'), full_page=True)
    assert any(r.startswith('gumbel.html') for r in results), results
    assert not page.foreign_requests, page.foreign_requests
