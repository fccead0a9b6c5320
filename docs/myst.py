"""Turn nbdev-processed notebooks (written for Quarto) into MyST notebooks for Sphinx + myst-nb.

nbdev's processors leave Quarto syntax that Sphinx does not know; each function here converts one kind:
- the raw YAML front-matter cell -> a `# title` cell, the description, and the page name (`output-file`);
- `#| echo/output/include/code-fold` cell options -> myst-nb tags (`remove-input`, `remove-output`,
  `remove-cell`, `hide-input`); `#| fig-cap` -> a myst-nb figure caption;
- `::: {.callout-*}` fences -> MyST admonitions, other `::: {.class}` fences -> containers;
- pandoc attributes on links/images (`[a](u){target="_blank"}`) -> HTML;
- links to the published site (`[project.urls].Documentation`), to notebooks (`01_relax.ipynb`) and to
  the GitHub source of the package -> relative links inside this site (source lines go to local pages);
- `show_doc` headings get the anchor nbdev's link index uses (`page.html#gumbel_max`);
- nbdev's non-standard `has_sd` cell key is dropped.
"""
import html, re
from pathlib import Path
import yaml
from nbdev.processors import FilterDefaults, exec_show_docs

ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIR = '_source'  # local, highlighted copies of the package source, for the API "source" links

class NbdevDocProcs(FilterDefaults):
    "nbdev's doc processors, minus `exec_show_docs`: the notebook was already executed once, in full."
    def base_procs(self): return [p for p in super().base_procs() if p is not exec_show_docs]

# ---------------------------------------------------------------- markdown
_re_fence_open = re.compile(r'^(\s*)(:{3,})\s*\{([^}]*)\}\s*$')
_re_fence_close = re.compile(r'^(\s*)(:{3,})\s*$')
_re_code_fence = re.compile(r'^\s*(`{3,}|~{3,})')
_CALLOUTS = {'note', 'tip', 'warning', 'caution', 'important'}

def _parse_attrs(s):
    "Pandoc attributes `{#id .cls key=\"v\" key2=v2}` -> (id, classes, dict)."
    ident, classes, kv = None, [], {}
    for m in re.finditer(r'''([\w-]+)=(?:"([^"]*)"|'([^']*)'|(\S+))|([.#])([\w-]+)''', s):
        if m.group(5) == '.': classes.append(m.group(6))
        elif m.group(5) == '#': ident = m.group(6)
        else: kv[m.group(1)] = next(g for g in m.group(2, 3, 4) if g is not None)
    return ident, classes, kv

def convert_fences(text):
    "Quarto/pandoc fenced divs -> MyST colon-fence directives (callouts -> admonitions)."
    out, lines, in_code, i = [], text.split('\n'), None, 0
    while i < len(lines):
        line = lines[i]
        m = _re_code_fence.match(line)
        if m:
            if in_code is None: in_code = m.group(1)
            elif m.group(1).startswith(in_code[0]) and len(m.group(1)) >= len(in_code): in_code = None
        if in_code is None and (m := _re_fence_open.match(line)):
            indent, colons, attrs = m.groups()
            ident, classes, kv = _parse_attrs(attrs)
            kind = next((c[len('callout-'):] for c in classes if c.startswith('callout-')), None)
            if kind is not None:
                kind = kind if kind in _CALLOUTS else 'note'
                title = kv.get('title')
                # Quarto uses a heading as the first line of a callout as its title
                if title is None and i+1 < len(lines) and (h := re.match(r'^\s*#{1,6}\s+(.*)$', lines[i+1])):
                    title, i = h.group(1).strip(), i+1
                extra = ['dropdown'] if kv.get('collapse', '').lower() == 'true' else []
                if title:
                    out += [f'{indent}{colons}{{admonition}} {title}', f'{indent}:class: {" ".join([kind] + extra)}']
                else:
                    out.append(f'{indent}{colons}{{{kind}}}')
                    if extra: out.append(f'{indent}:class: {" ".join(extra)}')
            else:
                out.append(f'{indent}{colons}{{container}} {" ".join(classes)}'.rstrip())
                if ident: out.append(f'{indent}:name: {ident}')
            i += 1; continue
        out.append(line); i += 1
    return '\n'.join(out)

_re_link = re.compile(r'(?<!\\)(!?)\[((?:[^\[\]]|\[[^\]]*\])*)\]\(\s*<?([^\s)>]*)>?(?:\s+"([^"]*)")?\s*\)(\{[^}\n]*\})?')
_re_span = re.compile(r'(?<![\]!\\])\[([^\[\]\n]+)\]\{([^}\n]*)\}')
_OK_ATTRS = {'target', 'style', 'rel', 'title', 'width', 'height', 'alt', 'class', 'id'}

