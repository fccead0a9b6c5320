"""Chapter 1's relaxed top-k (Xie & Ermon 2019) beyond the notebook: `relaxed_topk`.

Statistical tests use fixed seeds and thresholds from the statistic's null distribution: chi-square p-values
> ALPHA = 1e-3. The limit tau -> 0 is checked row by row against the gaps between the perturbed logits."""
import itertools, math
import pytest, torch
from hypothesis import given, strategies as st

from gumbel_tut import relaxed_topk, gumbel_topk, gumbel_noise, plackett_luce_log_prob
from gumbel_tut.gumbel import chi_square_pvalue  # a tutorial helper, not in the public API
from gumbel_tut.relax import gumbel_softmax  # chapter 1's reference sampler (the top-level one is chapter 5's, with its own noise)
from gumbel_tut.relax import _relaxed_khot, _log1m_probs

ALPHA = 1e-3
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]

def gen(seed): return torch.Generator().manual_seed(seed)

def indicator(logits, k, seed, dim=-1):
    "The k-hot of `gumbel_topk`'s draw from generator seed `seed`."
    return torch.zeros_like(logits).scatter_(dim, gumbel_topk(logits, k, dim=dim, generator=gen(seed)), 1.0)

# --- values ----------------------------------------------------------------------------------------

@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('tau', [0.01, 0.5, 1.0, 10.0])
@pytest.mark.parametrize('k', [1, 3, 7])
def test_nonnegative_sums_to_k_masks_zero(dtype, tau, k):
    logits = 3 * torch.randn(500, 8, generator=gen(0)); logits[:, 2] = float('-inf')
    y = relaxed_topk(logits.to(dtype), k, tau, generator=gen(1))
    assert y.dtype == dtype and y.shape == logits.shape and y.isfinite().all()
    assert (y >= 0).all() and (y[:, 2] == 0).all() and (y <= k).all()
    tol = {torch.float16: 8e-3 * k, torch.bfloat16: 4e-2 * k}.get(dtype, 1e-5)
    torch.testing.assert_close(y.double().sum(-1), torch.full((500,), float(k), dtype=torch.float64), atol=tol, rtol=0)

def test_worked_example_and_entries_above_one():
    "Xie & Ermon's update at tau = 1 on alpha = (2, 1), k = 2: y = (7/6, 5/6): a relaxed k-hot entry may exceed 1."
    y = _relaxed_khot(torch.tensor([2.0, 1.0], dtype=torch.float64).log(), 2, 1.0, 0)
    torch.testing.assert_close(y, torch.tensor([7 / 6, 5 / 6], dtype=torch.float64))

def test_k_equal_one_is_gumbel_softmax():
    logits = torch.randn(300, 6, generator=gen(2))
    torch.testing.assert_close(relaxed_topk(logits, 1, 0.7, generator=gen(3)), gumbel_softmax(logits, 0.7, generator=gen(3)))

@pytest.mark.parametrize('dim', [0, 1, 2, -1])
def test_hard_is_gumbel_topk_indicator_any_dim(dim):
    logits = torch.randn(4, 5, 6, generator=gen(4))
    h = relaxed_topk(logits, 3, 0.5, hard=True, dim=dim, generator=gen(5))
    assert torch.equal(h, indicator(logits, 3, 5, dim))
    s = relaxed_topk(logits, 3, 0.5, dim=dim, generator=gen(5))
    torch.testing.assert_close(s.sum(dim), torch.full_like(s.sum(dim), 3.0))

def test_large_logit_gaps_are_removed_exactly():
    "The authors' clamp of 1 - a at the smallest float would pick category 0 twice here; the log-space update does not."
    y = relaxed_topk(torch.tensor([200.0, 100.0, 0.0]), 2, 0.1, generator=gen(0))
    torch.testing.assert_close(y, torch.tensor([1.0, 1.0, 0.0]))

def test_log1m_probs_matches_log1p_and_stays_finite():
    x = torch.randn(100, 7, dtype=torch.float64, generator=gen(6))
    torch.testing.assert_close(_log1m_probs(x.log_softmax(-1), -1), torch.log1p(-x.softmax(-1)))
    top = _log1m_probs(torch.tensor([0.0, -50.0, -60.0]).log_softmax(0), 0)[0]   # 1 - a rounds to 0 in float32
    assert top.isfinite() and abs(top.item() - math.log(math.exp(-50) + math.exp(-60))) < 1e-4

