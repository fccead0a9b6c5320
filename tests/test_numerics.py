"""Regressions found by `make fuzz-explore` (Hypothesis with many random examples), kept as fixed examples."""
import pytest, torch
from gumbel_tut.estimators import gumbel_rao


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float32])
@pytest.mark.parametrize('big', [4e37, 1e38, 3e38])
def test_gumbel_rao_finite_for_logits_near_the_largest_float(dtype, big):
    "(logits + G) / tau overflowed to inf for logits near finfo.max at tau < 1, and the softmax gave NaN."
    x = torch.tensor([[big, -big, 0.0, 1.0]], dtype=dtype).requires_grad_()
    y = gumbel_rao(x, 0.125, k=4, generator=torch.Generator().manual_seed(0))
    grad, = torch.autograd.grad((y * torch.arange(4.0)).sum(), x)
    assert torch.equal(y.detach().float(), torch.tensor([[1.0, 0.0, 0.0, 0.0]])), y
    assert grad.isfinite().all(), grad