def _md_inline_to_html(s):
    "Backticked code in link text -> <code> (the text now sits inside raw HTML)."
    return re.sub(r'`([^`]+)`', lambda m: f'<code>{html.escape(m.group(1))}</code>', s)

class LinkMap:
    "Rewrites URLs that point into this project: the published site, notebooks, and package source."
    def __init__(self, cfg, pages, api_anchors=None):
        self.doc_url = (cfg.doc_host.rstrip('/') + '/' + cfg.doc_baseurl.strip('/') + '/').replace('//', '/').replace(':/', '://') if cfg.get('doc_host') else None
        self.src_url = f"{cfg.git_url.rstrip('/')}/blob/{cfg.branch}/" if cfg.get('git_url') else None
        self.pages = pages  # notebook file name -> page html name
        self.api_anchors = api_anchors or {}  # page html name -> anchors of its show_doc entries

    def __call__(self, url):
        "(new url, is_internal)"
        if self.doc_url and url.startswith(self.doc_url): url = url[len(self.doc_url):] or 'index.html'
        if self.src_url and url.startswith(self.src_url):
            path, _, frag = url[len(self.src_url):].partition('#')
            if path.endswith('.py') and (ROOT/path).is_file():
                line = re.fullmatch(r'L(\d+)', frag)
                return f'{SOURCE_DIR}/{path}.html' + (f'#L-{line.group(1)}' if line else ''), True
            return url, False
        if re.match(r'^[a-zA-Z][\w+.-]*:', url) or url.startswith('//'): return url, False
        path, sep, frag = url.partition('#')
        name = path.rsplit('/', 1)[-1]
        if name in self.pages: return self.pages[name] + sep + frag, True
        if name.endswith('.html') or (not path and frag) or name.endswith('.md'): return url, True
        return url, False

def convert_links(text, linkmap):
    "Pandoc link/image attributes -> HTML; links into this project -> relative HTML links."
    def link(m):
        bang, label, url, title, attrs = m.groups()
        new, internal = linkmap(url)
        page, _, frag = new.partition('#')
        if internal and frag and re.fullmatch(r'`[\w.]+`', label) and page in linkmap.api_anchors and frag not in linkmap.api_anchors[page]:
            return label  # nbdev links every indexed name, private helpers too: no show_doc entry to point to
        if not attrs and not internal: return m.group(0)
        ident, classes, kv = _parse_attrs(attrs[1:-1]) if attrs else (None, [], {})
        kv = {k: v for k, v in kv.items() if k in _OK_ATTRS}
        if classes: kv['class'] = ' '.join(classes)
        if ident: kv['id'] = ident
        if title: kv['title'] = title
        if kv.get('target') == '_blank': kv.setdefault('rel', 'noopener')
        a = ''.join(f' {k}="{html.escape(v, quote=True)}"' for k, v in kv.items())
        if bang: return f'<img src="{html.escape(new, quote=True)}" alt="{html.escape(label, quote=True)}"{a}>'
        return f'<a href="{html.escape(new, quote=True)}"{a}>{_md_inline_to_html(label)}</a>'
    text = _re_link.sub(link, text)
    # A backticked notebook name (`01_relax.ipynb`) links to its page
    text = re.sub(r'(?<![\[>])`([\w.-]+\.ipynb)`(?!\]|</a>)', lambda m: f'<a href="{linkmap.pages[m.group(1)]}"><code>{m.group(1)}</code></a>'
                  if m.group(1) in linkmap.pages else m.group(0), text)
    def span(m):
        ident, classes, kv = _parse_attrs(m.group(2))
        a = (f' class="{" ".join(classes)}"' if classes else '') + (f' id="{ident}"' if ident else '')
        return f'<span{a}>{_md_inline_to_html(m.group(1))}</span>'
    text = _re_span.sub(span, text)
    # URLs of the published site inside raw HTML
    if linkmap.doc_url: text = re.sub(r'(href|src)="' + re.escape(linkmap.doc_url), r'\1="', text)
    return text

def _outside_code(text, f):
    "Apply `f` to the parts of markdown `text` that are not fenced code blocks."
    parts, buf, in_code = [], [], None
    for line in text.split('\n'):
        m = _re_code_fence.match(line)
        if in_code is None and m:
            parts.append((False, buf)); buf, in_code = [line], m.group(1)
        elif in_code is not None and m and m.group(1).startswith(in_code[0]) and len(m.group(1)) >= len(in_code) and not line.strip()[len(m.group(1)):].strip():
            buf.append(line); parts.append((True, buf)); buf, in_code = [], None
        else: buf.append(line)
    parts.append((in_code is not None, buf))
    return '\n'.join('\n'.join(b) if code else f('\n'.join(b)) for code, b in parts if b or not code)

