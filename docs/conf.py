"""Sphinx configuration of the gumbel_tut website; `python docs/build.py` (`make docs`) stages the notebooks and runs
Sphinx with it. Besides settings: a transform that links backticked public names to their entries, and one that gives
each entry nbdev's anchor too (the one `gumbel_tut/_modidx.py` links to)."""
import importlib, importlib.util, tomllib
from pathlib import Path
from docutils import nodes
from sphinx import addnodes
from sphinx.transforms import SphinxTransform
from sphinx.transforms.post_transforms import SphinxPostTransform

DOCS = Path(__file__).resolve().parent
BUILD = DOCS/'_build'
PYPROJECT = tomllib.loads((DOCS.parent/'pyproject.toml').read_text())

def _load_build():
    "docs/build.py as a module (the page names and anchor form are defined there)."
    spec = importlib.util.spec_from_file_location('gumbel_tut_docs_build', DOCS/'build.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

build = _load_build()

project = 'gumbel_tut'
release = version = importlib.import_module('gumbel_tut').__version__  # in objects.inv, for intersphinx users
author = 'gumbel_tut developers'
copyright = 'gumbel_tut developers, Apache-2.0'
html_title = 'gumbel_tut'

extensions = ['myst_nb', 'sphinx.ext.viewcode', 'sphinx_exercise', 'sphinx_togglebutton']
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
    """Short name (as the prose writes it, `gumbel_max` or `GumbelSoftmax.rsample`) -> full dotted name: the public API
    first (`gumbel_tut.gumbel_softmax`), then every module's public names and their classes' methods."""
    import inspect, gumbel_tut
    from gumbel_tut._modidx import d
    names = {name: f'gumbel_tut.{name}' for name in gumbel_tut.__all__}
    for module in map(importlib.import_module, d['syms']):
        for name in module.__all__:
            obj = getattr(module, name)
            names.setdefault(name, f'{module.__name__}.{name}')
            if inspect.isclass(obj):
                for m in vars(obj):
                    if not m.startswith('_'): names.setdefault(f'{name}.{m}', f'{names[name]}.{m}')
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

class NbdevAnchors(SphinxTransform):
    "Each entry also answers to nbdev's anchor (`relax.html#gumbelsoftmax.rsample`), unless that id is taken on the page."
    default_priority = 500
    def apply(self):
        for sig in self.document.findall(addnodes.desc_signature):
            if not sig['ids'] or not sig.get('module', '').startswith('gumbel_tut') or not sig.get('fullname'): continue
            anchor = build.nbdev_anchor(sig['fullname'])
            if anchor not in self.document.ids:
                sig['ids'].append(anchor)
                self.document.ids[anchor] = sig

class UniqueExerciseIds(SphinxPostTransform):
    "sphinx-exercise gives every exercise's and solution's body the same id (`exercise-content`, `solution-content`):"
    " numbered per page here, after its own post-transforms, so that a page with several exercises has unique ids."
    default_priority = 999
    def run(self, **kwargs):
        counts = {}
        for section in self.document.findall(nodes.section):
            for i, id_ in enumerate(section['ids']):
                if id_ in ('exercise-content', 'solution-content'):
                    counts[id_] = counts.get(id_, 0) + 1
                    section['ids'][i] = f'{id_}-{counts[id_]}'

def setup(app):
    app.gumbel_names = public_names()
    app.add_post_transform(UniqueExerciseIds)
    app.add_transform(LinkPublicNames)
    app.add_transform(NbdevAnchors)
