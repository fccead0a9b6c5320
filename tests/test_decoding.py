"""Chapter 5's token sampler and watermark beyond the notebook: `sample_tokens`, `sample_watermarked`,
`watermark_pvalue`.

Statistical tests use fixed seeds and thresholds from the statistic's null distribution: chi-square and
Kolmogorov-Smirnov p-values > ALPHA = 1e-3. Each truncation rule is checked against a kept set computed from its
stated definition with Python loops, including ties at the edge and k >= V."""
import math
import pytest, torch
from scipy import stats

from gumbel_tut.decoding import (sample_tokens, truncated_logits, sample_watermarked, watermark_pvalue,
                                 keyed_gumbel_noise)
from gumbel_tut.checks import HostReads, validation
from gumbel_tut.helpers import chi_square_pvalue

ALPHA = 1e-3
N = 30_000
LOGITS = torch.tensor([2.0, 1.0, 1.0, 0.0, -1.0, -3.0, -3.0])  # ties at the top-k / top-p edge and in the tail

def gen(seed): return torch.Generator().manual_seed(seed)

def kept_by_definition(z, rule, value):
    "The kept set from the definitions of the chapter, with Python loops over one row."
    z = z.tolist(); p = torch.tensor(z).softmax(-1).tolist()
    order = sorted(range(len(z)), key=lambda v: -z[v])
    if rule == 'top_k':
        kth = z[order[min(value, len(z)) - 1]] if value else -math.inf
        return {v for v in order if z[v] >= kth}
    if rule == 'min_p': return {v for v in order if p[v] >= value * max(p) * (1 - 1e-6)}
    mass, edge = 0.0, None
    for v in order:
        if mass >= value: break
        mass, edge = mass + p[v], p[v]
    return {v for v in order if p[v] >= edge}

CASES = [('top_k', 1), ('top_k', 2), ('top_k', 3), ('top_k', 4), ('top_k', 7), ('top_k', 100), ('top_k', 0),
         ('top_p', 0.3), ('top_p', 0.55), ('top_p', 0.85), ('top_p', 0.95), ('top_p', 0.999), ('top_p', 1.0),
         ('min_p', 0.0), ('min_p', 0.2), ('min_p', 0.4), ('min_p', 0.01), ('min_p', 1.0)]

@pytest.mark.parametrize('temperature', [0.7, 1.0])
@pytest.mark.parametrize('rule,value', CASES)
def test_truncation_rule_matches_its_definition(rule, value, temperature):
    z = LOGITS / temperature
    kept = set(torch.isfinite(truncated_logits(LOGITS[None], temperature, **{rule: value})[0]).nonzero()
               .flatten().tolist())
    assert kept == kept_by_definition(z, rule, value)
    seeds = torch.randint(0, 2**62, (N,), generator=gen(len(kept) + int(100 * value)))
    draws = sample_tokens(LOGITS.expand(N, -1), temperature, **{rule: value},
                          seed=seeds, position=torch.zeros(N, dtype=torch.long))
    counts = torch.bincount(draws, minlength=len(LOGITS))
    probs = torch.zeros(len(LOGITS)); probs[list(kept)] = z[list(kept)].softmax(-1)
    if len(kept) == 1: assert counts[list(kept)[0]] == N
    else: assert chi_square_pvalue(counts, probs) > ALPHA

def test_per_row_settings_match_scalar_settings():
    x = torch.randn(6, 40, generator=gen(0))
    t, k, p, m = [0.5, 1.0, 2.0, 0.8, 1.0, 1.3], [0, 3, 10, 0, 40, 1], [1.0, 0.9, 0.5, 0.7, 1.0, 0.2], \
                 [0.0, 0.1, 0.0, 0.05, 0.5, 0.0]
    rows = truncated_logits(x, torch.tensor(t), torch.tensor(k), torch.tensor(p), torch.tensor(m))
    for i in range(6):
        one = truncated_logits(x[i:i + 1], t[i], k[i], p[i], m[i])
        assert torch.equal(torch.isfinite(rows[i]), torch.isfinite(one[0]))

def test_generator_path_matches_softmax():
    draws = sample_tokens(LOGITS.expand(N, -1), 1.3, generator=gen(3))
    assert chi_square_pvalue(torch.bincount(draws, minlength=7), (LOGITS / 1.3).softmax(-1)) > ALPHA

def test_batch_invariance_under_shuffle_and_resize():
    x = torch.randn(16, 300, generator=gen(1))
    seeds, positions = torch.randint(0, 2**62, (16,), generator=gen(2)), torch.arange(16) * 3
    settings = dict(temperature=0.9, top_k=50, top_p=0.9, min_p=0.02)
    full = sample_tokens(x, **settings, seed=seeds, position=positions)
    for size in (1, 5, 16):
        pick = torch.randperm(16, generator=gen(size))[:size]
        part = sample_tokens(x[pick], **settings, seed=seeds[pick], position=positions[pick])
        assert torch.equal(part, full[pick])
    other = torch.randn(7, 300, generator=gen(4))
    bigger = torch.cat([other, x[:4]])
    part = sample_tokens(bigger, **settings, seed=torch.cat([torch.arange(7), seeds[:4]]),
                         position=torch.cat([torch.zeros(7, dtype=torch.long), positions[:4]]))
    assert torch.equal(part[7:], full[:4])

def test_keyed_noise_is_gumbel():
    g = keyed_gumbel_noise(torch.arange(2000), torch.zeros(2000, dtype=torch.long), 50).flatten()
    assert stats.kstest(g.double().numpy(), 'gumbel_r').pvalue > ALPHA

