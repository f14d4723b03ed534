"""
LoRA: low-rank adapters on the linear layers of a frozen model (Hu et al. 2021, arXiv:2106.09685), with rsLoRA
scaling as an option (Kalajdzievski 2023, arXiv:2312.03732):

    y = base(x) + (dropout(x) @ A^T @ B^T) * scaling,   A (r, in), B (out, r),   scaling = alpha / r  (rsLoRA: / sqrt r)

A starts Kaiming-uniform (a = sqrt 5, as PEFT and nn.Linear), B at zero, so a fresh adapter leaves the model exactly
as it was. Works on model_llama.Llama and model_rwkv7.RWKV7 (and any nn.Module with nn.Linear layers):

    apply_lora(model, DEFAULT_TARGETS['llama'], r=8, alpha=16)   # wraps the matching nn.Linear, freezes the rest
    save_adapter('adapter.safetensors', model, meta)             # adapters only: a few MB
    load_adapter('adapter.safetensors', other)                   # refuses a different base model
    merge_lora(model) / unmerge_lora(model)                      # fold W + scaling * B A into the base weights
    merged_state_dict(model)                                     # the plain model's state dict, adapters folded in
    save_peft('adapter', llama)                                  # a PEFT LoRA folder for the export_hf of its base

A 4-bit (QLoRA) base comes from qlora.py; here it is only dequantized (merged_state_dict, merge_qlora).

    python export.py out-lora out-lora-hf --peft   # a LoRA run of a Llama -> base (export_hf) + adapter (save_peft)
"""

import fnmatch
import hashlib
import json
import math
import os
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

# the projections each model type gets adapters on when no targets are given: every attention and MLP matmul
DEFAULT_TARGETS = {
    'llama': ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
    'rwkv7': ['att.receptance', 'att.key', 'att.value', 'att.output', 'ffn.key', 'ffn.value'],
}


class LoRAError(ValueError):
    """A LoRA setup or adapter file that does not fit the model; the message says what and how to fix it."""


class LoRALinear(nn.Module):
    """A frozen linear layer `base` (nn.Linear, or bitsandbytes' Linear4bit) plus a trainable low-rank update.
    x (..., in_features) -> (..., out_features), in base's output dtype. The adapters lora_A (r, in_features) and
    lora_B (out_features, r) are fp32 on base's device, whatever the base's dtype (they are what trains)."""

    def __init__(self, base, r, alpha, dropout=0.0, rslora=False):
        super().__init__()
        if r < 1:
            raise LoRAError(f"LoRA rank r must be at least 1, got {r}")
        self.base, self.r, self.alpha = base, r, alpha
        self.scaling = alpha / math.sqrt(r) if rslora else alpha / r
        device = base.weight.device
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, device=device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, device=device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False

    def forward(self, x):
        y = self.base(x)
        if self.merged:
            return y
        h = F.linear(F.linear(self.dropout(x).to(self.lora_A.dtype), self.lora_A), self.lora_B)
        return y + (h * self.scaling).to(y.dtype)

    def delta(self):
        """The update scaling * B @ A, (out_features, in_features) fp32."""
        return (self.lora_B.float() @ self.lora_A.float()) * self.scaling

    def dense_weight(self):
        """The base weight as a float tensor (out_features, in_features); a 4-bit base is dequantized."""
        w = self.base.weight
        if getattr(w, 'quant_state', None) is not None:
            from qlora import dequantize_weight
            return dequantize_weight(w)
        return w

    def extra_repr(self):
        return f"r={self.r}, alpha={self.alpha}, scaling={self.scaling:g}, merged={self.merged}"


