"""`make bench-gpu`: every sampler, forward and backward, on CUDA under `torch.cuda.set_sync_debug_mode('error')` with
validation off, so that any host synchronization raises (the CPU proxy of this check is tests/test_dropin.py)."""
import sys
import torch
from gumbel_tut import gumbel_softmax, gumbel_max, gumbel_topk, relaxed_topk, GumbelSoftmax, get_estimator, ESTIMATORS, validation

def main() -> int:
    if not torch.cuda.is_available(): return print('cuda_sync_check: no CUDA device', file=sys.stderr) or 2
    x = torch.randn(256, 1000, device='cuda', requires_grad=True)
    estimators = {name: get_estimator(name) for name in ESTIMATORS}
    samplers = {'gumbel_softmax': lambda: gumbel_softmax(x, 0.5), 'gumbel_softmax hard': lambda: gumbel_softmax(x, 0.5, hard=True),
                'gumbel_max': lambda: gumbel_max(x), 'gumbel_topk': lambda: gumbel_topk(x, 3), 'relaxed_topk': lambda: relaxed_topk(x, 3, 0.5),
                'GumbelSoftmax.rsample': lambda: GumbelSoftmax(0.5, logits=x).rsample(),
                **{f'{n}.sample': (lambda e: lambda: e.sample(x, 0.5))(e) for n, e in estimators.items()}}
    failures = []
    torch.cuda.synchronize()
    for name, sample in samplers.items():
        torch.cuda.set_sync_debug_mode('error')
        try:
            with validation(False):
                y = sample()
                if y.requires_grad: torch.autograd.grad((y * y.detach()).sum(), x)
        except RuntimeError as e: failures.append(f'{name}: {str(e).splitlines()[0]}')
        finally: torch.cuda.set_sync_debug_mode(0)
    print(f'cuda_sync_check: {len(samplers) - len(failures)}/{len(samplers)} samplers ran without a host sync on {torch.cuda.get_device_name()}')
    for f in failures: print('  sync in', f)
    return 1 if failures else 0

if __name__ == '__main__': sys.exit(main())
