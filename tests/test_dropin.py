"""The samplers as drop-ins in real training code: torch.compile(fullgraph=True), torch.vmap, torch.func.grad, meta
tensors, empty batches, and no host reads with validation off (Library note: input validation, nbs/10_checks.ipynb).
`F.gumbel_softmax` runs through the same harness first, so a harness that could not pass is caught."""
import pytest, torch
import torch.nn.functional as F
from gumbel_tut.checks import validation, validation_enabled, set_validation, HostReads
from gumbel_tut.gumbel import gumbel_max, gumbel_topk
from gumbel_tut.relax import relaxed_topk
from gumbel_tut.distributions import GumbelSoftmax, ExpGumbelSoftmax
from gumbel_tut.estimators import ESTIMATORS, get_estimator
from gumbel_tut import gumbel_softmax

# name -> (function of logits (B, K), differentiable?)
SAMPLERS = {
    'torch F.gumbel_softmax': (lambda x: F.gumbel_softmax(x, 0.5), True),
    'torch F.gumbel_softmax hard': (lambda x: F.gumbel_softmax(x, 0.5, hard=True), True),
    'gumbel_softmax': (lambda x: gumbel_softmax(x, 0.5), True),
    'gumbel_softmax hard': (lambda x: gumbel_softmax(x, 0.5, hard=True), True),
    'gumbel_softmax tau=2': (lambda x: gumbel_softmax(x, 2.0), True),
    "gumbel_softmax backend='reference'": (lambda x: gumbel_softmax(x, 0.5, backend='reference'), True),
    'gumbel_softmax tensor tau': (lambda x: gumbel_softmax(x, torch.full(x.shape[:-1], 0.5)), True),
    'gumbel_max': (lambda x: gumbel_max(x), False),
    'gumbel_topk': (lambda x: gumbel_topk(x, 2), False),
    'relaxed_topk': (lambda x: relaxed_topk(x, 2, 0.5), True),
    'relaxed_topk hard': (lambda x: relaxed_topk(x, 2, 0.5, hard=True), True),
    'GumbelSoftmax.rsample': (lambda x: GumbelSoftmax(0.5, logits=x).rsample(), True),
    'GumbelSoftmax(hard=True).rsample': (lambda x: GumbelSoftmax(0.5, logits=x, hard=True).rsample(), True),
    'GumbelSoftmax.sample': (lambda x: GumbelSoftmax(0.5, logits=x).sample(), False),
    'ExpGumbelSoftmax.rsample': (lambda x: ExpGumbelSoftmax(0.5, logits=x).rsample(), True),
    # estimators are built once, outside the compiled region, as a training script does
    **{f'{name}.sample': ((lambda e: lambda x: e.sample(x, 0.5)[0])(get_estimator(name)), not get_estimator(name).score_function)
       for name in ESTIMATORS},
}
OURS = [n for n in SAMPLERS if not n.startswith('torch')]

def logits(b=4, k=5, seed=0, grad=False):
    return torch.randn(b, k, generator=torch.Generator().manual_seed(seed)).requires_grad_(grad)

def check_sample(name, y, x):
    "The sample has the shape the sampler promises for logits `x`."
    if name == 'gumbel_max': assert y.shape == x.shape[:-1]
    elif name == 'gumbel_topk': assert y.shape == (*x.shape[:-1], 2)
    else: assert y.shape == x.shape, (name, y.shape)

def test_validation_switch_defaults_on_and_restores():
    assert validation_enabled()
    with validation(False): assert not validation_enabled()
    assert validation_enabled()
    assert set_validation(True) is True

@pytest.mark.parametrize('name', SAMPLERS)
def test_no_host_reads_with_validation_off(name):
    fn, differentiable = SAMPLERS[name]
    x = logits(grad=differentiable)
    with validation(False), HostReads() as counter:
        y = fn(x)
        if differentiable: (y.float() * torch.arange(y.numel()).view(y.shape)).sum().backward()
    assert counter.calls == [], f'{name}: host reads {counter.calls}'
    check_sample(name, y, x)

@pytest.mark.parametrize('name', ['gumbel_softmax', 'gumbel_softmax hard', 'gumbel_max'])
def test_validation_on_still_rejects_bad_values(name):
    x = logits(); x[1, 2] = float('nan')
    with pytest.raises(ValueError, match='NaN'): SAMPLERS[name][0](x)

@pytest.mark.parametrize('name', SAMPLERS)
def test_compile_fullgraph(name):
    "Dynamo traces each sampler into one graph (fullgraph=True raises at any graph break); validation is on."
    fn, _ = SAMPLERS[name]
    torch._dynamo.reset()
    compiled = torch.compile(lambda x: fn(x), fullgraph=True, backend='eager')
    x = logits()
    check_sample(name, compiled(x), x)

