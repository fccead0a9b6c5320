"""Property-based (fuzz) tests of the public samplers and distributions, with Hypothesis.

Whatever the shapes, dtypes, dims, masks, temperatures and generators, every call either returns a finite point of
the simplex (a one-hot for hard samples, valid indices for Gumbel-max / top-k) with finite gradients, or raises a
clear `ValueError`/`TypeError` naming the argument: never NaN, never an error from inside torch. The examples are
fixed by the 'ci' profile of tests/conftest.py; `HYPOTHESIS_PROFILE=explore` searches further."""
import math
import pytest, torch
import torch.nn.functional as F
from hypothesis import given, strategies as st, assume, example

from gumbel_tut import gumbel_noise, gumbel_max, gumbel_topk, gumbel_softmax, GumbelSoftmax, ExpGumbelSoftmax
from gumbel_tut.relax import check_tau
from gumbel_tut.helpers import chi_square_pvalue
from gumbel_tut.estimators import ESTIMATORS, get_estimator

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
CLEAR = (ValueError, TypeError)  # what a bad argument may raise
ALPHA = 1e-4

# ---- strategies ----
@st.composite
def logits_and_dim(draw, max_dims=3, max_side=6, allow_masks=True):
    "A floating tensor of logits (moderate, large or masked entries) and a valid category dim."
    dtype = draw(st.sampled_from(DTYPES))
    shape = tuple(draw(st.lists(st.integers(1, max_side), min_size=1, max_size=max_dims)))
    big = {torch.float16: 6e4, torch.bfloat16: 1e38, torch.float32: 1e38, torch.float64: 1e300}[dtype]
    values = st.one_of(st.floats(-30, 30), st.floats(-big, big), st.just(0.0))
    if allow_masks: values = st.one_of(values, st.just(-math.inf))
    n = math.prod(shape)
    flat = draw(st.lists(values, min_size=n, max_size=n))
    logits = torch.tensor(flat, dtype=torch.float64).reshape(shape).to(dtype)
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    return logits, dim

def all_masked_somewhere(logits, dim): return bool(logits.isneginf().all(dim).any())

taus = st.one_of(st.floats(1e-3, 1e3), st.floats(allow_nan=True, allow_infinity=True),
                 st.sampled_from([0.0, 1e-46, 1e-38, 1.17e-38, 3.4e38, 3.5e38, 10**400, -0.0, 5e-324]),
                 st.integers(-3, 3))

def gen(seed): return torch.Generator().manual_seed(seed)

def assert_simplex(y, logits, dim, hard):
    "A finite point of the simplex along `dim`, of the input's shape and dtype, with no mass on masked categories."
    assert y.shape == logits.shape and y.dtype == logits.dtype
    y64 = y.double()
    assert y64.isfinite().all(), 'non-finite sample'
    assert (y64 >= 0).all() and (y64 <= 1).all()
    tol = {torch.float16: 1e-2, torch.bfloat16: 5e-2, torch.float32: 1e-5, torch.float64: 1e-10}[logits.dtype] * logits.shape[dim]
    assert ((y64.sum(dim) - 1).abs() <= tol).all()
    assert (y64[logits.isneginf()] == 0).all(), 'mass on a masked category'
    if hard: assert ((y64 == 0) | (y64 == 1)).all() and (y64.sum(dim) == 1).all()

# ---- samplers: a finite point of the simplex or a clear error ----
@given(logits_and_dim(), taus, st.booleans(), st.integers(0, 2**32))
@example((torch.zeros(4, 5), -1), 1e-46, False, 0)     # once silently all NaN: 1e-46 is 0 in float32
@example((torch.zeros(4, 5), -1), 10**400, False, 0)   # once an OverflowError
@pytest.mark.parametrize('backend', ['reference', 'fast'])  # the CPU backends
def test_gumbel_softmax_fuzz(backend, ld, tau, hard, seed):
    logits, dim = ld
    try: y = gumbel_softmax(logits, tau=tau, hard=hard, dim=dim, generator=gen(seed), backend=backend)
    except CLEAR as e:
        assert 'tau' in str(e) or 'logits' in str(e), e
        bad_tau = isinstance(tau, bool) or not (isinstance(tau, (int, float)) and 1.1754943508222875e-38 <= tau <= 3.4028234663852886e38)
        assert bad_tau or all_masked_somewhere(logits, dim), f'refused a valid call: {e}'
        return
    assert not all_masked_somewhere(logits, dim)
    assert_simplex(y, logits, dim, hard)

