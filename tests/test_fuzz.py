"""Property-based (fuzz) tests of the public samplers and distributions, with Hypothesis.

Whatever the shapes, dtypes, dims, masks, temperatures and generators, every call either returns a finite point of
the simplex (a one-hot for hard samples, valid indices for Gumbel-max / top-k) with finite gradients, or raises a
clear `ValueError`/`TypeError` naming the argument: never NaN, never an error from inside torch. The examples are
fixed by the 'ci' profile of tests/conftest.py; `HYPOTHESIS_PROFILE=explore` searches further."""
import math
import pytest, torch
import torch.nn.functional as F
from hypothesis import given, strategies as st, assume, example

from gumbel_tut import (gumbel_noise, gumbel_max, gumbel_topk, gumbel_softmax, GumbelSoftmax, ExpGumbelSoftmax,
                        relaxed_topk)
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

F32 = torch.finfo(torch.float32)
# every temperature the samplers accept (chapter 1's check_tau: float32's normal numbers), spread over all exponents,
# with the ends themselves; and for a distribution, its logits' dtype's range
accepted_taus = st.one_of(st.floats(F32.tiny, F32.max), st.sampled_from([F32.tiny, F32.max, 1e-30, 1e-3, 1e3, 1e30]))
def taus_for(dtype):
    info = torch.finfo(dtype)
    return st.one_of(st.floats(info.tiny, info.max), st.sampled_from([info.tiny, info.max]))

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

# ---- the whole accepted temperature range, in gradients and log-densities ----
@given(logits_and_dim(), accepted_taus, st.booleans(), st.integers(0, 2**32))
@example((torch.zeros(3, 4), -1), F32.tiny, False, 0)
@example((torch.zeros(3, 4), -1), F32.max, True, 0)
@pytest.mark.parametrize('backend', ['reference', 'fast'])
def test_gumbel_softmax_gradients_over_the_tau_range(backend, ld, tau, hard, seed):
    "Any accepted temperature: finite gradients, zero on masked categories."
    logits, dim = ld
    assume(not all_masked_somewhere(logits, dim) and logits.dtype in (torch.float32, torch.float64))
    x = logits.clone().requires_grad_()
    y = gumbel_softmax(x, tau=tau, hard=hard, dim=dim, generator=gen(seed), backend=backend)
    (y * torch.randn(y.shape, generator=gen(seed + 1), dtype=y.dtype)).sum().backward()
    assert x.grad.isfinite().all() and (x.grad[logits.isneginf()] == 0).all(), (tau, x.grad)

@given(logits_and_dim(max_dims=2), st.integers(-1, 7), st.one_of(accepted_taus, taus), st.booleans(), st.integers(0, 2**32))
def test_relaxed_topk_fuzz(ld, k, tau, hard, seed):
    "A relaxed k-hot (entries >= 0 summing to k, none on a masked category; an entry may exceed 1) with finite gradients, or a clear error."
    logits, dim = ld
    x = logits.clone().requires_grad_(logits.dtype in (torch.float32, torch.float64))
    try: y = relaxed_topk(x, k, tau, hard=hard, dim=dim, generator=gen(seed))
    except CLEAR as e:
        d = dim % logits.dim()
        bad_k = isinstance(k, bool) or k < 1 or k > int(logits.isfinite().sum(d).min())
        assert bad_k or not (isinstance(tau, (int, float)) and F32.tiny <= tau <= F32.max), f'refused a valid call: {e}'
        return
    y64 = y.double()
    tol = {torch.float16: 1e-2, torch.bfloat16: 5e-2, torch.float32: 1e-5, torch.float64: 1e-10}[logits.dtype] * logits.shape[dim] * k
    assert y.shape == logits.shape and y64.isfinite().all() and (y64 >= 0).all()
    assert ((y64.sum(dim) - k).abs() <= tol).all() and (y64[logits.isneginf()] == 0).all()
    if x.requires_grad:
        (y * torch.randn(y.shape, generator=gen(seed + 1), dtype=y.dtype)).sum().backward()
        assert x.grad.isfinite().all() and (x.grad[logits.isneginf()] == 0).all(), (tau, x.grad)

etas = st.one_of(st.floats(-1.8e19, 1.8e19), st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e39, -1e39, 1e300, 10**400]))
@given(st.sampled_from(['rebar', 'relax']), logits_and_dim(max_dims=2, max_side=4), st.one_of(accepted_taus, taus), etas,
       st.integers(0, 2**32))
