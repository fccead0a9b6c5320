"""Sphinx configuration of the gumbel_tut website; `python docs/build.py` (`make docs`) stages the notebooks and runs
Sphinx with it. Besides settings: a transform that links backticked public names to their entries."""
import importlib.util, tomllib
from pathlib import Path
from docutils import nodes
from sphinx import addnodes
from sphinx.transforms import SphinxTransform

DOCS = Path(__file__).resolve().parent
BUILD = DOCS/'_build'
PYPROJECT = tomllib.loads((DOCS.parent/'pyproject.toml').read_text())

project = 'gumbel_tut'
author = 'gumbel_tut developers'
copyright = 'gumbel_tut developers, Apache-2.0'
html_title = 'gumbel_tut'

extensions = ['myst_nb', 'sphinx.ext.viewcode']
myst_enable_extensions = ['dollarmath', 'amsmath']
myst_dmath_double_inline = True
myst_heading_anchors = 3

# Execution: jupyter-cache, keyed on each notebook's code cells (build.py adds a hash of the package sources to them)
nb_execution_mode = 'cache'
nb_execution_cache_path = str(BUILD/'jupyter_cache')
nb_execution_timeout = 1800
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_execution_in_temp = False
nb_render_markdown_format = 'myst'  # Markdown outputs (IPython.display.Markdown) with math
nb_merge_streams = True

suppress_warnings = ['myst.header']  # chapters use ### under their # title

html_theme = 'sphinx_book_theme'
# MathJax 3 served from this site, not a CDN: the copy the sphinx-mathjax-offline package ships (its extension
# itself would make Sphinx read serially)
html_static_path = ['_static', importlib.util.find_spec('sphinx-mathjax-offline').submodule_search_locations[0] + '/static']
mathjax_path = 'mathjax/tex-chtml.js'
html_css_files = ['gumbel_tut.css']
html_copy_source = False  # the notebooks' hidden cells are not published
html_show_sourcelink = False
# one search: the article header's button (and its dialog), none in the sidebar or the hidden navbar
html_sidebars = {'**': ['navbar-logo.html', 'icon-links.html', 'sbt-sidebar-nav.html']}
html_theme_options = {'repository_url': PYPROJECT['project']['urls']['Repository'], 'use_repository_button': True,
                      'navbar_persistent': [], 'use_download_button': False, 'home_page_in_toc': True, 'show_toc_level': 2, 'navigation_with_keys': False}

def public_names():
    "Short name (as the prose writes it, `gumbel_max` or `GumbelSoftmax.rsample`) -> full dotted name."
    import importlib, inspect, gumbel_tut
    names = {}
    for name in gumbel_tut.__all__:
        obj = getattr(gumbel_tut, name)
        module = getattr(obj, '__module__', None) if inspect.isclass(obj) or inspect.isfunction(obj) else None
        module = module if module and module.startswith('gumbel_tut.') else next(
            m.__name__ for m in map(importlib.import_module, [f'gumbel_tut.{c}' for c in ('gumbel', 'relax', 'estimators', 'data', 'vae', 'fast', 'counter', 'triton_backend', 'backends', 'bench')])
            if name in m.__all__)
        names[name] = f'{module}.{name}'
        if inspect.isclass(obj):
            names.update({f'{name}.{m}': f'{module}.{name}.{m}' for m in vars(obj) if not m.startswith('_')})
    return names

class LinkPublicNames(SphinxTransform):
    "Inline code naming a public object (`gumbel_max`, `gumbel_max()`) links to its entry, as nbdev's doc links do."
    default_priority = 500
    def apply(self):
        names = self.app.gumbel_names
        for lit in list(self.document.findall(nodes.literal)):
            name = lit.astext().removesuffix('()')
            if name not in names or isinstance(lit.parent, (nodes.reference, addnodes.pending_xref, addnodes.desc_signature)): continue
            ref = addnodes.pending_xref('', refdomain='py', reftype='obj', reftarget=names[name], refexplicit=True,
                                        refwarn=False, refdoc=self.env.docname)
            lit.replace_self(ref)
            ref += lit

def setup(app):
    app.gumbel_names = public_names()
    app.add_transform(LinkPublicNames)
