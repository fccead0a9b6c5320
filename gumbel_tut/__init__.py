"""Differentiable sampling from categorical distributions: a read-along tutorial and a library.

Samplers (Gumbel-max, Gumbel-top-k), the Gumbel-softmax / Concrete relaxation, gradient estimators
(REINFORCE, straight-through, Gumbel-softmax, Gumbel-Rao) and a categorical VAE, each derived and
tested in one chapter notebook (nbs/NN_*.ipynb):

- `gumbel_tut.gumbel` (chapter 0): the Gumbel distribution, Gumbel-max and Gumbel-top-k
- `gumbel_tut.relax` (chapter 1): the Gumbel-softmax / Concrete relaxation and straight-through
- `gumbel_tut.estimators` (chapter 2): gradient estimators for discrete choices
- `gumbel_tut.data` (chapter 3): data sets for the VAE (needs the [vae] extra)
- `gumbel_tut.vae` (chapter 4): the categorical VAE, its trainer and `gumbel-tut-vae` (needs the [vae] extra)
- library notes (nbs/11-16): `gumbel_tut.fast` (the fast default backend), `gumbel_tut.counter`, `gumbel_tut.triton_backend`,
  `gumbel_tut.backends` (the public `gumbel_softmax` and its backends), `gumbel_tut.bench` (`gumbel-tut-bench`);
  `gumbel_tut.helpers` holds the tutorial's test, table and timing helpers

Every public name is importable from `gumbel_tut`. Website: https://gumbel-tut.github.io/gumbel_tut/"""

__version__ = "0.0.1"

# This file is not exported from a notebook, as in nbdev itself: nbdev-export keeps the docstring above and
# the version (which nbdev-bump-version changes); the public API is exported from nbs/index.ipynb into _api.py.
from ._api import *
from ._api import __all__, __getattr__