@given(logits_and_dim(), st.floats(0.05, 20), st.booleans(), st.integers(0, 2**32))
@pytest.mark.parametrize('backend', ['reference', 'fast'])
def test_gumbel_softmax_gradients_are_finite(backend, ld, tau, hard, seed):
    logits, dim = ld
    assume(not all_masked_somewhere(logits, dim) and logits.dtype in (torch.float32, torch.float64))
    x = logits.clone().requires_grad_()
    y = gumbel_softmax(x, tau=tau, hard=hard, dim=dim, generator=gen(seed), backend=backend)
    w = torch.randn(y.shape, generator=gen(seed + 1), dtype=y.dtype)
    (y * w).sum().backward()
    assert x.grad.isfinite().all() and (x.grad[logits.isneginf()] == 0).all()

@given(logits_and_dim(), st.integers(0, 2**32))
def test_gumbel_max_fuzz(ld, seed):
    logits, dim = ld
    if all_masked_somewhere(logits, dim):
        with pytest.raises(ValueError, match='all -inf'): gumbel_max(logits, dim=dim, generator=gen(seed))
        return
    idx = gumbel_max(logits, dim=dim, generator=gen(seed))
    d = dim % logits.dim()
    assert idx.dtype == torch.int64 and idx.shape == logits.shape[:d] + logits.shape[d + 1:]
    assert not logits.gather(d, idx.unsqueeze(d)).isneginf().any(), 'drew a masked category'

@given(logits_and_dim(), st.integers(-1, 7), st.integers(0, 2**32))
def test_gumbel_topk_fuzz(ld, k, seed):
    logits, dim = ld
    d = dim % logits.dim()
    n_finite = int(logits.isfinite().sum(d).min())
    try: idx = gumbel_topk(logits, k, dim=dim, generator=gen(seed))
    except CLEAR as e:
        assert k < 1 or k > n_finite, e
        return
    assert 1 <= k <= n_finite and idx.shape[d] == k
    assert not logits.gather(d, idx).isneginf().any()
    assert (idx.sort(d).values.diff(dim=d) > 0).all(), 'drew a category twice'

@given(st.lists(st.integers(0, 5), min_size=0, max_size=3), st.sampled_from(DTYPES + [torch.float8_e8m0fnu, torch.int64]),
       st.integers(0, 2**32))
def test_gumbel_noise_fuzz(shape, dtype, seed):
    try: g = gumbel_noise(tuple(shape), generator=gen(seed), dtype=dtype)
    except CLEAR as e:
        assert dtype in (torch.float8_e8m0fnu, torch.int64) and 'dtype' in str(e)
        return
    assert g.shape == tuple(shape) and g.dtype == dtype and g.isfinite().all()
    assert (g.double() >= -3.7).all() and (g.double() <= 36.8).all()

@given(logits_and_dim(max_dims=2), taus, st.booleans(), st.integers(0, 2**32), st.integers(1, 3))
def test_distributions_fuzz(ld, tau, hard, seed, n):
    logits, _ = ld
    try: d = GumbelSoftmax(tau, logits=logits, hard=hard)
    except CLEAR as e:
        assert 'temperature' in str(e) or 'logits' in str(e), e
        return
    y = d.rsample((n,), generator=gen(seed))
    assert_simplex(y, logits.expand(n, *logits.shape), -1, hard)
    ey = ExpGumbelSoftmax(tau, logits=logits).rsample((n,), generator=gen(seed))
    assert not ey.isnan().any() and not ey.isposinf().any()
    lp = GumbelSoftmax(tau, logits=logits, validate_args=False).log_prob(y.detach())
    assert not lp.isnan().any(), 'NaN log-density'

@given(st.sampled_from(sorted(ESTIMATORS)), logits_and_dim(max_dims=2, allow_masks=True), taus, st.integers(0, 2**32))
def test_estimator_sample_fuzz(name, ld, tau, seed):
    logits, _ = ld
    est = get_estimator(name)
    try: z = est.sample(logits, tau, generator=gen(seed))
    except CLEAR as e:
        assert 'tau' in str(e) or 'logits' in str(e), e
        return
    assert z.shape == (est.n_samples, *logits.shape)
    assert_simplex(z, logits.expand_as(z), -1, est.hard)

# ---- bad arguments of every kind: a clear error, never torch's ----
SEED_MESSAGE = r'generator must be a torch.Generator or None, got int generator=42; for a seed use torch.Generator\(\).manual_seed\(seed\)'

