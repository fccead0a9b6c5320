"""Chapter 1 beyond the notebook: the Gumbel-softmax sampler, its densities, distributions and schedules.

Statistical tests use fixed seeds and thresholds from the statistic's null distribution: chi-square and KS
p-values > ALPHA = 1e-3, z-scores |z| < 4 (two-sided probability 6e-5 under the null)."""
import math
import numpy as np
import pytest, torch
from scipy import stats
from torch.distributions.relaxed_categorical import RelaxedOneHotCategorical, ExpRelaxedCategorical
from gumbel_tut.relax import check_tau, one_hot_argmax
from gumbel_tut.helpers import chi_square_pvalue
from gumbel_tut import (gumbel_softmax, gumbel_noise, straight_through,
                        concrete_log_prob, exp_concrete_log_prob, binary_concrete, binary_concrete_log_prob,
                        ExpGumbelSoftmax, GumbelSoftmax, ExponentialSchedule, LinearSchedule, CosineSchedule, use_backend)

ALPHA, Z_MAX = 1e-3, 4.0
HALF = [torch.float16, torch.bfloat16]
DTYPES = [torch.float32, torch.float64] + HALF

def gen(seed): return torch.Generator().manual_seed(seed)

@pytest.fixture(params=['reference', 'fast'])
def backend(request):
    "The sampler tests run on every CPU backend (nbs/15_backends.ipynb: the top-level `gumbel_softmax` under `use_backend`)."
    with use_backend(request.param): yield request.param

@pytest.fixture(params=['reference', 'fast'])
def tensor_tau_backend(request):
    "The backends that take a tensor temperature (the others raise a ValueError for it: tests/test_fast.py)."
    with use_backend(request.param): yield request.param

# --- the sampler -----------------------------------------------------------------------------------

@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('tau', [0.01, 0.5, 1.0, 10.0])
def test_rows_on_simplex(backend, dtype, tau):
    logits = (3 * torch.randn(2000, 7, generator=gen(0))).to(dtype)
    y = gumbel_softmax(logits, tau, generator=gen(1))
    assert y.dtype == dtype and y.shape == logits.shape
    assert y.isfinite().all() and (y >= 0).all()
    tol = {torch.float16: 4e-3, torch.bfloat16: 2e-2}.get(dtype, 1e-5)
    torch.testing.assert_close(y.double().sum(-1), torch.ones(2000, dtype=torch.float64), atol=tol, rtol=0)

@pytest.mark.parametrize('dim', [0, 1, 2, -1])
def test_any_dim_and_batch_shape(backend, dim):
    logits = torch.randn(3, 4, 5, generator=gen(2))
    y = gumbel_softmax(logits, 0.5, dim=dim, generator=gen(3))
    torch.testing.assert_close(y.sum(dim), torch.ones_like(y.sum(dim)))
    if backend == 'reference':   # the definition, with chapter 0's noise (the other backends draw their own)
        torch.testing.assert_close(y, torch.softmax((logits + gumbel_noise(logits.shape, generator=gen(3))) / 0.5, dim))

@pytest.mark.parametrize('dtype', DTYPES)
def test_hard_is_one_hot_and_argmax_of_soft_draw(backend, dtype):
    logits = torch.randn(5000, 6, generator=gen(4)).to(dtype)
    h = gumbel_softmax(logits, 0.3, hard=True, generator=gen(5))
    assert h.dtype == dtype and ((h == 0) | (h == 1)).all() and (h.sum(-1) == 1).all()
    s = gumbel_softmax(logits, 0.3, generator=gen(5))
    agree = (h.argmax(-1) == s.float().argmax(-1)).float().mean()
    assert agree == 1 if dtype in (torch.float32, torch.float64) else agree > 0.99  # half outputs may round soft ties

def test_hard_exactly_one_under_ties(backend):
    # logits of 1e30 swallow the noise in float32: every perturbed value ties
    h = gumbel_softmax(torch.full((100, 5), 1e30), 1.0, hard=True, generator=gen(6))
    assert (h.sum(-1) == 1).all() and ((h == 0) | (h == 1)).all()
    x = torch.tensor([[2.0, 2.0, 1.0], [0.0, 0.0, 0.0]])
    assert torch.equal(one_hot_argmax(x).sum(-1), torch.ones(2))
    assert one_hot_argmax(x.half()).dtype == torch.float16