# --- the limit tau -> 0 ------------------------------------------------------------------------------

def test_low_temperature_limit_is_the_topk_indicator():
    logits = torch.randn(1000, 10, dtype=torch.float64, generator=gen(7))
    target = indicator(logits, 3, 8)
    z = logits + gumbel_noise(logits.shape, generator=gen(8), dtype=torch.float64)    # the same noise
    top = z.topk(4, -1).values
    gap = (top[:, :-1] - top[:, 1:]).min(-1).values
    means = []
    for tau in [1.0, 0.1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6]:
        dist = (relaxed_topk(logits, 3, tau, generator=gen(8)) - target).abs().amax(-1)
        means.append(dist.mean().item())
        wide = gap > 40 * tau
        if wide.any(): assert dist[wide].max() < 1e-12, tau      # errors of order exp(-40) once tau is below the gaps
    assert all(a > b for a, b in zip(means, means[1:])), means
    assert means[-1] < 1e-12

# --- law of the hard subsets ---------------------------------------------------------------------------

@pytest.mark.parametrize('k', [1, 2, 3, 4])
def test_hard_subsets_follow_plackett_luce(k):
    logits = torch.tensor([1.2, 0.0, float('-inf'), -0.7, 0.5, 0.3])
    live = [0, 1, 3, 4, 5]
    subsets = list(itertools.combinations(live, k))
    probs = torch.stack([plackett_luce_log_prob(logits.expand(math.factorial(k), -1),
                                                torch.tensor(list(itertools.permutations(s)))).exp().sum() for s in subsets])
    torch.testing.assert_close(probs.sum(), torch.tensor(1.0))
    h = relaxed_topk(logits.expand(2 * 10**5, -1), k, 0.5, hard=True, generator=gen(30 + k))
    assert (h[:, 2] == 0).all() and (h.sum(-1) == k).all()
    codes = (h * 2 ** torch.arange(6)).sum(-1).long()
    counts = torch.stack([(codes == sum(2**i for i in s)).sum() for s in subsets])
    assert counts.sum() == 2 * 10**5                                    # every draw is one of the subsets
    p = chi_square_pvalue(counts, probs)
    assert p > ALPHA, (k, p)

# --- gradients -------------------------------------------------------------------------------------

