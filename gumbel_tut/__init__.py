"""Differentiable sampling from categorical distributions: a read-along tutorial and a library.

Samplers (Gumbel-max, Gumbel-top-k), the Gumbel-softmax / Concrete relaxation, gradient estimators
(REINFORCE, straight-through, Gumbel-softmax, Gumbel-Rao, REBAR, RELAX) and a categorical VAE, each derived and
tested in one notebook (nbs/NN_*.ipynb).

The public API is `gumbel_tut.__all__`, the same with or without extras: the samplers, the relaxed distributions
and their log-densities, straight-through, the estimators, temperature schedules, the backend and validation
switches, and the VAE's entry points (imported on first use; they need the [vae] extra). Everything else lives in
its module:

- tutorial chapters: `gumbel_tut.gumbel` (0: Gumbel-max, Gumbel-top-k), `gumbel_tut.relax` (1: the relaxation,
  straight-through, schedules), `gumbel_tut.estimators` (2: gradient estimators), `gumbel_tut.data` (3: data sets),
  `gumbel_tut.vae` (4: the VAE, its objective and evaluation) and `gumbel_tut.decoding` (5: sampling tokens from a
  language model); data and VAE need the [vae] extra
- library notes: `gumbel_tut.checks` (10: input validation and the validation switch), `gumbel_tut.helpers` (11: the
  tutorial's helpers), `gumbel_tut.fast` (12: the CPU fast path), `gumbel_tut.counter` (13: counter-based noise),
  `gumbel_tut.triton_backend` (14: the Triton kernels), `gumbel_tut.backends` (15: choosing a backend),
  `gumbel_tut.bench` (16: the benchmark and `gumbel-tut-bench`), `gumbel_tut.distributions` (17: the relaxed
  distributions), 18 (where we differ from PyTorch), `gumbel_tut.estimator_base` (19: the estimator protocol),
  `gumbel_tut.idx` (20: the IDX format), `gumbel_tut.train` (21: the trainer) and `gumbel_tut.cli` (22:
  `gumbel-tut-vae`), 23 (token sampling, measured)

Website: https://gumbel-tut.github.io/gumbel_tut/"""

__version__ = "0.1.0"

# This file is not exported from a notebook, as in nbdev itself: nbdev-export keeps the docstring above and
# the version (which nbdev-bump-version changes); the public API is exported from nbs/index.ipynb into _api.py.
from typing import TYPE_CHECKING as _TYPE_CHECKING
from . import _api
from ._api import __all__, __getattr__

if _TYPE_CHECKING: from ._api import *  # what type checkers see: every public name
else:  # not a star import, which would touch (and so import) the VAE's names that __getattr__ loads on first use
    globals().update((_name, getattr(_api, _name)) for _name in __all__ if _name not in _api._LAZY)
