"""The Triton backend (nbs/14_triton.ipynb): the kernels' noise, samples, gradients and errors.

Without a CUDA device the kernels run in Triton's interpreter (TRITON_INTERPRET=1, set here before triton is
imported) on small CPU tensors: that checks correctness, not speed. `make test-triton` installs the `triton`
extra and runs this file; `make bench-gpu` runs it on CUDA. Statistical tests use fixed seeds and
thresholds from the statistic's null distribution (p-values > ALPHA = 1e-3)."""
import math, os, re
import pytest, torch
if not torch.cuda.is_available(): os.environ.setdefault('TRITON_INTERPRET', '1')
pytest.importorskip('triton', reason="triton is not installed: `make test-triton` installs the 'triton' extra and runs these tests")
from scipy import stats
from gumbel_tut.gumbel import check_logits
from gumbel_tut.helpers import chi_square_pvalue
import gumbel_tut.relax as relax
from gumbel_tut.backends import gumbel_softmax
from gumbel_tut.triton_backend import triton_gumbel_softmax, triton_unavailable, _triton_kernels

ALPHA = 1e-3
DEVICE = 'cpu' if os.environ.get('TRITON_INTERPRET') == '1' else 'cuda'

def gen(seed): return torch.Generator(DEVICE).manual_seed(seed)
def randn(*shape, seed=0): return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(DEVICE)

def test_available_here():
    assert triton_unavailable() is None

def test_soft_rows_on_simplex_and_masks():
    x = randn(300, 7); x[:, 2] = float('-inf')
    y = triton_gumbel_softmax(x, 0.5, generator=gen(1))
    assert y.shape == x.shape and y.dtype == x.dtype and y.isfinite().all() and (y >= 0).all()
    assert (y[:, 2] == 0).all()
    torch.testing.assert_close(y.sum(-1), torch.ones(300, device=DEVICE))
    h = triton_gumbel_softmax(x, 0.5, hard=True, generator=gen(1))
    assert ((h == 0) | (h == 1)).all() and (h.sum(-1) == 1).all() and (h[:, 2] == 0).all()
    assert torch.equal(h.argmax(-1), y.argmax(-1))   # same seed: same perturbed logits

def test_reproducible_and_any_dim():
    x = randn(5, 40, 3, seed=2)
    a = gumbel_softmax(x, 0.7, dim=1, generator=gen(3), backend='triton')
    b = gumbel_softmax(x, 0.7, dim=1, generator=gen(3), backend='triton')
    assert torch.equal(a, b) and a.shape == x.shape
    torch.testing.assert_close(a.sum(1), torch.ones(5, 3, device=DEVICE))
    assert not torch.equal(a, gumbel_softmax(x, 0.7, dim=1, generator=gen(4), backend='triton'))

def test_noise_is_gumbel():
    "At tau = 1 with zero logits, log y_1 - log y_0 = G_1 - G_0, whose law is logistic."
    y = triton_gumbel_softmax(torch.zeros(2**15, 2, device=DEVICE), generator=gen(5)).double()
    assert stats.kstest((y[:, 1].log() - y[:, 0].log()).cpu().numpy(), stats.logistic.cdf).pvalue > ALPHA

def test_hard_frequencies_chi_square():
    row = torch.tensor([2.0, 0.5, 0.0, -1.0, -3.0, 1.0, float('-inf'), -0.5])
    h = triton_gumbel_softmax(row.to(DEVICE).expand(2**16, -1).contiguous(), hard=True, generator=gen(6))
    counts = h.sum(0).cpu()
    assert counts[6] == 0
    assert chi_square_pvalue(counts, torch.softmax(row.double(), 0)) > ALPHA

def test_gradient_against_reference_formula():
    "The backward kernel recomputes the sample: its gradient equals autograd of chapter 1's formula at the same sample."
    x = randn(64, 10, seed=7).requires_grad_()
    up = randn(64, 10, seed=8)
    y = triton_gumbel_softmax(x, 0.6, generator=gen(9))
    g, = torch.autograd.grad(y, x, up)
    # recover the perturbed logits from the sample: z = tau * log y + c per row, so softmax(z / tau) = y
    z = (0.6 * y.detach().log()).requires_grad_()
    y_ref = torch.softmax(z / 0.6, -1)
    torch.testing.assert_close(y_ref, y.detach(), rtol=1e-5, atol=1e-6)
    g_ref, = torch.autograd.grad(y_ref, z, up)
    torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-6)
    gh, = torch.autograd.grad(triton_gumbel_softmax(x, 0.6, hard=True, generator=gen(9)), x, up)
    torch.testing.assert_close(gh, g)   # straight-through: the soft sample's gradient

def test_saves_only_the_logits():
    x = randn(32, 16).requires_grad_()
    saved = []
    def pack(t):
        saved.append((t.untyped_storage().data_ptr() == x.untyped_storage().data_ptr(), t.numel()))
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t): triton_gumbel_softmax(x, 0.5)
    assert all(same or n < 64 for same, n in saved), saved

@pytest.mark.parametrize('case,message', [('nan', 'NaN'), ('+inf', '+inf'), ('all -inf', 'all -inf')])
def test_bad_logits_raise_chapter_one_errors(case, message):
    x = torch.zeros(16, 5)
    if case == 'nan': x[3, 1] = float('nan')
    elif case == '+inf': x[3, 1] = float('inf')
    else: x[3] = float('-inf')
    with pytest.raises(ValueError, match=re.escape(message)): triton_gumbel_softmax(x.to(DEVICE))
    with pytest.raises(ValueError) as want: relax.gumbel_softmax(x)
    with pytest.raises(ValueError) as got: triton_gumbel_softmax(x.to(DEVICE))
    assert str(got.value) == str(want.value)