def test_gradcheck_float64_logits_and_tau_tensor():
    theta = torch.randn(3, 6, dtype=torch.float64, generator=gen(9), requires_grad=True)
    tau = torch.tensor([0.3, 1.0, 2.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t, s: relaxed_topk(t, 3, s, generator=gen(0)), (theta, tau))
    assert torch.autograd.gradcheck(lambda t, s: relaxed_topk(t, 2, s[:, None], dim=1, generator=gen(1)), (theta, tau))

def test_gradcheck_deterministic_part_low_tau_and_masked():
    z = torch.tensor([[2.0, 1.7, 1.5, 0.2, -1.0]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: _relaxed_khot(z, 2, 0.1, 1), (z,))
    mask = torch.tensor([[0.5, float('-inf'), -0.2, 1.0, 0.1]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: _relaxed_khot(t + mask, 3, 0.4, 1), (torch.zeros(1, 5, dtype=torch.float64, requires_grad=True),))

def test_straight_through_gradient_is_the_soft_gradient():
    theta = torch.randn(200, 7, generator=gen(10)); theta[:, 4] = float('-inf'); theta.requires_grad_()
    w = torch.randn(7, generator=gen(11))
    gh, = torch.autograd.grad((relaxed_topk(theta, 3, 0.5, hard=True, generator=gen(12)) * w).sum(), theta)
    gs, = torch.autograd.grad((relaxed_topk(theta, 3, 0.5, generator=gen(12)) * w).sum(), theta)
    assert torch.equal(gh, gs) and gs.isfinite().all() and (gs[:, 4] == 0).all() and (gs != 0).any()

@pytest.mark.parametrize('tau', [torch.finfo(torch.float32).tiny, 1e-30, 1e-3, 1e3, torch.finfo(torch.float32).max])
def test_extreme_temperatures_finite_values_and_gradients(tau):
    logits = (5 * torch.randn(100, 8, generator=gen(13))).requires_grad_()
    y = relaxed_topk(logits, 4, tau, generator=gen(14))
    assert y.isfinite().all() and (y >= 0).all()
    torch.testing.assert_close(y.sum(-1), torch.full((100,), 4.0))
    (y * torch.arange(8.0)).sum().backward()
    assert logits.grad.isfinite().all()
    if tau < 1e-20: assert torch.equal(y.detach(), indicator(logits.detach(), 4, 14))

# --- randomness --------------------------------------------------------------------------------------

def test_generator_reproducible_and_global_rng_untouched():
    logits = torch.randn(50, 9, generator=gen(15))
    state = torch.get_rng_state()
    a, b = relaxed_topk(logits, 4, 0.5, generator=gen(16)), relaxed_topk(logits, 4, 0.5, generator=gen(16))
    assert torch.equal(a, b) and torch.equal(torch.get_rng_state(), state)
    assert not torch.equal(a, relaxed_topk(logits, 4, 0.5, generator=gen(17)))

# --- bad input ---------------------------------------------------------------------------------------

@pytest.mark.parametrize('call, match', [
    (lambda: relaxed_topk(torch.zeros(3), 0), 'k=0'),
    (lambda: relaxed_topk(torch.zeros(3), -1), 'k=-1'),
    (lambda: relaxed_topk(torch.zeros(3), 4), r'k=4 .*finite logits \(3\)'),
    (lambda: relaxed_topk(torch.tensor([[0.0, 1.0, 2.0], [0.0, float('-inf'), 1.0]]), 3), r'k=3 .*finite logits \(2\)'),
    (lambda: relaxed_topk(torch.zeros(3), 2.0), 'k=2.0'),
    (lambda: relaxed_topk(torch.zeros(3), True), 'k=True'),
    (lambda: relaxed_topk(torch.zeros(3), 2, 0.0), 'tau=0.0'),
    (lambda: relaxed_topk(torch.zeros(3), 2, float('nan')), 'tau=nan'),
    (lambda: relaxed_topk(torch.zeros(3), 2, 1e-50), 'tau=1e-50'),
    (lambda: relaxed_topk(torch.zeros(2, 3), 2, torch.tensor([1.0, -1.0])), r'tau\[1\]=-1.0'),
    (lambda: relaxed_topk(torch.zeros(2, 3), 2, torch.ones(3)), 'tau with shape'),
    (lambda: relaxed_topk(torch.tensor([0.0, float('nan')]), 1), 'logits contains NaN'),
    (lambda: relaxed_topk(torch.zeros(3, dtype=torch.int64), 1), 'logits must be a floating-point'),
    (lambda: relaxed_topk([0.0, 1.0], 1), 'logits must be a torch.Tensor'),
    (lambda: relaxed_topk(torch.zeros(3), 1, dim=1), 'dim=1'),
    (lambda: relaxed_topk(torch.zeros(3), 1, generator=0), 'generator'),
])
def test_bad_input_raises_value_error_naming_it(call, match):
    with pytest.raises(ValueError, match=match): call()

# --- fuzz --------------------------------------------------------------------------------------------

@given(st.lists(st.integers(1, 6), min_size=1, max_size=3), st.integers(1, 6), st.sampled_from(DTYPES),
       st.sampled_from([1e-30, 1e-3, 0.3, 1.0, 50.0]), st.floats(0.1, 1e4), st.booleans(), st.integers(0, 2**32))
def test_fuzz_finite_sums_to_k_finite_gradients(shape, k, dtype, tau, scale, mask, seed):
    g = gen(seed)
    logits = (scale * torch.randn(shape, generator=g, dtype=torch.float64)).to(dtype)
    if mask: logits = logits.masked_fill(torch.rand(shape, generator=g) < 0.3, float('-inf'))
    if (n_finite := int(logits.isfinite().sum(-1).min())) < max(k, 1) or n_finite == 0:
        with pytest.raises(ValueError, match='k=|all -inf'): relaxed_topk(logits, k, tau, generator=g)
        return
    leaf = logits.detach().requires_grad_()
    y = relaxed_topk(leaf, k, tau, hard=bool(seed % 2), generator=g)
    assert y.dtype == dtype and y.isfinite().all() and (y >= 0).all() and (y[logits.isneginf()] == 0).all()
    tol = {torch.float16: 1e-2 * k, torch.bfloat16: 5e-2 * k}.get(dtype, 1e-4 * k)
    assert ((y.double().sum(-1) - k).abs() <= tol).all()
    (y.float() * torch.linspace(-1, 1, shape[-1])).sum().backward()
    assert leaf.grad.isfinite().all()
