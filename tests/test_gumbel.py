"""Chapter 0 beyond the notebook: distributional tests of the samplers and every bad input.

Every statistical test uses a fixed seed and the p-value of its statistic's null distribution with
alpha = 1e-3, so a correct sampler fails a given test with probability 1e-3 at most."""
import itertools, math
import pytest, torch
from scipy import stats
from gumbel_tut import gumbel_noise, gumbel_max, gumbel_topk, plackett_luce_log_prob
from gumbel_tut.gumbel import gumbel_cdf, check_logits
from gumbel_tut.helpers import chi_square_pvalue

ALPHA = 1e-3
DEVICES = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])

def gen(seed, device='cpu'): return torch.Generator(device=device).manual_seed(seed)

def draw_counts(logits, n, seed, chunk=20_000):
    "Category counts of `n` Gumbel-max draws from 1-d `logits`, drawn in chunks to bound memory."
    g, counts = gen(seed), torch.zeros(len(logits), dtype=torch.int64)
    for start in range(0, n, chunk):
        rows = min(chunk, n - start)
        counts += torch.bincount(gumbel_max(logits.expand(rows, -1), generator=g), minlength=len(logits))
    return counts

CASES = {
    'near-uniform': torch.tensor([0.0, 1e-2, -1e-2, 2e-2, 0.0]),
    'peaked': torch.tensor([6.0, 0.0, -1.0, 2.0, -3.0]),
    'masked': torch.tensor([1.0, float('-inf'), 0.0, float('-inf'), -0.5]),
    '1000 categories': 0.5 * torch.randn(1000, generator=gen(123)),
}

@pytest.mark.parametrize('name', CASES)
def test_gumbel_max_matches_softmax(name):
    logits = CASES[name]
    n = 400_000
    counts = draw_counts(logits, n, seed=sum(map(ord, name)))
    probs = torch.softmax(logits.double(), 0)
    assert (n * probs[probs > 0]).min() >= 5, 'chi-square approximation needs expected counts >= 5'
    assert chi_square_pvalue(counts, probs) > ALPHA

def test_masked_categories_never_drawn():
    logits = torch.tensor([0.0, float('-inf'), 30.0, float('-inf')])
    draws = gumbel_max(logits.expand(100_000, -1), generator=gen(0))
    assert not torch.isin(draws, torch.tensor([1, 3])).any()