@example('rebar', (torch.zeros(3, 4), -1), 1e-45, 1.0, 0)   # once accepted, then all-NaN gradients
@example('relax', (torch.zeros(3, 4), -1), 1.0, 1e39, 0)
@example('rebar', (torch.zeros(3, 4), -1), F32.tiny, 1.0, 0)
@example('rebar', (torch.tensor([4194302., 4194304.]), 0), F32.tiny, 13.0, 0)  # a rounded tie at the lowest tau: once NaN
def test_rebar_relax_surrogate_fuzz(name, ld, tau, eta, seed):
    "Any accepted temperature and scale: finite gradients for the logits (and finite tuned parameters), or a ValueError naming the argument."
    logits, _ = ld
    assume(logits.dtype in (torch.float32, torch.float64) and not logits.isneginf().all(-1).any())
    try: est = get_estimator(name, tau=tau, eta=eta)
    except CLEAR as e:
        assert 'tau' in str(e) or 'eta' in str(e), e
        ok_tau = isinstance(tau, (int, float)) and not isinstance(tau, bool) and F32.tiny <= tau <= F32.max
        ok_eta = isinstance(eta, (int, float)) and -1.8e19 <= eta <= 1.8e19
        assert not (ok_tau and ok_eta), f'refused a valid call: {e}'
        return
    w = torch.randn(logits.shape[-1], generator=gen(seed), dtype=logits.dtype)
    f = lambda z: (z * w).sum(-1).atan()  # a bounded loss with bounded derivatives
    for step in range(2):  # the second with the tuned parameters
        x = logits.clone().requires_grad_()
        z = est.sample(x, generator=gen(seed + step))
        grad, = torch.autograd.grad(est.surrogate(f(z), x, z, f=f).sum(), x)
        assert grad.isfinite().all() and (grad[logits.isneginf()] == 0).all(), (tau, eta, grad)
        assert math.isfinite(est.eta) and est.tau > 0

def exact_exp_log_prob(y, logits, tau) -> float:
    "ExpConcrete log-density from the exact rational differences s_k - s_max, then float64 sums (independent of the library's code)."
    from fractions import Fraction
    live = [k for k in range(len(logits)) if math.isfinite(logits[k])]
    if len(live) > 1 and any(y[k] == -math.inf for k in live): return -math.inf
    s = [Fraction(logits[k]) - Fraction(tau) * Fraction(y[k]) for k in live]
    d = [float(v - max(s)) for v in s]
    return math.lgamma(len(live)) + (len(live) - 1) * math.log(tau) + math.fsum(d) - len(live) * math.log(math.fsum(map(math.exp, d)))

@given(st.sampled_from(DTYPES), st.data(), st.integers(1, 6), st.integers(0, 2**32))
@example(torch.float32, None, 10, 0)  # GumbelSoftmax(1e38, logits=zeros(10)): once a NaN log-density of its own sample
def test_log_prob_at_extreme_tau_fuzz(dtype, data, k, seed):
    "The log-density of a distribution's own samples, at any temperature its dtype accepts: never NaN; ExpConcrete's is the exact value."
    if data is None: tau, logits = 1e38, torch.zeros(k, dtype=dtype)
    else:
        tau = data.draw(taus_for(dtype))
        logits = torch.tensor(data.draw(st.lists(st.one_of(st.floats(-30, 30), st.just(-math.inf)), min_size=k, max_size=k)), dtype=dtype)
        assume(not logits.isneginf().all())
    d = ExpGumbelSoftmax(tau, logits=logits)
    y = d.sample((2,), generator=gen(seed))
    lp = d.log_prob(y)
    assert not lp.isnan().any() and not lp.isposinf().any(), (tau, lp)
    eps = torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).eps
    t, a = float(d.temperature), d.logits.double().tolist()
    for yi, got in zip(y.double().tolist(), lp.tolist()):
        want = exact_exp_log_prob(yi, a, t)
        if want == -math.inf: assert got == -math.inf; continue
        live = [j for j in range(k) if math.isfinite(a[j])]
        r = max(live, key=lambda j: a[j] - t * yi[j])
        scale = math.lgamma(len(live)) + (len(live) - 1) * abs(math.log(t)) + len(live) * (
            math.log(len(live)) + sum(abs(a[j] - a[r]) + t * abs(yi[j] - yi[r]) for j in live))
        assert abs(got - want) <= 16 * eps * scale, (tau, got, want)
    x = GumbelSoftmax(tau, logits=logits).sample((2,), generator=gen(seed))
    assert not GumbelSoftmax(tau, logits=logits).log_prob(x).isnan().any()

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
