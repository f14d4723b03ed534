"""
Muon for the hidden matrices, AdamW for the rest, in one torch optimizer (train.py's `--optim=muon`).

Muon (K. Jordan et al. 2024, https://kellerjordan.github.io/posts/muon/) replaces each 2-D weight's update by the
nearest semi-orthogonal matrix to its Nesterov momentum, found with 5 Newton-Schulz iterations. Its update size
follows Moonshot's rule (J. Liu et al. 2025, "Muon is Scalable for LLM Training", eq. 4): 0.2 * sqrt(max(A, B)) times
the learning rate, which gives it the RMS of an AdamW update, so one learning_rate and schedule serve both kinds of
parameter. It matches torch.optim.Muon with adjust_lr_fn='match_rms_adamw' (and torch.optim.AdamW on the other
groups), except that Newton-Schulz runs in float32 here: torch's runs in bfloat16, ~17x slower on a CPU without
bf16 arithmetic (690 ms a step for the 1.2M-parameter quickstart on the 2-core AVX2 VM, against ~40 ms).
"""

import fnmatch
import math

import torch


def orthogonalize(g, steps=5, coefficients=(3.4445, -4.7750, 2.0315), eps=1e-7):
    """The Newton-Schulz approximation U S' V^T (S' ~ 1, between ~0.7 and ~1.2) of U V^T, where g = U S V^T.
    g: (A, B) float tensor; returns float32 (A, B). Coefficients and step count as torch.optim.Muon's defaults."""
    a, b, c = coefficients
    x = g.float()
    if x.size(0) > x.size(1):  # iterate on the wide orientation: the Gram matrix is the smaller one
        x = x.T
    x = x / x.norm().clamp(min=eps)  # spectral norm <= Frobenius norm <= 1
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if g.size(0) > g.size(1) else x


class MuonAdamW(torch.optim.Optimizer):
    """Param groups with 'muon': True (2-D tensors) get Muon; the others AdamW. Group keys: lr, weight_decay
    (decoupled, both kinds: p *= 1 - lr * weight_decay), betas and eps (AdamW), momentum (Muon, Nesterov).
    Raises ValueError for a Muon group holding a tensor that is not 2-D."""

    def __init__(self, groups, lr, betas=(0.9, 0.95), eps=1e-8, momentum=0.95, weight_decay=0.0):
        super().__init__(groups, dict(lr=lr, betas=betas, eps=eps, momentum=momentum, weight_decay=weight_decay,
                                      muon=False))
        for g in self.param_groups:
            if g['muon'] and any(p.dim() != 2 for p in g['params']):
                raise ValueError("Muon updates 2-D matrices only: put other tensors in an AdamW group")

    @torch.no_grad()
    def step(self, closure=None):
        loss = torch.enable_grad()(closure)() if closure is not None else None
        for g in self.param_groups:
            lr, wd = g['lr'], g['weight_decay']
            for p in g['params']:
                if p.grad is None:
                    continue
                state = self.state[p]
                p.mul_(1 - lr * wd)
                if g['muon']:
                    if not state:
                        state['momentum_buffer'] = torch.zeros_like(p)
                    buf = state['momentum_buffer'].lerp_(p.grad, 1 - g['momentum'])
                    update = orthogonalize(p.grad.lerp(buf, g['momentum']))  # Nesterov
                    p.add_(update.to(p.dtype), alpha=-lr * 0.2 * math.sqrt(max(p.shape)))
                else:
                    if not state:
                        state.update(step=torch.tensor(0.0), exp_avg=torch.zeros_like(p),
                                     exp_avg_sq=torch.zeros_like(p))
                    (beta1, beta2), t = g['betas'], state['step'].add_(1).item()
                    state['exp_avg'].lerp_(p.grad, 1 - beta1)
                    state['exp_avg_sq'].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                    denom = (state['exp_avg_sq'].sqrt() / math.sqrt(1 - beta2 ** t)).add_(g['eps'])
                    p.addcdiv_(state['exp_avg'], denom, value=-lr / (1 - beta1 ** t))
        return loss


def muon_groups(model, adamw_groups, targets=()):
    """adamw_groups (a model's configure_optimizers param groups) with the weights of the nn.Linear layers inside
    the model's blocks (every Linear but a top-level one: not the embedding, not the output head), or of those whose
    name matches one of the fnmatch patterns `targets` ('*.mlp.*': Llama's MLP, '*.ffn.*': RWKV's channel mixing),
    moved to one Muon group with the weight decay of the first group. Raises ValueError if no layer matches."""
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and '.' in name]
    chosen = [m for n, m in linears if not targets or any(fnmatch.fnmatchcase(n, t) for t in targets)]
    if not chosen:
        raise ValueError(f"muon_targets {list(targets)} match none of the blocks' linear layers "
                         f"({', '.join(n for n, _ in linears[:4])}, ...): use patterns like '*.mlp.*', or '' for all")
    hidden = {id(m.weight) for m in chosen if m.weight.requires_grad}
    keep = ('weight_decay', 'lr_scale')
    rest = [{'params': [p for p in g['params'] if id(p) not in hidden], **{k: g[k] for k in keep if k in g}}
            for g in adamw_groups]
    muon = [p for g in adamw_groups for p in g['params'] if id(p) in hidden]
    return [{'params': muon, 'muon': True, 'weight_decay': adamw_groups[0]['weight_decay']}] + \
        [g for g in rest if g['params']]