@pytest.mark.parametrize('hard', [False, True])
def test_masked_categories_exactly_zero(backend, hard):
    logits = torch.tensor([0.0, float('-inf'), 5.0, float('-inf'), -3.0]).expand(100_000, -1)
    y = gumbel_softmax(logits, 0.05, hard=hard, generator=gen(7))
    assert (y[:, [1, 3]] == 0).all()

def test_straight_through_gradient_equals_soft_gradient(backend):
    theta = torch.randn(64, 10, generator=gen(8), requires_grad=True)
    w = torch.randn(64, 10, generator=gen(9))
    gh, = torch.autograd.grad((gumbel_softmax(theta, 0.4, hard=True, generator=gen(10)) * w).sum(), theta)
    gs, = torch.autograd.grad((gumbel_softmax(theta, 0.4, generator=gen(10)) * w).sum(), theta)
    assert gs.abs().sum() > 0
    assert torch.equal(gh, gs)
    soft = torch.rand(5, 3, requires_grad=True)
    hard = one_hot_argmax(soft.detach())
    st = straight_through(hard, soft)
    assert torch.equal(st.detach(), hard)
    st.backward(torch.arange(15.0).reshape(5, 3))
    assert torch.equal(soft.grad, torch.arange(15.0).reshape(5, 3))
    s = 100 * torch.randn(10_000, generator=gen(11))
    assert (straight_through(torch.ones_like(s), s) == 1).all()   # exact even for surrogates outside [0, 1]

def test_gradcheck_soft_path_float64(tensor_tau_backend):
    theta = torch.randn(3, 4, dtype=torch.float64, generator=gen(12), requires_grad=True)
    tau = torch.tensor([0.3, 1.0, 2.5], dtype=torch.float64, requires_grad=True)
    f = lambda t, s: gumbel_softmax(t, s, generator=gen(13))
    assert torch.autograd.gradcheck(f, (theta, tau))
    assert torch.autograd.gradcheck(lambda t: gumbel_softmax(t, 0.7, dim=0, generator=gen(14)), (theta,))
    masked = torch.tensor([[0.5, float('-inf'), -0.2]], dtype=torch.float64)
    t2 = torch.tensor([0.8], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: gumbel_softmax(masked, s, generator=gen(15)), (t2,))

def test_mean_approaches_softmax_as_tau_goes_to_zero(backend):
    logits = torch.tensor([1.0, -0.5, 2.0, 0.0, 0.3])
    p = logits.softmax(0)
    n = 400_000
    def z(tau):
        y = gumbel_softmax(logits.expand(n, -1), tau, generator=gen(16)).double()
        return ((y.mean(0) - p) / (y.std(0) / math.sqrt(n))).abs().max()
    assert z(0.02) < Z_MAX
    assert z(1.0) > 10 * Z_MAX   # the test has power: at tau = 1 the mean is far from softmax(logits)

CASES = {'peaked': torch.tensor([6.0, 0.0, -1.0, 2.0, -3.0]),
         'near-uniform': torch.tensor([0.0, 1e-2, -1e-2, 2e-2]),
         'masked': torch.tensor([1.0, float('-inf'), 0.0, -0.5]),
         '50 categories': 0.5 * torch.randn(50, generator=gen(17))}

@pytest.mark.parametrize('name', CASES)
def test_hard_frequencies_match_softmax(backend, name):
    logits, n = CASES[name], 200_000
    h = gumbel_softmax(logits.expand(n, -1), 0.7, hard=True, generator=gen(sum(map(ord, name))))
    assert chi_square_pvalue(h.sum(0), logits.double().softmax(0)) > ALPHA