def test_bad_arguments():
    with pytest.raises(ValueError, match='tau=0.0'): triton_gumbel_softmax(torch.zeros(2, 3, device=DEVICE), 0.0)
    with pytest.raises(ValueError, match='floating'): triton_gumbel_softmax(torch.zeros(2, 3, dtype=torch.int64, device=DEVICE))
    with pytest.raises(ValueError, match='dim=2'): triton_gumbel_softmax(torch.zeros(2, 3, device=DEVICE), dim=2)
    with pytest.raises(ValueError, match='Python-number tau'): triton_gumbel_softmax(torch.zeros(2, 3, device=DEVICE), torch.ones(2))
    if DEVICE == 'cpu':
        pass  # the interpreter takes CPU tensors
    else:
        with pytest.raises(ValueError, match='needs CUDA logits'): triton_gumbel_softmax(torch.zeros(2, 3))

def test_half_inputs_and_extreme_tau():
    x = (500 * randn(64, 16, seed=10)).half()
    for hard in (False, True):
        y = triton_gumbel_softmax(x, 0.01, hard=hard, generator=gen(11))
        assert y.dtype == torch.float16 and y.isfinite().all() and (y.float().sum(-1) - 1).abs().max() < 4e-3
    masked = torch.tensor([[0.0, float('-inf'), 1.0]], device=DEVICE)
    torch.testing.assert_close(triton_gumbel_softmax(masked, 3.4e38), torch.tensor([[0.5, 0.0, 0.5]], device=DEVICE))

def test_seed_as_generator_and_empty_batch():
    with pytest.raises(ValueError, match='generator must be a torch.Generator or None, got int generator=42'):
        triton_gumbel_softmax(torch.zeros(2, 3, device=DEVICE), generator=42)
    for hard in (False, True):
        x = torch.empty(0, 4, device=DEVICE, requires_grad=True)
        y = triton_gumbel_softmax(x, 0.5, hard)
        assert y.shape == (0, 4)
        y.sum().backward(); assert x.grad.shape == (0, 4)

# --- the decoding kernel (chapter 5's keyed sample_tokens, fused) -----------------------------------

from gumbel_tut.decoding import sample_tokens
from gumbel_tut.triton_backend import triton_sample_tokens

def keyed(b, position=7):
    return dict(seed=torch.arange(b, device=DEVICE) * 1000 + 3, position=torch.full((b,), position, device=DEVICE))

@pytest.mark.parametrize('settings', [
    dict(), dict(temperature=0.5), dict(temperature=0.8, top_k=50), dict(temperature=1.3, min_p=0.05),
    dict(temperature=0.8, top_k=1), dict(top_k=5000),
    dict(temperature=torch.tensor([0.0, 0.5, 1.0, 2.0] * 16), top_k=torch.tensor([0, 3, 40, 999] * 16),
         min_p=torch.tensor([0.0, 0.1, 0.0, 0.3] * 16)),
])
@pytest.mark.parametrize('block', [128, None])
def test_decoding_kernel_equals_sample_tokens(settings, block):
    "Same noise, same division, same threshold, same tie rule: the same tokens (several blocks per row)."
    x = randn(64, 1000, seed=20) * 3
    x[0, 17] = float('-inf')
    settings = {k: v.to(DEVICE) if isinstance(v, torch.Tensor) else v for k, v in settings.items()}
    fused = triton_sample_tokens(x, **settings, **keyed(64), block=block)
    reference = sample_tokens(x, **settings, **keyed(64))
    if DEVICE == 'cpu': assert torch.equal(fused, reference)
    else: assert (fused == reference).float().mean() > 0.99  # GPU logarithms may differ in the last bit

def test_decoding_kernel_frequencies_chi_square():
    row = torch.tensor([2.0, 1.0, 1.0, 0.0, -1.0, -3.0, float('-inf'), -0.5])
    n = 2**13
    x = row.to(DEVICE).expand(n, -1).contiguous()
    seed = torch.randint(0, 2**62, (n,), generator=torch.Generator().manual_seed(21)).to(DEVICE)
    tokens = triton_sample_tokens(x, 0.9, top_k=4, seed=seed, position=torch.zeros_like(seed))
    counts = torch.bincount(tokens.cpu(), minlength=8)
    kept = torch.tensor([2.0, 1.0, 1.0, 0.0, float('-inf'), float('-inf'), float('-inf'), float('-inf')])
    assert chi_square_pvalue(counts, (kept / 0.9).softmax(0)) > ALPHA

def test_decoding_kernel_batch_invariant_and_checked():
    x = randn(12, 300, seed=22)
    full = triton_sample_tokens(x, 0.7, top_k=20, **keyed(12))
    pick = torch.tensor([9, 2, 5], device=DEVICE)
    part = triton_sample_tokens(x[pick], 0.7, top_k=20, seed=keyed(12)['seed'][pick],
                                position=keyed(12)['position'][pick])
    assert torch.equal(part, full[pick])
    assert torch.equal(triton_sample_tokens(x, 0.0, **keyed(12)), x.argmax(-1))
    for bad, name in ((dict(temperature=-1.0), 'temperature'), (dict(top_k=-2), 'top_k'),
                      (dict(min_p=2.0), 'min_p')):
        with pytest.raises(ValueError, match=name): triton_sample_tokens(x, **bad, **keyed(12))
    with pytest.raises(ValueError, match='seed'):
        triton_sample_tokens(x, seed=None, position=None)