@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_temperature_zero_is_argmax(dtype):
    x = torch.randn(64, 100, generator=gen(5)).to(dtype)
    x[0] = 0.0  # all tied: argmax's first index
    assert torch.equal(sample_tokens(x, 0.0), x.float().argmax(-1))
    assert torch.equal(sample_tokens(x, 0, top_k=3, top_p=0.5), x.float().argmax(-1))
    t = torch.zeros(64); t[::2] = 1.0
    out = sample_tokens(x, t, generator=gen(6))
    assert torch.equal(out[1::2], x.float().argmax(-1)[1::2])

@pytest.mark.parametrize('kwargs,name', [
    (dict(temperature=-0.5), 'temperature'), (dict(temperature=math.inf), 'temperature'),
    (dict(temperature=math.nan), 'temperature'), (dict(temperature=torch.tensor([1.0, -1.0])), 'temperature'),
    (dict(temperature=torch.ones(3)), 'temperature'),
    (dict(top_p=0.0), 'top_p'), (dict(top_p=1.01), 'top_p'), (dict(top_p=torch.tensor([0.5, 0.0])), 'top_p'),
    (dict(top_k=-1), 'top_k'), (dict(top_k=2.5), 'top_k'), (dict(top_k=torch.tensor([1.0, 2.0])), 'top_k'),
    (dict(min_p=-0.1), 'min_p'), (dict(min_p=1.5), 'min_p'), (dict(min_p=True), 'min_p'),
    (dict(seed=torch.arange(2)), 'position'), (dict(position=torch.arange(2)), 'seed'),
    (dict(seed=torch.arange(3), position=torch.arange(3)), 'seed'),
    (dict(seed=torch.arange(2).int(), position=torch.arange(2)), 'seed'),
    (dict(generator=0), 'generator'),
])
def test_bad_input_names_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        sample_tokens(torch.randn(2, 5), **kwargs)

@pytest.mark.parametrize('logits,match', [
    (torch.tensor([[0.0, math.nan]]), 'NaN'), (torch.tensor([[0.0, math.inf]]), r'\+inf'),
    (torch.full((1, 3), -math.inf), 'all -inf'), (torch.randn(5), r'\(B, V\)'),
    (torch.randint(0, 3, (2, 3)), 'floating'), ([[0.0, 1.0]], 'torch.Tensor'),
])
def test_bad_logits(logits, match):
    with pytest.raises(ValueError, match=match): sample_tokens(logits)

def test_no_host_reads_with_validation_off():
    x = torch.randn(4, 64, generator=gen(7))
    settings = dict(temperature=torch.tensor([0.0, 0.5, 1.0, 2.0]), top_k=torch.tensor([0, 3, 64, 10]),
                    top_p=torch.tensor([1.0, 0.9, 0.5, 0.99]), min_p=torch.tensor([0.0, 0.1, 0.0, 0.3]))
    for noise in (dict(seed=torch.arange(4), position=torch.arange(4)), dict(generator=gen(8))):
        with validation(False), HostReads() as reads:
            sample_tokens(x, **settings, **noise)
            sample_tokens(x, 0.7, top_k=5, top_p=0.9, min_p=0.1, **noise)
        assert reads.calls == []
    with HostReads() as reads: sample_tokens(x, **settings, seed=torch.arange(4), position=torch.arange(4))
    assert reads.calls  # with validation on, the checks do read values: the counter sees them

# --- watermark -------------------------------------------------------------------------------------

def watermarked_text(n, secret, h, V=40, seed=0):
    "n tokens from random logits, watermarked with `secret` and context length h."
    g, tokens = gen(seed), list(range(h))
    for _ in range(n):
        logits = 2 * torch.randn(1, V, generator=g)
        tokens.append(int(sample_watermarked(logits, torch.tensor([tokens[-h:]]), secret)[0]))
    return torch.tensor(tokens)

def test_pvalue_uniform_without_watermark():
    texts = torch.randint(0, 40, (300, 120), generator=gen(9))
    p = [watermark_pvalue(t, 1000 + i, 2)[0] for i, t in enumerate(texts)]
    assert stats.kstest(p, 'uniform').pvalue > ALPHA

def test_pvalue_small_on_watermarked_text_and_not_for_other_keys():
    text = watermarked_text(150, secret=42, h=2)
    assert watermark_pvalue(text, 42, 2)[0] < 1e-6
    others = [watermark_pvalue(text, k, 2)[0] for k in range(200)]
    assert stats.kstest(others, 'uniform').pvalue > ALPHA

def test_skip_repeats_restores_the_null():
    passage = torch.randint(0, 40, (40,), generator=gen(10)).repeat(6)
    fp = {skip: sum(watermark_pvalue(passage, k, 2, skip)[0] < 0.01 for k in range(1000)) for skip in (0, 1)}
    bound = stats.binom.ppf(1 - ALPHA, 1000, 0.01)
    assert fp[1] <= bound < fp[0]

def test_watermark_is_distortion_free():
    keys = torch.randint(-2**63, 2**63 - 1, (N,), dtype=torch.int64, generator=gen(11))
    chosen = sample_watermarked(LOGITS.expand(N, -1), torch.tensor([[5, 9]]).expand(N, -1), keys)
    assert chi_square_pvalue(torch.bincount(chosen, minlength=7), LOGITS.softmax(-1)) > ALPHA