@pytest.mark.parametrize('dtype', HALF)
def test_half_precision_1e7_draws_finite_and_unbiased(backend, dtype):
    n_rows, chunk, first = 5 * 10**6, 10**6, 0.0   # K = 2: 10^7 draws
    g = gen(18)
    for _ in range(n_rows // chunk):
        y = gumbel_softmax(torch.zeros(chunk, 2, dtype=dtype), 1.0, hard=True, generator=g)
        assert y.isfinite().all() and (y.sum(-1) == 1).all()
        first += float(y[:, 0].sum(dtype=torch.float64))
    z = (first - n_rows / 2) / math.sqrt(n_rows / 4)
    assert abs(z) < Z_MAX, z
    y = gumbel_softmax(torch.zeros(10**6, 10, dtype=dtype), 0.1, generator=gen(19))
    assert y.isfinite().all()

@pytest.mark.parametrize('dtype', HALF)
def test_low_tau_large_half_logits(backend, dtype):
    logits = (500 * torch.randn(1000, 16, generator=gen(20))).to(dtype)
    for hard in (False, True):
        y = gumbel_softmax(logits, 0.01, hard=hard, generator=gen(21))
        assert y.isfinite().all() and (y >= 0).all()
    y = gumbel_softmax(torch.tensor([3e38, 0.0, -3e38]), 1e-3, generator=gen(22))   # float32 extremes
    assert torch.equal(y, torch.tensor([1.0, 0.0, 0.0]))

def test_generator_reproducibility_and_global_rng_untouched(backend):
    logits = torch.randn(10, 4, generator=gen(23))
    a = gumbel_softmax(logits, 0.5, generator=gen(24))
    state = torch.get_rng_state()
    b = gumbel_softmax(logits, 0.5, generator=gen(24))
    assert torch.equal(torch.get_rng_state(), state) and torch.equal(a, b)
    assert not torch.equal(a, gumbel_softmax(logits, 0.5, generator=gen(25)))
    d = GumbelSoftmax(0.5, logits=logits)
    assert torch.equal(d.rsample((3,), generator=gen(26)), d.rsample((3,), generator=gen(26)))
    torch.manual_seed(0); c = gumbel_softmax(logits, 0.5)
    torch.manual_seed(0); assert torch.equal(c, gumbel_softmax(logits, 0.5))

@pytest.mark.parametrize('tau_shape', [(), (1,), (6,), (6, 1), (1, 1)])
def test_tau_tensor_shapes_and_gradient(tensor_tau_backend, tau_shape):
    logits = torch.randn(6, 4, generator=gen(27))
    tau = (0.2 + torch.rand(tau_shape, generator=gen(28))).requires_grad_()
    y = gumbel_softmax(logits, tau, generator=gen(29))
    assert y.shape == (6, 4)
    per_row = tau.detach().reshape(-1)[0] if tau.numel() == 1 else tau.detach().reshape(6)
    ref = gumbel_softmax(logits, per_row.expand(6).reshape(6, 1), generator=gen(29))
    torch.testing.assert_close(y.detach(), ref)
    y[:, 0].sum().backward()
    assert tau.grad.shape == tau.shape and tau.grad.isfinite().all()

def test_tau_with_dim_and_3d_batch(tensor_tau_backend):
    logits = torch.randn(4, 3, 5, generator=gen(30))
    tau = torch.tensor([0.1, 1.0, 10.0])          # batch shape (4, 3) when dim=-1: broadcasts along the last batch axis
    y = gumbel_softmax(logits, tau, generator=gen(31))
    assert y.shape == logits.shape
    y0 = gumbel_softmax(logits.transpose(0, 2), tau[:, None], dim=0, generator=gen(31))   # batch shape (3, 4)
    assert y0.shape == (5, 3, 4)
    torch.testing.assert_close(y0.sum(0), torch.ones(3, 4))

# --- bad input -------------------------------------------------------------------------------------

BAD = {
    'tau=0': (lambda: gumbel_softmax(torch.zeros(3), 0.0), 'tau=0.0'),
    'tau<0': (lambda: gumbel_softmax(torch.zeros(3), -0.5), 'tau=-0.5'),
    'tau nan': (lambda: gumbel_softmax(torch.zeros(3), float('nan')), 'tau=nan'),
    'tau inf': (lambda: gumbel_softmax(torch.zeros(3), float('inf')), 'tau=inf'),
    'tau tensor 0': (lambda: gumbel_softmax(torch.zeros(2, 3), torch.tensor([1.0, 0.0])), 'tau[1]=0.0'),
    'tau tensor nan': (lambda: gumbel_softmax(torch.zeros(2, 3), torch.tensor([float('nan'), 1.0])), 'tau[0]=nan'),
    'tau tensor inf': (lambda: gumbel_softmax(torch.zeros(2, 3), torch.tensor([[1.0], [float('inf')]])), 'tau[1, 0]=inf'),
    'tau 0-d nan': (lambda: gumbel_softmax(torch.zeros(3), torch.tensor(float('nan'))), 'tau=nan'),
    'tau int tensor': (lambda: gumbel_softmax(torch.zeros(3), torch.tensor(1)), 'floating-point'),
    'tau string': (lambda: gumbel_softmax(torch.zeros(3), '1'), 'tau'),
    'tau shape': (lambda: gumbel_softmax(torch.zeros(2, 3), torch.ones(3)), 'does not broadcast'),
    'tau grows batch': (lambda: gumbel_softmax(torch.zeros(2, 3), torch.ones(5, 2)), 'does not broadcast'),
    'logits nan': (lambda: gumbel_softmax(torch.tensor([0.0, float('nan')])), 'logits contains NaN'),
    'logits +inf': (lambda: gumbel_softmax(torch.tensor([0.0, float('inf')])), 'logits contains +inf'),
    'logits all -inf': (lambda: gumbel_softmax(torch.tensor([[0.0, 1.0], [float('-inf')] * 2])), 'all -inf'),
    'logits int': (lambda: gumbel_softmax(torch.tensor([1, 2])), 'floating-point'),
    'dim': (lambda: gumbel_softmax(torch.zeros(2, 3), dim=2), 'dim=2'),
    'dist temperature': (lambda: GumbelSoftmax(0.0, logits=torch.zeros(3)), 'temperature=0.0'),
    'dist temperature nan': (lambda: ExpGumbelSoftmax(torch.tensor([1.0, float('nan')]), logits=torch.zeros(2, 3)), 'temperature[1]=nan'),
    'dist temperature shape': (lambda: GumbelSoftmax(torch.ones(3), logits=torch.zeros(2, 4)), 'temperature with shape (3,)'),
    'dist logits nan': (lambda: GumbelSoftmax(1.0, logits=torch.tensor([0.0, float('nan')])), 'logits contains NaN'),
    'dist logits all -inf': (lambda: GumbelSoftmax(1.0, logits=torch.full((3,), float('-inf'))), 'all -inf'),
    'dist probs negative': (lambda: GumbelSoftmax(1.0, probs=torch.tensor([0.5, -0.5, 1.0])), 'probs must be non-negative'),
    'dist probs zero': (lambda: GumbelSoftmax(1.0, probs=torch.zeros(3)), 'probs has a slice summing to 0'),
    'dist both': (lambda: GumbelSoftmax(1.0, logits=torch.zeros(3), probs=torch.ones(3) / 3), 'exactly one'),
    'value off simplex': (lambda: GumbelSoftmax(1.0, logits=torch.zeros(3), validate_args=True).log_prob(torch.tensor([0.5, 0.6, 0.0])), 'value'),
    'value negative': (lambda: GumbelSoftmax(1.0, logits=torch.zeros(3), validate_args=True).log_prob(torch.tensor([1.2, -0.2, 0.0])), 'value'),
    'value shape': (lambda: GumbelSoftmax(1.0, logits=torch.zeros(2, 3), validate_args=True).log_prob(torch.ones(4, 3) / 3), 'value with shape'),
    'value off log-simplex': (lambda: ExpGumbelSoftmax(1.0, logits=torch.zeros(3), validate_args=True).log_prob(torch.zeros(3)), 'log-simplex'),
    'binary logit nan': (lambda: binary_concrete(torch.tensor([float('nan')])), 'logit contains NaN'),
    'binary tau': (lambda: binary_concrete(torch.zeros(2), -1.0), 'tau=-1.0'),
    'schedule tau0': (lambda: ExponentialSchedule(tau0=0.0), 'tau0=0.0'),
    'schedule rate': (lambda: ExponentialSchedule(rate=float('nan')), 'rate=nan'),
    'schedule every': (lambda: ExponentialSchedule(every=0), 'every=0'),
    'schedule step': (lambda: LinearSchedule()(-3), 'step=-3'),
    'schedule total': (lambda: CosineSchedule(total_steps=0), 'total_steps=0'),
}

@pytest.mark.parametrize('case', BAD)
def test_bad_input_raises_value_error_naming_it(tensor_tau_backend, case):
    f, message = BAD[case]
    with pytest.raises(ValueError, match=None) as info: f()
    assert message in str(info.value), str(info.value)

def test_check_tau_returns():
    assert check_tau(1) == 1.0 and isinstance(check_tau(1), float)
    t = torch.ones(3, requires_grad=True)
    assert check_tau(t) is t

# --- densities -------------------------------------------------------------------------------------

def simplex_quadrature(f, n=200):
    "Integral over the 2-simplex: Duffy map and graded Gauss-Legendre nodes (as in the notebook)."
    t, w = np.polynomial.legendre.leggauss(n)
    s, w = torch.tensor((t + 1) / 2), torch.tensor(w / 2)
    g, w = s**3 * (10 - 15 * s + 6 * s**2), w * 30 * s**2 * (1 - s)**2
    u, v = torch.meshgrid(g, g, indexing='ij')
    x = torch.stack([u, (1 - u) * v, (1 - u) * (1 - v)], -1)
    return (f(x) * (1 - u) * w[:, None] * w[None, :]).sum().item()

@pytest.mark.parametrize('lam', [0.5, 0.8, 1.0, 3.0])
@pytest.mark.parametrize('logits', [[0.0, 0.0, 0.0], [2.0, -1.0, 0.5], [-3.0, 1.0, 1.5]])
def test_density_integrates_to_one(lam, logits):
    a = torch.tensor(logits, dtype=torch.float64)
    assert abs(simplex_quadrature(lambda x: concrete_log_prob(x, a, lam).exp()) - 1) < 1e-4
    d = GumbelSoftmax(torch.tensor(lam, dtype=torch.float64), logits=a)
    assert abs(simplex_quadrature(lambda x: d.log_prob(x).exp()) - 1) < 1e-4

@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_log_prob_matches_torch_where_finite(dtype):
    a = (2 * torch.randn(300, 6, generator=gen(40))).to(dtype)
    temps = torch.tensor([0.05, 0.2, 2 / 3, 1.0, 4.0], dtype=dtype)
    for lam in temps:
        ref = RelaxedOneHotCategorical(lam, logits=a, validate_args=False)
        x = ref.sample()
        want = ref.log_prob(x)
        ok = want.isfinite()
        assert ok.float().mean() > 0.3
        tol = dict(atol=1e-9, rtol=1e-9) if dtype == torch.float64 else dict(atol=2e-2, rtol=1e-4)
        torch.testing.assert_close(concrete_log_prob(x, a, lam)[ok], want[ok], **tol)
        torch.testing.assert_close(GumbelSoftmax(lam, logits=a).log_prob(x)[ok], want[ok], **tol)
        ref_exp = ExpRelaxedCategorical(lam, logits=a)
        y = ref_exp.sample()
        torch.testing.assert_close(ExpGumbelSoftmax(lam, logits=a).log_prob(y), ref_exp.log_prob(y), **tol)

def test_gradcheck_log_densities_float64():
    a = torch.randn(3, 4, dtype=torch.float64, generator=gen(41), requires_grad=True)
    x = gumbel_softmax(a.detach(), 0.9, generator=gen(42)).requires_grad_()
    tau = torch.tensor([0.4, 1.0, 2.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(concrete_log_prob, (x, a, tau))
    y = x.detach().log().requires_grad_()
    assert torch.autograd.gradcheck(exp_concrete_log_prob, (y, a, tau))
    assert torch.autograd.gradcheck(lambda a, t: GumbelSoftmax(t, logits=a).log_prob(x.detach()), (a, tau))
    assert torch.autograd.gradcheck(lambda a, t: ExpGumbelSoftmax(t, logits=a).log_prob(y.detach()), (a, tau))
    xb = torch.tensor([0.2, 0.7], dtype=torch.float64, requires_grad=True)
    lb = torch.tensor([0.3, -1.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(binary_concrete_log_prob, (xb, lb, tau[:2]))

@pytest.mark.parametrize('lam', [0.3, 1.0, 2.5])
def test_k2_matches_binary_concrete(lam):
    xs = torch.linspace(1e-4, 1 - 1e-4, 2001, dtype=torch.float64)
    la = torch.tensor(-0.8, dtype=torch.float64)
    want = binary_concrete_log_prob(xs, la, lam)
    got = concrete_log_prob(torch.stack([xs, 1 - xs], -1), torch.stack([la + 5, torch.tensor(5.0, dtype=torch.float64)]), lam)
    torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-9)
    cdf = lambda v: torch.sigmoid(lam * torch.logit(torch.from_numpy(v)) - la).numpy()
    for seed in (43, 44):
        xb = binary_concrete(la.expand(100_000), lam, generator=gen(seed)).clamp(1e-300, 1 - 1e-16)
        assert stats.kstest(xb.numpy(), cdf).pvalue > ALPHA
    xg = GumbelSoftmax(lam, logits=torch.stack([la, torch.zeros((), dtype=torch.float64)])).sample((100_000,), generator=gen(45))[:, 0]
    assert stats.kstest(xg.clamp(1e-300, 1 - 1e-16).numpy(), cdf).pvalue > ALPHA

def test_boundary_log_prob_is_the_limit_never_nan():
    a = torch.tensor([0.3, -0.2, 1.0], dtype=torch.float64)
    edge = torch.tensor([0.4, 0.6, 0.0], dtype=torch.float64)
    assert concrete_log_prob(edge, a, 0.3).item() == float('inf')     # (n-1) lambda < 1
    assert concrete_log_prob(edge, a, 0.7).item() == float('-inf')    # (n-1) lambda > 1
    near = torch.tensor([0.4 * (1 - 1e-14), 0.6 * (1 - 1e-14), 1e-14], dtype=torch.float64)
    torch.testing.assert_close(concrete_log_prob(edge, a, 0.5), concrete_log_prob(near, a, 0.5), atol=1e-5, rtol=0)
    vertex = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    for lam in (0.1, 0.5, 0.75, 1.0, 2.0):
        assert not concrete_log_prob(vertex, a, lam).isnan()
    x = GumbelSoftmax(0.02, logits=torch.tensor([0.0, 3.0, -2.0])).sample((20_000,), generator=gen(46))
    assert (x == 0).any() and not GumbelSoftmax(0.02, logits=torch.tensor([0.0, 3.0, -2.0])).log_prob(x).isnan().any()

def test_exp_log_prob_finite_at_low_tau():
    d = ExpGumbelSoftmax(0.01, logits=torch.tensor([0.0, 5.0, -4.0, 1.0]))
    y = d.rsample((50_000,), generator=gen(47))
    assert y.isfinite().all()
    torch.testing.assert_close(y.logsumexp(-1), torch.zeros(50_000), atol=1e-5, rtol=0)
    assert d.log_prob(y).isfinite().all()

def test_masked_categories_in_densities():
    a = torch.tensor([0.0, float('-inf'), 1.0], dtype=torch.float64)
    b = torch.tensor([0.0, 1.0], dtype=torch.float64)
    x2 = torch.tensor([0.3, 0.7], dtype=torch.float64)
    x3 = torch.tensor([0.3, 0.0, 0.7], dtype=torch.float64)
    torch.testing.assert_close(concrete_log_prob(x3, a, 0.6), concrete_log_prob(x2, b, 0.6))
    torch.testing.assert_close(exp_concrete_log_prob(x3.log(), a, 0.6), exp_concrete_log_prob(x2.log(), b, 0.6))
    assert concrete_log_prob(torch.tensor([0.3, 0.1, 0.6], dtype=torch.float64), a, 0.6).item() == float('-inf')
    d = GumbelSoftmax(0.6, probs=torch.tensor([0.25, 0.0, 0.75]))
    assert (d.sample((1000,))[:, 1] == 0).all() and d.logits[1].item() == float('-inf')

# --- distributions ---------------------------------------------------------------------------------

def test_distribution_shapes_with_batched_temperature():
    d = GumbelSoftmax(torch.tensor([0.5, 1.0, 2.0]), logits=torch.zeros(4, 1, 5))
    assert d.batch_shape == (4, 3) and d.event_shape == (5,)
    x = d.rsample((7, 2))
    assert x.shape == (7, 2, 4, 3, 5) and d.log_prob(x).shape == (7, 2, 4, 3)
    assert d.log_prob(x[0, 0, 0, 0]).shape == (4, 3)   # a single event broadcasts
    e = d.expand((6, 4, 3))
    assert e.batch_shape == (6, 4, 3) and e.rsample().shape == (6, 4, 3, 5) and e.temperature.shape == (6, 4, 3)
    de = ExpGumbelSoftmax(torch.tensor([[0.5], [1.0]]), logits=torch.zeros(3, 4))
    assert de.batch_shape == (2, 3) and de.log_prob(de.rsample((5,))).shape == (5, 2, 3)
    assert GumbelSoftmax(0.5, logits=torch.zeros(3)).rsample().shape == (3,)

def test_distribution_constraints_and_params():
    d = GumbelSoftmax(0.7, logits=torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(d.probs, torch.tensor([1.0, 2.0, 3.0]).softmax(0))
    torch.testing.assert_close(d.logits.logsumexp(-1), torch.tensor(0.0))
    assert d.has_rsample and d.support.check(d.sample()).all()
    assert set(d.arg_constraints) == {'temperature', 'logits', 'probs'}
    d2 = GumbelSoftmax(0.7, probs=3 * torch.tensor([1.0, 2.0, 3.0]).softmax(0))   # probs are normalized
    torch.testing.assert_close(d2.logits, d.logits)

def test_distribution_hard_and_both():
    theta = torch.randn(8, 5, generator=gen(50), requires_grad=True)
    d = GumbelSoftmax(0.5, logits=theta, hard=True)
    h = d.rsample((3,), generator=gen(51))
    assert ((h == 0) | (h == 1)).all() and (h.sum(-1) == 1).all()
    hard, soft = GumbelSoftmax(0.5, logits=theta).rsample_both((3,), generator=gen(51))
    assert torch.equal(hard.detach(), h.detach()) and torch.equal(hard.detach().argmax(-1), soft.detach().argmax(-1))
    w = torch.randn(3, 8, 5, generator=gen(52))
    gh, = torch.autograd.grad((h * w).sum(), theta)
    gs, = torch.autograd.grad((soft * w).sum(), theta)
    torch.testing.assert_close(gh, gs)
    assert GumbelSoftmax(0.5, logits=theta).log_prob(soft).shape == (3, 8)
    assert GumbelSoftmax(0.5, logits=theta, hard=True).expand((2, 8)).hard

def test_distribution_hard_frequencies():
    logits = torch.tensor([0.5, -1.0, 1.5, 0.0])
    h = GumbelSoftmax(2.0, logits=logits, hard=True).sample((400_000,), generator=gen(53))
    assert chi_square_pvalue(h.sum(0), logits.softmax(0)) > ALPHA

def test_distribution_samples_follow_density():
    a, lam, n = torch.tensor([1.0, -0.5, 0.0], dtype=torch.float64), 0.6, 100_000
    d = GumbelSoftmax(lam, logits=a)
    x = d.sample((n,), generator=gen(54))
    for phi in (lambda x: x[..., 0], lambda x: x[..., 1] ** 2, lambda x: x[..., 0] * x[..., 2]):
        exact = simplex_quadrature(lambda p: phi(p) * concrete_log_prob(p, a, lam).exp())
        v = phi(x)
        assert abs((v.mean() - exact) / (v.std() / math.sqrt(n))) < Z_MAX
    ye = ExpGumbelSoftmax(lam, logits=a).sample((n,), generator=gen(54))
    torch.testing.assert_close(ye.exp(), x)

# --- schedules -------------------------------------------------------------------------------------

def test_schedules():
    s = ExponentialSchedule(tau0=1.0, rate=3e-5, tau_min=0.5, every=1000)
    assert s(0) == 1.0 and s(999) == 1.0 and s(1000) == pytest.approx(math.exp(-0.03)) and s(10**7) == 0.5
    assert all(s(t) >= s(t + 1) for t in range(0, 50_000, 97))
    assert ExponentialSchedule(every=1)(1) == pytest.approx(math.exp(-3e-5))
    lin, cos = LinearSchedule(2.0, 0.5, 100), CosineSchedule(2.0, 0.5, 100)
    assert lin(0) == 2.0 and lin(50) == pytest.approx(1.25) and lin(100) == 0.5 and lin(1000) == 0.5
    assert cos(0) == 2.0 and cos(50) == pytest.approx(1.25) and cos(100) == pytest.approx(0.5) and cos(10**6) == pytest.approx(0.5)
    assert cos(25) > lin(25)   # the cosine stays warm longer at the start
    # pure functions of the step: a fresh object (as after loading a checkpoint) gives identical values
    assert [s(t) for t in (0, 1234, 99_999)] == [ExponentialSchedule()(t) for t in (0, 1234, 99_999)]
    with pytest.raises(Exception): s.tau0 = 3.0   # frozen


# --- half-precision distributions (found by the fuzz suite) ---------------------------------------------------
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_log_prob_accepts_its_own_half_precision_samples(dtype):
    "Samples rounded to a half dtype sum to 1 only within that dtype's rounding; log_prob must accept them, never NaN."
    q = GumbelSoftmax(0.5, logits=torch.randn(2000, 7, generator=torch.Generator().manual_seed(0)).to(dtype))
    lp = q.log_prob(q.sample(generator=torch.Generator().manual_seed(1)))
    assert not lp.isnan().any()


def test_temperature_checked_in_the_logits_dtype():
    "65520 is finite as a Python float but rounds to inf in float16, where the distribution stores its temperature."
    with pytest.raises(ValueError, match='temperature=65520.0 cannot be used: the usable range in float16'):
        GumbelSoftmax(65520.0, logits=torch.zeros(3, dtype=torch.float16))
    GumbelSoftmax(65520.0, logits=torch.zeros(3))  # fine in float32


# --- log-densities over the whole accepted temperature range -------------------------------------------------------

def exact_exp_concrete_log_prob(y, logits, tau) -> float:
    """The ExpConcrete log-density of one point from the exact rational differences s_k - s_max (s_k = a_k - tau y_k,
    every float read as the rational it is), rounded once to float64, then sums in float64 (`math.fsum`)."""
    from fractions import Fraction
    live = [k for k in range(len(logits)) if math.isfinite(logits[k])]
    n = len(live)
    if any(y[k] == -math.inf for k in live) and n > 1: return -math.inf  # the edge of the support: the limit
    t = Fraction(tau)
    s = [Fraction(logits[k]) - t * Fraction(y[k]) for k in live]
    top = max(s)
    d = [float(v - top) for v in s]  # exact, then one rounding; <= 0
    log_z = math.log(math.fsum(math.exp(v) for v in d))
    return math.lgamma(n) + (n - 1) * math.log(tau) + math.fsum(d) - n * log_z

def exact_condition(y, logits, tau) -> float:
    "The sum of the magnitudes of the terms `exp_concrete_log_prob` adds up: its rounding error is a small multiple of eps times this."
    live = [k for k in range(len(logits)) if math.isfinite(logits[k])]
    n = len(live)
    s = [(logits[k] - tau * y[k], k) for k in live]
    r = max(s)[1]
    spread = sum(abs(logits[k] - logits[r]) + tau * abs(y[k] - y[r]) for k in live)
    return math.lgamma(n) + (n - 1) * abs(math.log(tau)) + n * math.log(n) + n * spread

# every (dtype, tau, K) below gave a NaN log-density of the distribution's own samples
EXTREME = [(torch.float32, 1e38, 10), (torch.float32, 1e35, 1000), (torch.bfloat16, 2.45e38, 10), (torch.float32, 3.4e38, 7),
           (torch.float16, 6e4, 10), (torch.float64, 1e300, 10), (torch.float64, 1.7e308, 4), (torch.float32, 1e20, 10)]
@pytest.mark.parametrize('dtype,tau,k', EXTREME)
@pytest.mark.parametrize('uniform', [True, False])
def test_log_prob_of_own_samples_at_extreme_tau_is_exact(dtype, tau, k, uniform):
    logits = (torch.zeros(k) if uniform else 3 * torch.randn(k, generator=gen(80))).to(dtype)
    eps = torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).eps  # the compute dtype's
    for cls in (ExpGumbelSoftmax, GumbelSoftmax):
        d = cls(tau, logits=logits)
        v = d.sample((3,), generator=gen(81))
        lp = d.log_prob(v)
        assert lp.isfinite().all(), (cls.__name__, lp)
        t, a = float(d.temperature), d.logits.double().tolist()
        for row, got in zip(v, lp.tolist()):
            y = (row.double().log() if cls is GumbelSoftmax and dtype == torch.float64 else
                 row.float().log().double() if cls is GumbelSoftmax else row.double()).tolist()
            want = exact_exp_concrete_log_prob(y, a, t) - (math.fsum(y) if cls is GumbelSoftmax else 0.0)
            tol = 16 * eps * (exact_condition(y, a, t) + (sum(map(abs, y)) if cls is GumbelSoftmax else 0.0))
            assert abs(got - want) <= tol, (cls.__name__, got, want, tol)

@pytest.mark.parametrize('tau', [1.1754943508222875e-38, 1e-30, 1e-3, 1.0, 1e3, 1e30, 3.4028234663852886e38])
def test_exp_log_prob_matches_the_exact_value_across_the_tau_range(tau):
    "Random points near the samples' scale, not only the samples: the log-density agrees with the exact rational one."
    g = gen(82)
    a = torch.randn(50, 6, generator=g).log_softmax(-1)
    a[::7, 2] = -math.inf
    z = a + gumbel_noise(a.shape, generator=g)
    y = ((z - z.amax(-1, keepdim=True)) / tau).clamp(min=-3e38).log_softmax(-1)  # finite in float32
    y = torch.where(a.isfinite(), y, -math.inf)
    lp = exp_concrete_log_prob(y, a, tau)
    assert not lp.isnan().any()
    for yi, ai, got in zip(y.double().tolist(), a.double().tolist(), lp.tolist()):
        want = exact_exp_concrete_log_prob(yi, ai, tau)
        if want == -math.inf: assert got == -math.inf; continue
        assert abs(got - want) <= 16 * torch.finfo(torch.float32).eps * exact_condition(yi, ai, tau), (got, want)
