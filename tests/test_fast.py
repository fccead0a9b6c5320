"""Chapter 5 beyond the notebook: the compiled CPU fast path is chapter 1's sampler, in distribution and in API.

`fast_gumbel_softmax` is called directly (it does not apply the size threshold), so small inputs exercise the
compiled kernels too. Statistical tests use fixed seeds and thresholds from the statistic's null distribution:
chi-square, KS and Poisson p-values > ALPHA = 1e-3, z-scores |z| < 4. No test measures time."""
import json, math, subprocess, sys
from pathlib import Path
import numpy as np
import pytest, torch
from scipy import stats
import gumbel_tut.fast as fast
from gumbel_tut import gumbel_softmax, gumbel_cdf, chi_square_pvalue, check_logits
from gumbel_tut.fast import (fast_gumbel_softmax, fast_path_supported, counter_gumbel_noise, counter_bits, draw_key,
                             splitmix64, set_fast_path, FAST_MIN_NUMEL, gumbel_tut_bench)

ALPHA, Z_MAX = 1e-3, 4.0
HALF = [torch.float16, torch.bfloat16]
DTYPES = [torch.float32, torch.float64] + HALF

def gen(seed): return torch.Generator().manual_seed(seed)

def eager_formula(x, key, tau, dim=-1):
    "Chapter 1's formula, run eagerly (autograd included) on the counter-based noise of `key`."
    dtype = torch.float32 if x.dtype in HALF else x.dtype
    xl = x.movedim(dim, -1).to(dtype)
    z = xl + counter_gumbel_noise(key, torch.arange(xl.numel()).view(xl.shape), dtype)
    return torch.softmax((z - z.amax(-1, keepdim=True).detach()) / tau, -1).movedim(-1, dim).to(x.dtype)

# --- the generator ---------------------------------------------------------------------------------