def new_settings(c, base_file=None):
    """A new LoRA run's settings (setup_lora's `info`, the 'lora' key of its checkpoints) from train.py's config dict
    `c`: r, alpha, dropout, rslora, qlora, the targets (lora_targets split at commas; '' = DEFAULT_TARGETS of its
    model_type) and the base reference: init_from, the base run's checkpoint file name, the fingerprint (set by
    setup_lora)."""
    targets = [t.strip() for t in c['lora_targets'].split(',') if t.strip()] or DEFAULT_TARGETS[c['model_type']]
    return dict(r=c['lora_r'], alpha=c['lora_alpha'], dropout=c['lora_dropout'], rslora=c['rslora'], qlora=c['qlora'],
                targets=targets, base=dict(init_from=c['init_from'], file=base_file, fingerprint=None))


def setup_lora(model, info, adapters=None):
    """Wrap `model` in the adapters train.py's LoRA settings `info` describe (r, alpha, dropout, rslora, targets and
    the base reference {'init_from', 'file', 'fingerprint'}); resuming, load their state dict `adapters` (from
    lora_state_dict) and check that the base is the one the run was trained on (its fingerprint). Sets
    info['base']['fingerprint']. Returns a line for the log. Raises LoRAError: no layer matches, adapters that do not
    fit, another base."""
    wrapped = apply_lora(model, info['targets'], info['r'], info['alpha'], info['dropout'], info['rslora'])
    if adapters is not None:
        load_lora_state_dict(model, adapters)
        if model.lora_base_fingerprint != info['base']['fingerprint']:
            raise LoRAError(f"the base model '{info['base']['init_from']}' is not the one this LoRA run was trained "
                            f"on (fingerprint {model.lora_base_fingerprint}, the run's {info['base']['fingerprint']}): "
                            f"it changed since (a scratch base also depends on the seed)")
    info['base']['fingerprint'] = model.lora_base_fingerprint
    n_train, n_total = count_params(model)
    return (f"LoRA r={info['r']}, alpha={info['alpha']}{' (rsLoRA)' if info['rslora'] else ''} on {len(wrapped)} "
            f"layers ({','.join(info['targets'])}): {n_train:,} trainable of {n_total:,} parameters "
            f"({100 * n_train / n_total:.2f}%)")