def convert_md(text, linkmap):
    text = convert_fences(text)
    return _outside_code(text, lambda t: convert_links(t, linkmap))

_re_heading = re.compile(r'^(#{1,6})\s+(.+?)\s*#*\s*$', re.MULTILINE)

def _anchor(title):
    "The anchor nbdev's index uses for a documented name: its heading text, lower-cased."
    t = re.sub(r'<[^>]+>', '', title)
    t = re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', t)
    return t.replace('`', '').replace('\\', '').strip().lower()

def _showdoc_headings(output):
    md = output.get('data', {}).get('text/markdown', '')
    md = ''.join(md) if isinstance(md, list) else md
    return [m.group(2) for m in _re_heading.finditer(re.sub(r'```.*?```', '', md, flags=re.S))]

def convert_showdoc_md(text, linkmap):
    "A `show_doc` output: drop the leading rule (CSS draws it), anchor each heading as nbdev's link index expects."
    text = re.sub(r'^\s*---\s*\n', '', text)
    text = _outside_code(text, lambda t: _re_heading.sub(lambda m: f'{m.group(1)} <span id="{html.escape(_anchor(m.group(2)), quote=True)}"></span>{m.group(2)}', t))
    return convert_md(text, linkmap)

# ---------------------------------------------------------------- cells
_re_opt = re.compile(r'^\s*#\|\s*([\w-]+)\s*:\s*(.*?)\s*$')

def _cell_options(source):
    "Leading `#| key: value` lines -> (dict, rest of the source)."
    lines, opts = source.split('\n'), {}
    n = 0
    while n < len(lines) and (lines[n].strip().startswith('#|') or (opts and not lines[n].strip() and n+1 < len(lines) and lines[n+1].strip().startswith('#|'))):
        if (m := _re_opt.match(lines[n])): opts[m.group(1)] = yaml.safe_load(m.group(2)) if m.group(2) else True
        n += 1
    return opts, '\n'.join(lines[n:])

def _src(cell): return ''.join(cell['source']) if isinstance(cell['source'], list) else cell['source']

def convert_code_cell(cell, linkmap):
    opts, source = _cell_options(_src(cell))
    tags = set(cell.get('metadata', {}).get('tags', []))
    false = lambda k: opts.get(k) is False or str(opts.get(k)).lower() == 'false'
    if false('include'): tags.add('remove-cell')
    if false('echo'): tags.add('remove-input')
    if false('output'): tags.add('remove-output')
    if opts.get('code-fold') is True or str(opts.get('code-fold')).lower() == 'true': tags.add('hide-input')
    is_showdoc = bool(re.match(r'\s*show_doc\b', source))
    if is_showdoc: tags.update(['remove-input', 'showdoc'])  # the page shows the API entry, not the call
    meta = {k: v for k, v in cell.get('metadata', {}).items() if k not in ('execution', 'language', 'tags')}
    if tags: meta['tags'] = sorted(tags)
    if opts.get('fig-cap'): meta.setdefault('mystnb', {})['figure'] = {'caption': str(opts['fig-cap'])}
    for o in cell.get('outputs', []):
        data = o.get('data', {})
        if 'text/markdown' in data:
            md = ''.join(data['text/markdown']) if isinstance(data['text/markdown'], list) else data['text/markdown']
            data['text/markdown'] = (convert_showdoc_md if is_showdoc else convert_md)(md, linkmap)
    new = {k: v for k, v in cell.items() if k != 'has_sd'}
    new.update(source=source.strip('\n'), metadata=meta)
    return new

def md_cell(source): return {'cell_type': 'markdown', 'metadata': {}, 'source': source}

def front_matter(nb):
    "Pop nbdev's raw YAML front-matter cell and return it as a dict."
    for i, c in enumerate(nb['cells']):
        s = _src(c).strip()
        if c['cell_type'] == 'raw' and s.startswith('---'):
            nb['cells'].pop(i)
            return yaml.safe_load(s.strip('-\n')) or {}
    return {}

def page_name(nb_name, fm):
    from nbdev.doclinks import nbpath2html
    return fm.get('output-file') or nbpath2html(Path(nb_name)).name

def launch_links(nb_name, cfg):
    "Links to open the notebook: Google Colab (from GitHub) and a local JupyterLab started by `make lab`."
    colab = f'https://colab.research.google.com/github/{cfg.user}/{cfg.repo}/blob/{cfg.branch}/{cfg.nbs_path.name}/{nb_name}'
    lab = f'http://localhost:8888/lab/tree/{nb_name}'
    return (f'<p class="nb-launch">Open this notebook: '
            f'<a class="nb-launch-colab" href="{colab}" rel="noopener">in Colab</a> · '
            f'<a class="nb-launch-lab" href="{lab}" title="after `make lab`">in JupyterLab</a> '
            f'<span class="nb-launch-hint">(local: run <code>make lab</code> first)</span> · '
            f'source: <code>{cfg.nbs_path.name}/{nb_name}</code></p>')