@pytest.mark.parametrize('hard', [False, True])
def test_compile_inductor_forward_backward(hard):
    "The default sampler compiled by Inductor, forward and backward: a valid sample and a finite gradient."
    torch._dynamo.reset()
    f = torch.compile(lambda x: gumbel_softmax(x, 0.5, hard=hard), fullgraph=True)
    x = logits(64, 10, grad=True)
    y = f(x)
    torch.testing.assert_close(y.sum(-1), torch.ones(64))
    if hard: assert ((y == 0) | (y == 1)).all()
    (y * torch.arange(10.)).sum().backward()
    assert x.grad.isfinite().all() and x.grad.abs().sum() > 0

@pytest.mark.parametrize('name', SAMPLERS)
def test_vmap_randomness_different(name):
    fn, _ = SAMPLERS[name]
    x = logits(3, 5).expand(6, 3, 5)  # the same logits in every vmapped example: only the noise differs
    y = torch.vmap(fn, randomness='different')(x)
    check_sample(name, y[0], x[0])
    assert not all(torch.equal(y[0], y[i]) for i in range(1, 6)), 'randomness="different" gave identical samples'

@pytest.mark.parametrize('name', [n for n in SAMPLERS if SAMPLERS[n][1]])
def test_func_grad(name):
    fn, _ = SAMPLERS[name]
    w = torch.arange(5.)
    g = torch.func.grad(lambda x: (fn(x).float() * w).sum())(logits())
    assert g.shape == (4, 5) and g.isfinite().all()

@pytest.mark.parametrize('name', SAMPLERS)
def test_meta_tensors_propagate_shapes(name):
    x = logits().to('meta')
    y = SAMPLERS[name][0](x)
    assert y.is_meta
    check_sample(name, y, x)

@pytest.mark.parametrize('name', SAMPLERS)
def test_empty_batch(name):
    fn, differentiable = SAMPLERS[name]
    x = torch.empty(0, 5, requires_grad=differentiable)
    y = fn(x)
    check_sample(name, y, x)
    if differentiable:
        y.float().sum().backward()
        assert x.grad.shape == (0, 5)

def test_compiled_uniforms_are_coarser_as_documented():
    "Library note 10 documents it: Inductor's float64 uniforms lie on a grid coarser than 2^-53 (so a shorter noise reach)."
    torch._dynamo.reset()
    draw = torch.compile(lambda like: torch.rand(like.shape, dtype=torch.float64) + 0 * like, fullgraph=True)
    u = draw(torch.zeros(2**16, dtype=torch.float64))
    k = u * 2.0**32
    assert (k == k.floor()).double().mean() > 0.99
    eager = torch.rand(2**16, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2.0**32
    assert (eager == eager.floor()).double().mean() < 0.01


def test_generator_under_compile_names_itself():
    """Dynamo cannot trace a torch.Generator: with fullgraph=True the error carries our message, which says what to do;
    without it, Dynamo falls back to eager for the draw and the generator is used."""
    g = torch.Generator().manual_seed(0)
    with pytest.raises(Exception, match='generator cannot be passed under torch.compile'):
        torch.compile(lambda x: gumbel_max(x, generator=g), fullgraph=True)(torch.randn(3, 4))
    torch._dynamo.reset()
    eager = gumbel_max(torch.zeros(2, 5), generator=torch.Generator().manual_seed(1))
    compiled = torch.compile(lambda x: gumbel_max(x, generator=torch.Generator().manual_seed(1)))(torch.zeros(2, 5))
    assert torch.equal(eager, compiled)


@pytest.mark.parametrize('tau,hard', [(0.3, True), (0.3, False), (1.0, False), (2.0, True)])
def test_validation_off_samples_the_same_law(tau, hard):
    """With validation off, eager calls take a branch-free float64 path (library note 12): the argmax of the sample
    follows softmax(logits) (chi-square, 2e5 draws, fixed seed: a false alarm at p < 1e-4 has that probability)."""
    from gumbel_tut.helpers import chi_square_pvalue
    x = torch.tensor([0.0, 1.0, 2.0, -1.0]).expand(200_000, 4)
    with validation(False), HostReads() as reads:
        y = gumbel_softmax(x, tau, hard=hard, generator=torch.Generator().manual_seed(3))
    assert reads.calls == [], reads.calls
    assert torch.allclose(y.sum(-1), torch.ones(200_000), atol=1e-5)
    assert chi_square_pvalue(torch.bincount(y.argmax(-1), minlength=4), x[0].softmax(0)) > 1e-4
