"""Sphinx configuration for the gumbel_tut website. `python docs/build.py` (`make docs`) runs Sphinx with
this file on the MyST notebooks it writes to docs/_build/src; see build.py for the whole pipeline."""
import json
from pathlib import Path

DOCS = Path(__file__).resolve().parent
BUILD = DOCS/'_build'
_site = json.loads((BUILD/'src'/'_site.json').read_text()) if (BUILD/'src'/'_site.json').exists() else {}

project = 'gumbel_tut'
author = 'gumbel_tut developers'
copyright = 'gumbel_tut developers, Apache-2.0'
html_title = 'gumbel_tut'

extensions = ['myst_nb', 'sphinx-mathjax-offline']  # the latter serves MathJax 3 from _static: no CDN
myst_enable_extensions = ['dollarmath', 'amsmath', 'colon_fence', 'html_image']
myst_dmath_double_inline = True
nb_execution_mode = 'off'          # build.py executed every notebook already, once
nb_render_markdown_format = 'myst'  # show_doc output and other markdown output: math, admonitions
nb_merge_streams = True
exclude_patterns = ['_extra', '**/.ipynb_checkpoints']
# nbdev's show_doc headings are `###` under the page's `#` title: fine in HTML, not a problem to report
suppress_warnings = ['myst.header']

html_theme = 'sphinx_book_theme'
html_static_path = ['_static']
html_css_files = ['gumbel_tut.css']
html_extra_path = [str(BUILD/'src'/'_extra')] if (BUILD/'src'/'_extra').exists() else []
html_copy_source = False       # the notebooks' hidden cells are not published
html_show_sourcelink = False
html_last_updated_fmt = None
html_theme_options = {
    'repository_url': _site.get('repository') or '',
    'use_repository_button': bool(_site.get('repository')),
    'use_download_button': False,  # it would link to _sources/, which is not published
    'use_fullscreen_button': True,
    'home_page_in_toc': True,
    'show_toc_level': 2,
    'show_navbar_depth': 1,
    'navigation_with_keys': False,
}