def to_myst(processed, src_dir, cfg):
    """Write one MyST notebook per page into `src_dir`; the home page gets the site's (hidden) toctree.
    Returns [(page docname, title, notebook file name)] in chapter order, home page first."""
    metas = {}
    for path, nb in processed.items():
        fm = front_matter(nb)
        metas[path] = fm, page_name(Path(path).name, fm)
    anchors = {html_name: {_anchor(h) for c in processed[p]['cells'] if c['cell_type'] == 'code' and re.match(r'\s*(#\|.*\n\s*)*show_doc\b', _src(c))
                           for o in c.get('outputs', []) for h in _showdoc_headings(o)} for p, (fm, html_name) in metas.items()}
    linkmap = LinkMap(cfg, {Path(p).name: html_name for p, (fm, html_name) in metas.items()}, anchors)
    pages = []
    for path, nb in processed.items():
        fm, html_name = metas[path]
        docname = Path(html_name).stem
        title = str(fm.get('title') or docname)
        cells = []
        for c in nb['cells']:
            if c['cell_type'] == 'markdown':
                s = _src(c)
                if s.strip().startswith('<!-- WARNING: THIS FILE WAS AUTOGENERATED'): continue
                cells.append({**c, 'source': convert_md(s, linkmap)})
            elif c['cell_type'] == 'code': cells.append(convert_code_cell(c, linkmap))
            # other raw cells are Quarto/LaTeX passthrough: nothing to show in HTML
        head = [md_cell(f'# {title}')]
        if fm.get('description'): head.append(md_cell(f':::{{container}} nb-description\n{convert_md(str(fm["description"]), linkmap)}\n:::'))
        head.append(md_cell(launch_links(Path(path).name, cfg)))
        nb['cells'] = head + cells
        nb.setdefault('metadata', {}).pop('widgets', None)
        pages.append((docname, title, Path(path).name))
    pages.sort(key=lambda p: (p[0] != 'index', p[2]))
    if len(pages) > 1:
        toc = '```{toctree}\n:hidden:\n:maxdepth: 2\n\n' + '\n'.join(d for d, _, _ in pages[1:]) + '\n```'
        home = next(nb for p, nb in processed.items() if metas[p][1] == 'index.html')
        home['cells'].append(md_cell(toc))
    import nbformat
    for path, nb in processed.items():
        nb['nbformat'], nb['nbformat_minor'] = 4, 5
        for i, c in enumerate(nb['cells']): c['id'] = f'c{i:03d}'  # cells added here have none
        nbformat.write(nbformat.from_dict(nb), str(Path(src_dir)/(Path(metas[path][1]).stem + '.ipynb')))
    return pages

# ---------------------------------------------------------------- extra pages
def write_source_pages(extra_dir, cfg):
    "Highlighted copies of the package modules with line anchors `#L-<n>`: targets of the API 'source' links."
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer
    lib = Path(cfg.lib_path)
    fmt = HtmlFormatter(linenos='inline', lineanchors='L', anchorlinenos=True, cssclass='highlight')
    css = fmt.get_style_defs('.highlight')
    for py in sorted(lib.rglob('*.py')):
        rel = py.relative_to(ROOT).as_posix()
        dest = Path(extra_dir)/SOURCE_DIR/(rel + '.html')
        dest.parent.mkdir(parents=True, exist_ok=True)
        up = '../' * (rel.count('/') + 1)
        gh = f"{cfg.git_url.rstrip('/')}/blob/{cfg.branch}/{rel}" if cfg.get('git_url') else None
        dest.write_text(f'''<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{rel} - {cfg.lib_name} source</title>
<style>body{{font-family:system-ui,sans-serif;margin:1.5rem auto;max-width:60rem;padding:0 1rem}}
pre{{font-size:.85rem;line-height:1.4}} .highlight .linenos{{color:#999;user-select:none}}
:target{{background:#fff3b0}} {css}</style></head>
<body><p><a href="{up}index.html">{cfg.lib_name}</a> / source / <code>{rel}</code>
{f'(<a href="{gh}" rel="noopener">on GitHub</a>)' if gh else ''}. Generated from the notebooks by nbdev: edit <code>nbs/</code>, not this file.</p>
{highlight(py.read_text(), PythonLexer(), fmt)}</body></html>
''')

def site_info(pages, cfg, nbs_dir):
    return {'pages': [{'docname': d, 'title': t, 'notebook': n} for d, t, n in pages], 'nbs': str(nbs_dir),
            'repository': cfg.get('git_url')}
