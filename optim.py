"""
The optimizers of train.py, one owner: `make_optimizer` builds the one that --optim names over a model's parameter
groups (its configure_optimizers: AdamW with decay on matrices only, RWKV-7's lr_scale), and the two it may build
besides torch's AdamW:

- Muon for the hidden matrices, AdamW for the rest, in one torch optimizer (`--optim=muon`). Muon (K. Jordan et al.
  2024, https://kellerjordan.github.io/posts/muon/) replaces each 2-D weight's update by the nearest semi-orthogonal
  matrix to its Nesterov momentum, found with 5 Newton-Schulz iterations. Its update size follows Moonshot's rule
  (J. Liu et al. 2025, "Muon is Scalable for LLM Training", eq. 4): 0.2 * sqrt(max(A, B)) times the learning rate,
  which gives it the RMS of an AdamW update, so one learning_rate and schedule serve both kinds of parameter. It
  matches torch.optim.Muon with adjust_lr_fn='match_rms_adamw' (and torch.optim.AdamW on the other groups), except
  that Newton-Schulz runs in float32 here: torch's runs in bfloat16, ~17x slower on a CPU without bf16 arithmetic
  (690 ms a step for the 1.2M-parameter quickstart on the 2-core AVX2 VM, against ~40 ms).
- bitsandbytes' 8-bit AdamW (Dettmers et al. 2021, arXiv:2110.02861; `--optim=adamw8bit` / `paged_adamw8bit`).
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


def adamw8bit(param_groups, lr, betas, device_type, paged=False):
    """bitsandbytes' 8-bit AdamW (decoupled weight decay, block-wise 8-bit moments; tensors under 4096 elements keep
    32-bit moments) over torch-style `param_groups` (e.g. from a model's configure_optimizers: their weight_decay
    and lr_scale are kept; empty groups are dropped). paged: PagedAdamW8bit (moments paged out under GPU memory
    pressure; plain on CPU). Raises ImportError without bitsandbytes, RuntimeError on a CPU with bitsandbytes < 0.50
    (no CPU optimizer kernels)."""
    from qlora import require_bnb
    bnb = require_bnb()
    if device_type != 'cuda' and tuple(int(x) for x in bnb.__version__.split('.')[:2]) < (0, 50):
        raise RuntimeError(f"8-bit AdamW needs a CUDA GPU with bitsandbytes {bnb.__version__}: its CPU optimizers "
                           f"came in 0.50 (pip install -U bitsandbytes), or use optim='adamw'")
    groups = [{k: v for k, v in g.items() if k in ('params', 'weight_decay', 'lr_scale')} for g in param_groups]
    cls = bnb.optim.PagedAdamW8bit if paged else bnb.optim.AdamW8bit
    return cls([g for g in groups if g['params']], lr=lr, betas=betas)


def make_optimizer(model, optim, learning_rate, betas, weight_decay, device_type, muon_targets=''):
    """The optimizer `optim` names ('adamw' | 'adamw8bit' | 'paged_adamw8bit' | 'muon') over `model`'s parameter
    groups (model.configure_optimizers: weight decay on matrices only, lr_scale where the model sets one; muon_targets:
    comma-separated fnmatch patterns of the Linear layers Muon trains, '' = all of the blocks'). Raises ValueError
    (muon_targets match nothing), ImportError or RuntimeError (no usable bitsandbytes)."""
    optimizer = model.configure_optimizers(weight_decay, learning_rate, betas, device_type)
    if optim == 'muon':  # the blocks' Linear weights to Muon, the rest to AdamW in the model's groups
        groups = muon_groups(model, optimizer.param_groups, [t.strip() for t in muon_targets.split(',') if t.strip()])
        return MuonAdamW(groups, learning_rate, betas, weight_decay=weight_decay)
    if optim != 'adamw':  # the same parameter groups, 8-bit moments
        return adamw8bit(optimizer.param_groups, learning_rate, betas, device_type, paged=optim == 'paged_adamw8bit')
    return optimizer