def test_splitmix64_matches_published_algorithm():
    mask, seed, want = 2**64 - 1, 1234567, []
    for _ in range(4):
        seed = (seed + 0x9E3779B97F4A7C15) & mask
        z = ((seed ^ (seed >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        want.append(z ^ (z >> 31))
    got = [int(v) & mask for v in splitmix64(torch.tensor(1234567), torch.arange(1, 5))]
    assert got == want

def test_noise_ks_moments_and_finite():
    g = counter_gumbel_noise(draw_key(gen(0)), torch.arange(2 * 10**6), torch.float64)
    assert g.isfinite().all()
    assert stats.kstest(g.numpy(), lambda t: gumbel_cdf(torch.from_numpy(t)).numpy()).pvalue > ALPHA
    n = g.numel()
    assert abs((g.mean().item() - np.euler_gamma) / math.sqrt(math.pi**2 / 6 / n)) < Z_MAX
    # variance: Var(G) = pi^2/6, and Var((G - mu)^2) = mu4 - sigma^4 with excess kurtosis 12/5
    s2 = g.var().item(); var_s2 = (math.pi**2 / 6)**2 * (2 + 12 / 5) / n
    assert abs((s2 - math.pi**2 / 6) / math.sqrt(var_s2)) < Z_MAX

def test_noise_float32_matches_float64_route():
    key, counter = draw_key(gen(1)), torch.arange(10**5)
    g32, g64 = counter_gumbel_noise(key, counter, torch.float32), counter_gumbel_noise(key, counter, torch.float64)
    torch.testing.assert_close(g32.double(), g64, rtol=2e-7, atol=2e-7)

def test_noise_reach_and_tail_beyond_float32():
    "The extremes are chapter 0's, and exceedances of 16.7 (past float32 inverse-CDF noise) follow the true tail."
    k = torch.tensor([0, 2**53 - 1])
    u = (k.double() * 2.0**-53).clamp(min=2.0**-54)
    lo, hi = u.log().neg().float().log().neg()
    assert abs(lo + math.log(54 * math.log(2))) < 1e-5 and abs(hi - 53 * math.log(2)) < 1e-4
    # The compiled kernels return z's row max; for a row of K zeros that is the max of K of the kernel's Gumbels,
    # which exceeds t with probability 1 - exp(-K e^-t). Count such rows over 2 * 10^8 draws.
    t, n, k, rows, g = 16.7, 2 * 10**8, 16, 10**6, gen(2)
    zeros, count = torch.zeros(rows, k), 0
    for _ in range(n // (rows * k)):
        _, zmax, _ = fast._run_kernel("hard", zeros, draw_key(g), torch.tensor(1.0))   # a fresh key per chunk
        assert zmax.isfinite().all()
        count += int((zmax > t).sum())
    mean = n // k * -math.expm1(-k * math.exp(-t))
    p_two_sided = 2 * min(stats.poisson.cdf(count, mean), stats.poisson.sf(count - 1, mean))
    assert count > 0 and p_two_sided > ALPHA, (count, mean)

def test_adjacent_counters_independent():
    bits = fast._shift_right(counter_bits(draw_key(gen(3)), torch.arange(2 * 10**6)), 11)
    cell = bits >> 49
    pairs = cell[0::2] * 16 + cell[1::2]
    assert chi_square_pvalue(torch.bincount(pairs, minlength=256), torch.full((256,), 1 / 256)) > ALPHA

ONE_THREAD_SCRIPT = r"""
import torch
torch.set_num_threads(1)
from gumbel_tut.fast import fast_gumbel_softmax, draw_key, counter_gumbel_noise
for shape in [(256, 10), (7, 33), (3, 1000)]:
    x = torch.randn(*shape)
    y = fast_gumbel_softmax(x, 0.5, generator=torch.Generator().manual_seed(1))
    z = x + counter_gumbel_noise(draw_key(torch.Generator().manual_seed(1)), torch.arange(x.numel()).view(shape))
    torch.testing.assert_close(y, torch.softmax((z - z.amax(-1, keepdim=True)) / 0.5, -1), rtol=1e-5, atol=1e-6)
print('one-thread kernels OK')
"""

def test_kernels_single_threaded():
    """Regression: with one thread, GCC once cut the generated loop short (signed overflow of index * constant).

    The forward kernel covers the shared noise code; the other kernels are generated from the same loop structure."""
    out = subprocess.run([sys.executable, '-c', ONE_THREAD_SCRIPT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and 'one-thread kernels OK' in out.stdout, out.stderr[-3000:]

def test_keys_reproducible_and_global_rng_untouched():
    assert torch.equal(draw_key(gen(4)), draw_key(gen(4)))
    logits = torch.randn(50, 40, generator=gen(5))
    a = fast_gumbel_softmax(logits, 0.5, generator=gen(6))
    state = torch.get_rng_state()
    b = fast_gumbel_softmax(logits, 0.5, generator=gen(6))
    assert torch.equal(a, b) and torch.equal(torch.get_rng_state(), state)
    g = gen(6); fast_gumbel_softmax(logits, generator=g)
    assert not torch.equal(fast_gumbel_softmax(logits, 0.5, generator=g), a)   # the generator advanced
    torch.manual_seed(7); c = fast_gumbel_softmax(logits, 0.5)
    torch.manual_seed(7); d = fast_gumbel_softmax(logits, 0.5)
    assert torch.equal(c, d)

# --- the sampler: chapter 1's checks ----------------------------------------------------------------

# Rows on the simplex, hard one-hot, dtypes, masking: tests/test_relax.py runs all of chapter 1's checks through
# gumbel_softmax twice, once with this fast path switched on; here are the checks specific to the kernel.

@pytest.mark.parametrize('dim', [0, 1, 2, -1])
def test_any_dim_equals_eager_formula(dim):
    logits = torch.randn(30, 40, 50, generator=gen(12))
    y = fast_gumbel_softmax(logits, 0.5, dim=dim, generator=gen(13))
    torch.testing.assert_close(y.sum(dim), torch.ones_like(y.sum(dim)))
    torch.testing.assert_close(y, eager_formula(logits, draw_key(gen(13)), 0.5, dim), rtol=1e-5, atol=1e-6)

@pytest.mark.parametrize('dtype', DTYPES)
def test_hard_is_one_hot_and_argmax_of_soft_draw(dtype):
    logits = torch.randn(5000, 6, generator=gen(14)).to(dtype)
    h = fast_gumbel_softmax(logits, 0.3, hard=True, generator=gen(15))
    assert h.dtype == dtype and ((h == 0) | (h == 1)).all() and (h.sum(-1) == 1).all()
    s = eager_formula(logits, draw_key(gen(15)), 0.3).float()
    agree = (h.argmax(-1) == s.argmax(-1)).float().mean()
    assert agree == 1 if dtype in (torch.float32, torch.float64) else agree > 0.99

def test_hard_exactly_one_under_ties():
    h = fast_gumbel_softmax(torch.full((100, 5), 1e30), 1.0, hard=True, generator=gen(16))
    assert (h.sum(-1) == 1).all() and ((h == 0) | (h == 1)).all()

@pytest.mark.parametrize('hard', [False, True])
def test_masked_categories_exactly_zero(hard):
    logits = torch.tensor([0.0, float('-inf'), 5.0, float('-inf'), -3.0]).expand(100_000, -1)
    y = fast_gumbel_softmax(logits, 0.05, hard=hard, generator=gen(17))
    assert (y[:, [1, 3]] == 0).all()

def test_extreme_logits_and_low_tau():
    y = fast_gumbel_softmax(torch.tensor([[3e38, 0.0, -3e38]]), 1e-3, generator=gen(18))
    assert torch.equal(y, torch.tensor([[1.0, 0.0, 0.0]]))
    for dtype in HALF:
        logits = (500 * torch.randn(1000, 16, generator=gen(19))).to(dtype)
        for hard in (False, True):
            y = fast_gumbel_softmax(logits, 0.01, hard=hard, generator=gen(20))
            assert y.isfinite().all() and (y >= 0).all()

def test_implied_noise_differences_are_logistic():
    "At tau = 1, log y_1 - log y_0 = G_1 - G_0 for zero logits: the difference of two Gumbels is logistic."
    y = fast_gumbel_softmax(torch.zeros(2**18, 2, dtype=torch.float64), generator=gen(22))
    assert stats.kstest((y[:, 1].log() - y[:, 0].log()).numpy(), stats.logistic.cdf).pvalue > ALPHA

def test_mean_approaches_softmax_as_tau_goes_to_zero():
    logits = torch.tensor([1.0, -0.5, 2.0, 0.0, 0.3])
    p, n = logits.softmax(0), 400_000
    def z(tau):
        y = fast_gumbel_softmax(logits.expand(n, -1), tau, generator=gen(23)).double()
        return ((y.mean(0) - p) / (y.std(0) / math.sqrt(n))).abs().max()
    assert z(0.02) < Z_MAX
    assert z(1.0) > 10 * Z_MAX

# --- gradients and memory ---------------------------------------------------------------------------

@pytest.mark.parametrize('shape', [(20, 30, 40), (4, 10, 12)])   # recomputed / autograd-softmax backward
@pytest.mark.parametrize('dim', [0, 1, -1])
def test_gradient_equals_autograd_of_same_noise(dim, shape):
    x = torch.randn(*shape, generator=gen(24), requires_grad=True)
    up = torch.randn(*shape, generator=gen(25))
    g_fast, = torch.autograd.grad(fast_gumbel_softmax(x, 0.6, dim=dim, generator=gen(26)), x, up)
    g_ref, = torch.autograd.grad(eager_formula(x, draw_key(gen(26)), 0.6, dim), x, up)
    torch.testing.assert_close(g_fast, g_ref, rtol=1e-4, atol=1e-6)

def test_gradcheck_float64():
    theta = torch.randn(4, 6, dtype=torch.float64, generator=gen(27), requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: fast_gumbel_softmax(t, 0.7, generator=gen(28)), (theta,))
    assert torch.autograd.gradcheck(lambda t: fast_gumbel_softmax(t, 1.3, dim=0, generator=gen(29)), (theta,))

@pytest.mark.parametrize('rows', [64, 4000])   # soft below / above SMALL_GRAD_MAX_NUMEL: autograd softmax / recomputed
def test_straight_through_gradient_equals_soft_gradient(rows):
    theta = torch.randn(rows, 10, generator=gen(30), requires_grad=True)
    w = torch.randn(rows, 10, generator=gen(31))
    gh, = torch.autograd.grad((fast_gumbel_softmax(theta, 0.4, hard=True, generator=gen(32)) * w).sum(), theta)
    gs, = torch.autograd.grad((fast_gumbel_softmax(theta, 0.4, generator=gen(32)) * w).sum(), theta)
    assert gs.abs().sum() > 0
    if theta.numel() >= fast.SMALL_GRAD_MAX_NUMEL: assert torch.equal(gh, gs)   # the same backward kernel
    else: torch.testing.assert_close(gh, gs, rtol=1e-5, atol=1e-6)

def reference(*args, **kwargs):
    "Chapter 1's reference `gumbel_softmax`, with the dispatch to the fast path switched off."
    previous = set_fast_path(False)
    try: return gumbel_softmax(*args, **kwargs)
    finally: set_fast_path(previous)

def _saved(fn, x):
    "(new bytes saved for backward, bytes of saved tensors that share x's storage)."
    new, shared = [], []
    def pack(t):
        same = t.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
        (shared if same else new).append(t.numel() * t.element_size())
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t): fn(x)
    return sum(new), sum(shared)

@pytest.mark.parametrize('hard', [False, True])
@pytest.mark.parametrize('dim', [-1, 0])
def test_no_saved_bxk_activation(hard, dim):
    x = torch.randn(128, 512, requires_grad=True)
    new, shared = _saved(lambda t: fast_gumbel_softmax(t, 0.5, hard=hard, dim=dim), x)
    assert new <= 64, new                      # a 2-word key and a scalar tau
    assert shared == x.numel() * 4             # the caller's logits themselves, not a copy
    ref_new, _ = _saved(lambda t: reference(t, 0.5, hard=hard, dim=dim), x)
    assert ref_new >= x.numel() * 4            # the eager reference keeps B x K activations

# --- bad input: the same ValueErrors as chapter 1 -----------------------------------------------------

def _nan_row():
    x = torch.zeros(64, 300); x[40, 7] = float('nan'); return x
def _inf_row():
    x = torch.zeros(64, 300); x[40, 7] = float('inf'); return x
def _all_masked_row():
    x = torch.zeros(64, 300); x[40] = float('-inf'); return x

BAD = {'tau=0': (torch.zeros(8, 3), dict(tau=0.0)), 'tau<0': (torch.zeros(8, 3), dict(tau=-0.5)),
       'tau nan': (torch.zeros(8, 3), dict(tau=float('nan'))), 'tau inf': (torch.zeros(8, 3), dict(tau=float('inf'))),
       'tau string': (torch.zeros(8, 3), dict(tau='1')),
       'logits nan': (_nan_row(), {}), 'logits +inf': (_inf_row(), {}), 'logits all -inf': (_all_masked_row(), {}),
       'logits int': (torch.tensor([[1, 2]]), {}), 'dim': (torch.zeros(2, 3), dict(dim=2)),
       'no categories': (torch.zeros(4, 0), {}), 'not a tensor': ([[0.0, 1.0]], {})}

@pytest.mark.parametrize('case', BAD)
def test_bad_input_same_error_as_reference(case):
    logits, kw = BAD[case]
    with pytest.raises(ValueError) as want: reference(logits, **kw)
    with pytest.raises(ValueError) as got: fast_gumbel_softmax(logits, **kw)
    assert str(got.value) == str(want.value)

# --- dispatch, fallback, benchmark ---------------------------------------------------------------------

def test_fast_path_supported():
    big = torch.zeros(FAST_MIN_NUMEL // 64 + 1, 64)
    assert fast_path_supported(big, 1.0, -1) and fast_path_supported(big.half(), 0.5, 0)
    assert not fast_path_supported(torch.zeros(16, 10))                    # below the size threshold
    assert fast_path_supported(torch.zeros(256, 10))                       # a small batch (256 ten-way choices) takes the fast path
    assert not fast_path_supported(big, torch.tensor(1.0))                 # tensor tau: reference (gradient to tau)
    assert not fast_path_supported(big, 0.0) and not fast_path_supported(big, float('nan'))
    assert not fast_path_supported(big.long()) and not fast_path_supported(big, dim=2)
    previous = set_fast_path(False)
    try: assert not fast_path_supported(big)
    finally: set_fast_path(previous)

def test_gumbel_softmax_dispatches():
    "Chapter 1's entry point runs the fast path where it is supported, the reference elsewhere."
    big, small = torch.randn(300, 100, generator=gen(50)), torch.randn(16, 10, generator=gen(51))
    for hard in (False, True):
        assert torch.equal(gumbel_softmax(big, 0.7, hard=hard, generator=gen(52)), fast_gumbel_softmax(big, 0.7, hard, generator=gen(52)))
        assert torch.equal(gumbel_softmax(small, 0.7, hard=hard, generator=gen(53)), reference(small, 0.7, hard=hard, generator=gen(53)))
    tau = torch.full((300, 1), 0.7)  # a tensor temperature stays on the reference path (gradient to tau)
    assert torch.equal(gumbel_softmax(big, tau, generator=gen(54)), reference(big, tau, generator=gen(54)))

def test_compile_failure_falls_back_to_reference(monkeypatch):
    def broken_compile(*args, **kwargs): raise RuntimeError('no C++ compiler (simulated)')
    monkeypatch.setattr(torch, 'compile', broken_compile)
    monkeypatch.setattr(fast, '_compiled', {})
    monkeypatch.setattr(fast, 'compile_seconds', {})
    monkeypatch.setattr(fast, '_fast_state', {'enabled': True, 'broken': None})
    logits = torch.randn(200, 100, generator=gen(40))
    with pytest.warns(RuntimeWarning, match='simulated'):
        y = fast_gumbel_softmax(logits, 0.5, generator=gen(41))
    g = gen(41); draw_key(g)   # the fallback ran after the key draw
    assert torch.equal(y, reference(logits, 0.5, generator=g))
    assert not fast_path_supported(torch.zeros(1000, 100))

def test_bench_json_rows(tmp_path):
    path = tmp_path / 'bench.json'
    rows = gumbel_tut_bench(shapes='16x10,160x128', dtypes='float32', device='cpu', modes='fwd,fwd+bwd,hard', rounds=2, json=str(path))
    saved = json.loads(path.read_text())
    assert saved == rows and len(rows) == 6
    assert set(rows[0]) == {'shape', 'dtype', 'device', 'mode', 'ours_ms', 'torch_ms', 'clone_ms'}
    assert [r['mode'] for r in rows[:3]] == ['fwd', 'fwd+bwd', 'hard'] and rows[3]['shape'] == '160x128'
    assert all(r[k] > 0 for r in rows for k in ('ours_ms', 'torch_ms', 'clone_ms'))

def test_console_script(tmp_path):
    path = tmp_path / 'b.json'
    script = Path(sys.executable).parent / 'gumbel-tut-bench'   # installed by `pip install -e .` ([project.scripts])
    out = subprocess.run([str(script), '--shapes', '8x10', '--modes', 'fwd', '--rounds', '2', '--device', 'cpu', '--json', str(path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert '| 8x10 | float32 | cpu | fwd |' in out.stdout
    assert json.loads(path.read_text())[0]['shape'] == '8x10'