def test_tail_beyond_float32_reach():
    """Exceedances of t = 16.7, beyond the largest float32 inverse-CDF value (16.64), follow the true tail.

    The count of draws above t is Binomial(n, P(G > t)) ~ Poisson(n P(G > t)), about 11 here; a two-sided
    Poisson test must not reject, and in particular the count is not zero as it would be for float32 noise."""
    t, n, chunk = 16.7, 2 * 10**8, 2 * 10**7
    g = gen(5)
    count = sum(int((gumbel_noise(chunk, generator=g) > t).sum()) for _ in range(n // chunk))
    mean = n * -math.expm1(-math.exp(-t))
    p_two_sided = 2 * min(stats.poisson.cdf(count, mean), stats.poisson.sf(count - 1, mean))
    assert count > 0 and p_two_sided > ALPHA, (count, mean)

def test_batch_shapes_and_dim():
    logits = torch.randn(2, 5, 3, generator=gen(1))
    assert gumbel_max(logits, generator=gen(2)).shape == (2, 5)
    assert gumbel_max(logits, dim=1, generator=gen(2)).shape == (2, 3)
    assert gumbel_max(logits, dim=-3, generator=gen(2)).shape == (5, 3)
    assert gumbel_max(logits).dtype == torch.int64
    assert gumbel_topk(logits, 2, dim=1, generator=gen(2)).shape == (2, 2, 3)

def test_gumbel_noise_ks():
    x = gumbel_noise(10**6, generator=gen(3), dtype=torch.float64)
    assert stats.kstest(x.numpy(), lambda t: gumbel_cdf(torch.from_numpy(t)).numpy()).pvalue > ALPHA

def test_gumbel_noise_moments():
    "Mean gamma and variance pi^2/6: z-scores of the sample mean and variance below 4."
    n = 10**7
    x = gumbel_noise(n, generator=gen(4), dtype=torch.float64)
    var = math.pi**2 / 6
    assert abs(x.mean().item() - 0.5772156649015329) / math.sqrt(var / n) < 4
    kurtosis_excess = 12 / 5  # of the Gumbel distribution
    assert abs(x.var().item() - var) / math.sqrt(var**2 * (kurtosis_excess + 2) / n) < 4

@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_precision_noise_finite(dtype):
    x = gumbel_noise(10**7, generator=gen(6), dtype=dtype)
    assert x.dtype == dtype and torch.isfinite(x).all()

@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_precision_logits_match_softmax(dtype):
    logits = torch.tensor([0.0, 0.001, 0.002, 2.0], dtype=dtype)  # rounding makes equal logits in bfloat16
    n = 10**6
    counts = torch.bincount(gumbel_max(logits.expand(n, -1), generator=gen(7)), minlength=4)
    assert chi_square_pvalue(counts, torch.softmax(logits.double(), 0)) > ALPHA

@pytest.mark.parametrize('k', [1, 2, 3])
def test_gumbel_topk_matches_plackett_luce(k):
    logits = torch.tensor([1.5, 0.0, -0.5, 0.8])
    tuples = torch.tensor(list(itertools.permutations(range(4), k)))
    probs = plackett_luce_log_prob(logits.expand(len(tuples), -1), tuples).exp()
    assert abs(probs.sum().item() - 1) < 1e-5
    draws = gumbel_topk(logits.expand(500_000, -1), k, generator=gen(10 + k))
    base = 4 ** torch.arange(k - 1, -1, -1)
    codes, tuple_codes = (draws * base).sum(-1), (tuples * base).sum(-1)
    counts = (codes[:, None] == tuple_codes[None, :]).sum(0)
    assert counts.sum() == len(draws)
    assert chi_square_pvalue(counts, probs) > ALPHA

def test_gumbel_topk_masked_and_distinct():
    logits = torch.tensor([[0.0, float('-inf'), 1.0, 2.0, float('-inf')]]).expand(10_000, -1)
    draws = gumbel_topk(logits, 3, generator=gen(1))
    assert (draws.sort(-1).values == torch.tensor([0, 2, 3])).all()

@pytest.mark.parametrize('device', DEVICES)
def test_reproducible_and_global_rng_untouched(device):
    logits = torch.randn(64, 10, device=device)
    state = torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state() if device == 'cuda' else None
    for fn in (lambda g: gumbel_noise((3, 4), generator=g, device=device),
               lambda g: gumbel_max(logits, generator=g),
               lambda g: gumbel_topk(logits, 3, generator=g)):
        assert torch.equal(fn(gen(99, device)), fn(gen(99, device)))
    assert torch.equal(torch.get_rng_state(), state)
    if cuda_state is not None: assert torch.equal(torch.cuda.get_rng_state(), cuda_state)

def test_different_seeds_differ():
    assert not torch.equal(gumbel_noise(100, generator=gen(1)), gumbel_noise(100, generator=gen(2)))

nan, inf = float('nan'), float('inf')
BAD_LOGITS = [
    (torch.tensor([0.0, nan]), 'NaN'),
    (torch.tensor([0.0, inf]), '+inf'),
    (torch.tensor([[0.0, 1.0], [-inf, -inf]]), 'all -inf'),
    (torch.tensor([1, 2, 3]), 'floating-point'),
    (torch.tensor(1.0), '0-d'),
    (torch.zeros(2, 0), 'no categories'),
    ([0.0, 1.0], 'torch.Tensor'),
]

@pytest.mark.parametrize('fn', [gumbel_max, lambda x, **kw: gumbel_topk(x, 1, **kw), check_logits], ids=['gumbel_max', 'gumbel_topk', 'check_logits'])
@pytest.mark.parametrize('logits,message', BAD_LOGITS, ids=[m for _, m in BAD_LOGITS])
def test_bad_logits(fn, logits, message):
    with pytest.raises(ValueError, match='logits') as e: fn(logits)
    assert message in str(e.value)

@pytest.mark.parametrize('dim', [2, -3, 5])
def test_dim_out_of_range(dim):
    with pytest.raises(ValueError, match=f'dim={dim}'): gumbel_max(torch.zeros(2, 3), dim=dim)

@pytest.mark.parametrize('k,message', [(0, 'k=0'), (-1, 'k=-1'), (1.5, 'k=1.5'), (True, 'k=True'), (4, 'finite logits (3)')])
def test_bad_k(k, message):
    logits = torch.tensor([[0.0, 1.0, 2.0, -inf], [0.0, 1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match='k') as e: gumbel_topk(logits, k)
    assert message in str(e.value)

@pytest.mark.parametrize('dtype', [torch.int32, torch.bool, 'float32'])
def test_bad_noise_dtype(dtype):
    with pytest.raises(ValueError, match='dtype'): gumbel_noise(3, dtype=dtype)

def test_bad_noise_shape():
    with pytest.raises(ValueError, match='shape'): gumbel_noise((2, -1))

def test_chi_square_pvalue_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match='same length'): chi_square_pvalue(torch.ones(3), torch.ones(2) / 2)

def test_chapter_credits_the_trick_in_its_text():
    "Chapter 0's prose, not only its reference list, credits where the trick comes from and who relaxed it."
    import json, re
    from pathlib import Path
    cells = json.loads((Path(__file__).resolve().parents[1] / 'nbs' / '00_gumbel.ipynb').read_text())['cells']
    md = [''.join(c['source']) for c in cells if c['cell_type'] == 'markdown']
    refs = next(i for i, t in enumerate(md) if t.startswith('## References'))
    text = re.sub(r'\s+', ' ', ' '.join(md[:refs]))
    for credit in ('Luce (1959)', 'Yellott (1977)', 'Papandreou & Yuille 2011', 'Maddison, Tarlow & Minka 2014',
                   'Jang, Gu & Poole (2017)', 'Maddison, Mnih & Teh (2017)', 'Huijben et al. (2022)'):
        assert credit in text, f'the text of chapter 0 does not credit {credit}'
    assert 'Huijben' in md[refs] and 'arXiv:2110.01515' in md[refs]