@pytest.mark.parametrize('backend', ['reference', 'fast'])
@pytest.mark.parametrize('shape', [(3,), (64, 64), (300, 300)])   # the fast backend's small and general paths
@pytest.mark.parametrize('hard', [False, True])
def test_a_seed_as_generator_gets_our_message(backend, shape, hard):
    "Regression: the fast backend passed a seed on to torch.rand_like, whose TypeError is torch's, not ours."
    for tau in (0.5, 0.37):   # a temperature seen before, and one seen first
        with pytest.raises(ValueError, match=SEED_MESSAGE):
            gumbel_softmax(torch.zeros(shape), tau=tau, hard=hard, generator=42, backend=backend)

BAD_DIMS = [1.0, None, True, '0', 2**70]
@pytest.mark.parametrize('dim', BAD_DIMS)
@pytest.mark.parametrize('fn', [lambda x, d: gumbel_max(x, dim=d), lambda x, d: gumbel_topk(x, 1, dim=d)])
def test_bad_dims(fn, dim):
    with pytest.raises(CLEAR, match='dim'): fn(torch.zeros(2, 3), dim)

@pytest.mark.parametrize('call,msg', [
    (lambda: gumbel_topk(torch.zeros(0, 5), 1), None),                              # an empty batch: no error at all
    (lambda: gumbel_max(torch.zeros(2, 3, device='meta')), 'meta'),
    (lambda: gumbel_softmax(torch.zeros(2, 3, device='meta')), 'meta'),
    (lambda: gumbel_softmax(torch.zeros(2, 3), tau=10**400), 'tau'),
    (lambda: gumbel_softmax(torch.zeros(2, 3), tau=1e-46), 'usable range'),
    (lambda: gumbel_softmax(torch.zeros(64, 64).index_fill_(1, torch.tensor([3]), -math.inf), tau=3.5e38), 'usable range'),  # fast-path size
    (lambda: gumbel_max(torch.zeros(3), generator=42), SEED_MESSAGE),
    (lambda: gumbel_softmax(torch.zeros(3), generator=42), SEED_MESSAGE),
    (lambda: gumbel_noise(3, dtype=torch.float8_e8m0fnu), 'dtype'),
    (lambda: get_estimator('gs').sample(torch.zeros(2, 3), 1e-46), 'usable range'),
    (lambda: get_estimator('gumbel-rao').sample(torch.zeros(2, 3), 3.5e38), 'usable range'),
])
def test_small_unclear_errors_are_clear(call, msg):
    if msg is None: call(); return
    with pytest.raises(CLEAR, match=msg): call()

def test_log_prob_of_an_integer_one_hot():
    "What F.one_hot returns (int64) is accepted as a point of the simplex."
    d = GumbelSoftmax(0.5, logits=torch.zeros(4, 3))
    v = F.one_hot(torch.tensor([0, 1, 2, 0]), 3)
    assert torch.equal(d.log_prob(v), d.log_prob(v.float()))

def test_check_tau_names_the_usable_range():
    for bad in (1e-46, 3.5e38, 10**400):
        with pytest.raises(ValueError, match=r'usable range in float32 is \[1.175e-38, 3.403e\+38\]'): check_tau(bad)
    assert check_tau(1e-300, dtype=torch.float64) == 1e-300

# ---- the routes to a sample agree in distribution ----
def test_sampling_routes_agree_in_distribution():
    "argmax of gumbel_softmax (hard and soft, each eager backend), GumbelSoftmax(hard), gumbel_max and every estimator draw softmax(logits)."
    logits = torch.tensor([1.0, -0.5, float('-inf'), 0.3, 2.0])
    probs = torch.softmax(logits.double(), 0)
    rows, calls = 400, 50  # small calls; no route compiles
    x = logits.expand(rows, -1)
    routes = {
        'gumbel_max': lambda g: gumbel_max(x, generator=g),
        **{f'gumbel_softmax hard, {b}': (lambda b: lambda g: gumbel_softmax(x, tau=0.5, hard=True, generator=g, backend=b).argmax(-1))(b)
           for b in ('reference', 'fast')},
        **{f'gumbel_softmax soft, {b}': (lambda b: lambda g: gumbel_softmax(x, tau=1e-3, generator=g, backend=b).argmax(-1))(b)
           for b in ('reference', 'fast')},
        'GumbelSoftmax hard': lambda g: GumbelSoftmax(0.5, logits=logits, hard=True).rsample((rows,), generator=g).argmax(-1),
        **{f'estimator {k}': (lambda k: lambda g: get_estimator(k).sample(x, 0.5, generator=g)[0].argmax(-1))(k)
           for k in ('st', 'st-gs', 'gumbel-rao', 'reinforce')},
    }
    for i, (name, draw) in enumerate(routes.items()):
        g = gen(1000 + i)
        counts = sum(torch.bincount(draw(g), minlength=5) for _ in range(calls))
        assert chi_square_pvalue(counts, probs) > ALPHA, name