def lora_modules(model):
    """(qualified name, LoRALinear) pairs of the model, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]


def _matches(name, pattern):
    """A pattern with a wildcard (* ? [) is an fnmatch of the full name; otherwise the name must end with it at a
    '.' boundary (PEFT's rule): 'q_proj' matches 'layers.0.self_attn.q_proj', 'att.key' matches 'blocks.3.att.key'."""
    if any(c in pattern for c in '*?['):
        return fnmatch.fnmatchcase(name, pattern)
    return name == pattern or name.endswith('.' + pattern)


def base_fingerprint(model):
    """A short hex id of a model's weights: sha256 over every state-dict tensor's name and shape and 4096 evenly
    spaced values rounded to bf16 (so an fp32 base and its bf16 copy agree). Sampled, so cheap at any size: any
    retraining changes it, a change confined to a few rows may not. A model under apply_lora answers the
    fingerprint of its base as it was when wrapped (merging or quantizing it later does not change the answer)."""
    if getattr(model, 'lora_base_fingerprint', None):
        return model.lora_base_fingerprint
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        if not torch.is_tensor(t) or not t.is_floating_point():
            continue
        flat = t.detach().reshape(-1)
        sample = flat[::max(1, flat.numel() // 4096)][:4096]
        h.update(f"{name}:{tuple(t.shape)};".encode())
        h.update(sample.to(torch.bfloat16).float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def apply_lora(model, targets, r, alpha, dropout=0.0, rslora=False):
    """Wrap every nn.Linear of `model` whose qualified name matches one of `targets` (see _matches) in a LoRALinear,
    in place; freeze every other parameter. Returns the wrapped names. Records the base fingerprint and the settings
    on the model (model.lora_base_fingerprint, model.lora_config). Raises LoRAError when a pattern matches no
    linear layer, when a matched layer shares its weight with another module (tied embeddings: a merge would change
    the embedding too), or when the model already has adapters."""
    if lora_modules(model):
        raise LoRAError("the model already has LoRA adapters")
    targets = [t.strip() for t in targets if t.strip()]
    if not targets:
        raise LoRAError("no LoRA target patterns given")
    fingerprint = base_fingerprint(model)
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    owners = {}
    for n, m in model.named_modules():
        for p in m.parameters(recurse=False):
            owners.setdefault(id(p), []).append(n)
    chosen = []
    for pattern in targets:
        hits = [n for n, _ in linears if _matches(n, pattern)]
        if not hits:
            kinds = sorted({'.'.join(p for p in n.split('.') if not p.isdigit()) for n, _ in linears})
            raise LoRAError(f"LoRA target '{pattern}' matches no nn.Linear of the model; its linear layers are "
                            f"(layer numbers left out): {', '.join(kinds)}")
        chosen += [n for n in hits if n not in chosen]
    for n, m in linears:
        if n in chosen and len(owners[id(m.weight)]) > 1:
            raise LoRAError(f"'{n}' shares its weight with {[o for o in owners[id(m.weight)] if o != n]} (tied "
                            f"embeddings): LoRA on it would also change the embedding when merged; leave it out of "
                            f"the targets or train an untied model")
    for p in model.parameters():
        p.requires_grad_(False)
    for name in chosen:
        parent, _, child = name.rpartition('.')
        holder = model.get_submodule(parent) if parent else model
        setattr(holder, child, LoRALinear(getattr(holder, child), r, alpha, dropout, rslora))
    model.lora_base_fingerprint = fingerprint
    model.lora_config = dict(r=r, alpha=alpha, dropout=dropout, rslora=rslora, targets=targets)
    return chosen


def count_params(model):
    """(trainable, total) parameter counts, shared tensors once (a 4-bit base counts its packed storage: count
    before quantizing)."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


@torch.no_grad()
def merge_lora(model):
    """Fold each adapter into its base weight (W += scaling * B A) so the forward pass skips the adapters. In place;
    undo with unmerge_lora. Raises LoRAError on a 4-bit base (merge_qlora dequantizes first)."""
    for name, m in lora_modules(model):
        if m.merged:
            continue
        if not m.base.weight.is_floating_point():
            raise LoRAError(f"'{name}' has a 4-bit base: use merge_qlora (dequantizes) or merged_state_dict")
        m.base.weight.add_(m.delta().to(m.base.weight.dtype))
        m.merged = True


@torch.no_grad()
def unmerge_lora(model):
    """Take merged adapters back out of the base weights (W -= scaling * B A); exact up to float rounding."""
    for _, m in lora_modules(model):
        if m.merged:
            m.base.weight.sub_(m.delta().to(m.base.weight.dtype))
            m.merged = False


@torch.no_grad()
def merged_state_dict(model, dtype=torch.float32):
    """The state dict the plain (un-wrapped) model would have with every adapter folded in: adapter keys dropped,
    'x.base.weight' -> 'x.weight' = W + scaling * B A, a 4-bit base dequantized; all tensors `dtype` on the CPU.
    The model itself is left as it is. Load it with the plain model's load_state_dict."""
    mods = dict(lora_modules(model))
    if any(not m.base.weight.is_floating_point() for m in mods.values()):
        warnings.warn("merged_state_dict of a 4-bit (QLoRA) model: the NF4 base is dequantized, so the merged weights "
                      "keep its 4-bit rounding (not the original base weights)", stacklevel=3)
    out = {}
    for key, t in model.state_dict().items():
        owner, _, leaf = key.rpartition('.')
        if leaf in ('lora_A', 'lora_B') and owner in mods:
            continue
        lora_name, sep, rest = key.rpartition('.base.')
        if sep and lora_name in mods:
            if rest != 'weight':
                if rest == 'bias':
                    out[f'{lora_name}.bias'] = t.to('cpu', dtype)
                continue  # the quantization state of a 4-bit weight
            m = mods[lora_name]
            w = m.dense_weight().float()
            out[f'{lora_name}.weight'] = (w if m.merged else w + m.delta()).to('cpu', dtype)
        elif t.is_floating_point():
            out[key] = t.to('cpu', dtype)
        else:
            out[key] = t.cpu()
    return out


def lora_state_dict(model):
    """The adapters only: {'<module>.lora_A': (r, in), '<module>.lora_B': (out, r)}, detached, on their device."""
    return {k: v for k, v in model.state_dict().items() if k.rpartition('.')[2] in ('lora_A', 'lora_B')}


def check_lora_state_dict(model, sd):
    """Raise LoRAError unless adapter tensors `sd` have exactly the keys and shapes of the model's adapters."""
    mine = lora_state_dict(model)
    missing, extra = sorted(set(mine) - set(sd)), sorted(set(sd) - set(mine))
    if missing or extra:
        raise LoRAError(f"the adapter does not fit the model: missing {missing[:3]}{'...' if len(missing) > 3 else ''}"
                        f", unexpected {extra[:3]}{'...' if len(extra) > 3 else ''} (other targets or architecture)")
    for k, v in sd.items():
        if v.shape != mine[k].shape:
            raise LoRAError(f"the adapter does not fit the model: {k} is {tuple(v.shape)} in the adapter and "
                            f"{tuple(mine[k].shape)} in the model (another rank or model shape)")


def load_lora_state_dict(model, sd):
    """Copy adapter tensors `sd` (from lora_state_dict) into a model with the same adapters. Raises LoRAError on a
    missing or extra key or a shape that differs (another target list, rank or architecture)."""
    check_lora_state_dict(model, sd)
    mine = lora_state_dict(model)
    with torch.no_grad():
        for k, v in sd.items():
            mine[k].copy_(v)


def save_adapter(path, model, meta=None):
    """Write the adapters of `model` to `path` as safetensors (atomically: temp file, fsync, rename), with the LoRA
    settings, the base fingerprint and `meta` (a JSON-able dict, e.g. the run's config) in the file's metadata."""
    from safetensors.torch import save
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in lora_state_dict(model).items()}
    header = {'lora_config': json.dumps(model.lora_config), 'base_fingerprint': base_fingerprint(model),
              'meta': json.dumps(meta or {})}
    with open(path + '.tmp', 'wb') as f:
        f.write(save(tensors, metadata=header))
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + '.tmp', path)


def load_adapter(path, model):
    """Load an adapter file written by save_adapter onto `model`: a plain model gets LoRA applied with the file's
    settings first. Refuses (LoRAError) a model whose base differs from the one the adapter was trained on, by
    shapes and then by base fingerprint, before copying anything (a plain model is left wrapped with fresh adapters,
    which change nothing). Returns the file's meta dict."""
    from safetensors import safe_open
    with safe_open(path, framework='pt') as f:
        header = f.metadata() or {}
        sd = {k: f.get_tensor(k) for k in f.keys()}
    if 'lora_config' not in header:
        raise LoRAError(f"{path} is not an adapter file written by lora.save_adapter (no lora_config in it)")
    cfg = json.loads(header['lora_config'])
    if not lora_modules(model):
        try:
            apply_lora(model, cfg['targets'], cfg['r'], cfg['alpha'], cfg['dropout'], cfg['rslora'])
        except LoRAError as e:
            raise LoRAError(f"{path} does not fit this model: {e}") from None
    check_lora_state_dict(model, sd)  # shapes first: a different architecture says so
    if header['base_fingerprint'] != base_fingerprint(model):
        raise LoRAError(f"{path} was trained on another base model (fingerprint {header['base_fingerprint']}, this "
                        f"model's is {base_fingerprint(model)}): load it onto the weights it was trained from "
                        f"(its meta: {header.get('meta', '{}')[:200]})")
    load_lora_state_dict(model, sd)
    return json.loads(header.get('meta', '{}'))


# ---------------------------------------------------------------------------- PEFT (Hugging Face) export
def save_peft(out_dir, model, base_model_name_or_path=''):
    """Write the adapters of a model_llama.Llama under apply_lora as a PEFT LoRA folder for the Hugging Face model
    that export.export_hf writes of its base: adapter_config.json (peft_type LORA, task_type CAUSAL_LM, r,
    lora_alpha, lora_dropout, use_rslora, target_modules, base_model_name_or_path) and adapter_model.safetensors
    (fp32; PEFT's key names, e.g. 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight' (r, in) and
    '...lora_B.weight' (out, r)). target_modules: the projection names ('q_proj', ...) when every layer of those
    names has an adapter, else the full module names. Load with peft.PeftModel.from_pretrained(
    AutoModelForCausalLM.from_pretrained(base), out_dir). Returns out_dir. Raises LoRAError for a model that is not
    a Llama with adapters (RWKV-7 has no transformers counterpart here)."""
    from safetensors.torch import save_file
    from model_llama import Llama
    mods = lora_modules(model)
    if not isinstance(model, Llama) or not mods:
        raise LoRAError(f"PEFT export needs a model_llama.Llama with LoRA adapters, not a {type(model).__name__}"
                        f"{' without adapters' if not mods else ''}")
    hf = lambda n: n if n.startswith('lm_head') else 'model.' + n  # noqa: E731 (export_hf's names)
    names = [hf(n) for n, _ in mods]
    kinds = sorted({n.rpartition('.')[2] for n in names})
    every = {hf(n) for n, _ in model.named_modules() if n and n.rpartition('.')[2] in kinds}
    cfg = model.lora_config
    config = dict(peft_type='LORA', task_type='CAUSAL_LM', base_model_name_or_path=base_model_name_or_path,
                  r=cfg['r'], lora_alpha=cfg['alpha'], lora_dropout=cfg['dropout'], use_rslora=cfg['rslora'],
                  target_modules=kinds if every == set(names) else names, bias='none', fan_in_fan_out=False,
                  inference_mode=True, modules_to_save=None)
    tensors = {f'base_model.model.{hf(n)}.lora_{ab}.weight': getattr(m, f'lora_{ab}').detach().float().cpu()
               .contiguous() for n, m in mods for ab in 'AB'}
    os.makedirs(out_dir, exist_ok=True)
    save_file(tensors, os.path.join(out_dir, 'adapter_model.safetensors'), metadata={'format': 'pt'})
    with open(os.path.join(out_dir, 'adapter_config.json'), 'w') as f:
        json.dump(config, f, indent=2)
    return out_dir


@torch.no_grad()
def merge_qlora(model, dtype=torch.float32):
    """Dequantize every 4-bit layer into a plain nn.Linear of `dtype` and fold the adapters in (lora.merge_lora).
    The result is a 32- (or 16-) bit model; it is not re-quantized. It computes what the QLoRA model computed, but
    its base is the NF4-rounded one, not the original weights: warns so. In place; returns the model."""
    from qlora import dequantize_weight, require_bnb
    bnb = require_bnb()
    warnings.warn("merging into a 4-bit base: the NF4 weights are dequantized and the merged model is exported in "
                  f"{str(dtype).removeprefix('torch.')}; it keeps the 4-bit rounding of the base (not the original "
                  "weights) and is not re-quantized", stacklevel=3)
    for name, m in [(n, m) for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)]:
        lin = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None, device=m.weight.device, dtype=dtype)
        lin.weight.data.copy_(dequantize_weight(m.weight))
        if m.bias is not None:
            lin.bias.data.copy_(m.bias)
        lin.requires_grad_(False)
        parent, _, child = name.rpartition('.')
        setattr(model.get_submodule(parent) if parent else model, child, lin)
    for _, m in lora_modules(model):
        m.to(dtype)
    merge_lora(model)
    return model


if __name__ == '__main__':  # the export that lived here moved to export.py: say so instead of exiting silently
    import sys
    sys.exit("lora.py: error: this file is a library; a LoRA run as a Hugging Face base + PEFT adapter: python export.py <run> <folder> --peft")
