"""
QLoRA's 4-bit NF4 base with double quantization (Dettmers et al. 2023, arXiv:2305.14314) under LoRA adapters
(lora.py), through bitsandbytes (its 8-bit AdamW is optim.py's).

    apply_lora(model, targets, r, alpha)           # lora.py: adapters on, everything else frozen
    quantize_model(model, torch.bfloat16, 'cuda')  # every frozen linear but the head -> NF4, layer by layer
    lora.merge_qlora(model)                        # dequantize, fold the adapters in: a plain 32/16-bit model

Every nn.Linear except the output head (and tied weights) becomes a bitsandbytes Linear4bit: NF4 codes in blocks of
64 with an absmax each, the absmaxes themselves 8-bit quantized (compress_statistics=True): ~0.52 bytes a weight.
Embeddings, norms, the head and RWKV-7's small mixing parameters stay in the compute dtype (bf16 on GPU, fp32 on
CPU); the adapters stay fp32. bitsandbytes >= 0.50 runs both the 4-bit layers and the 8-bit optimizers on CPU
(the 4-bit layers slowly: dequantize, then an fp32 matmul); with older versions quantize_model tries the device first
and says what is missing.

One forward path on every CPU: on CPUs with AVX512-BF16 (Intel Xeon since Cooper Lake, AMD Zen 4), bitsandbytes 0.50's
Linear4bit repacks its weight in place at the first eval-mode no-grad forward and computes in bf16 from then on, in a
layout that dequantize_4bit does not read (nn/modules.py, Linear4bit.forward: `support_avx512bf16_for_cpu`). The
model would then evaluate differently from how it trains (bf16, ~0.007 off) and merge into a wrong base (~0.2 off),
and the packing fails outright for a width that is not a multiple of 64. quantize_linear turns that path off, so every
forward is dequantize + matmul in the compute dtype, the same in train and eval and the same as the merged model; and
check_device checks exactly that on the device before a model is quantized.
"""

import logging

import torch
import torch.nn as nn


HEAD_NAMES = ('lm_head', 'head')  # model_llama / model_rwkv7 output heads: kept in the compute dtype


def require_bnb():
    """Import bitsandbytes, or raise ImportError saying how to get it. Its import-time warning that the hub kernel of
    the packed AVX512-BF16 path cannot be fetched is silenced: that path is turned off here (quantize_linear)."""
    logging.getLogger('bitsandbytes.backends.cpu.ops').setLevel(logging.ERROR)
    try:
        import bitsandbytes
    except ImportError:
        raise ImportError("QLoRA (qlora=True) and 8-bit AdamW (optim='adamw8bit') need bitsandbytes: "
                          "pip install bitsandbytes (>= 0.50 to run on CPU)") from None
    return bitsandbytes


def check_device(device):
    """Raise RuntimeError unless bitsandbytes' 4-bit layers run on `device` and compute what they merge into: a 64 x 96
    layer (quantize_linear) in train mode with gradients and in eval mode without must both equal x @ W.T with W its
    dequantized weight (to 1e-5), since CPU support and CPU code paths depend on the version, build and CPU."""
    bnb = require_bnb()
    g = torch.Generator().manual_seed(0)
    try:
        q = quantize_linear(nn.Linear(96, 64, bias=False), torch.float32, device)
        x = torch.randn(3, 96, generator=g).to(device)
        train_out = q.train()(x.clone().requires_grad_())
        with torch.no_grad():
            eval_out = q.eval()(x)
    except Exception as e:
        where = "a CUDA GPU with bitsandbytes" if str(device).startswith('cpu') else "a device bitsandbytes supports"
        raise RuntimeError(f"QLoRA needs {where} (bitsandbytes {bnb.__version__} cannot run 4-bit layers on "
                           f"{device}: {type(e).__name__}: {e}); pip install -U bitsandbytes (>= 0.50 has CPU "
                           f"kernels) or run with qlora=False") from None
    ref = x @ dequantize_weight(q.weight).float().T
    err = max((out.detach().float() - ref).abs().max().item() for out in (train_out, eval_out))
    if err > 1e-5 * max(1.0, ref.abs().max().item()):
        raise RuntimeError(f"bitsandbytes {bnb.__version__}'s 4-bit layer on {device} does not compute with its own "
                           f"dequantized weight (off by {err:.2g}): a QLoRA model would not be the one it merges into; "
                           f"try another bitsandbytes version (pip install -U bitsandbytes) or run with qlora=False")


def quantize_linear(lin, compute_dtype, device):
    """nn.Linear -> bitsandbytes Linear4bit (NF4, double quantization, blocks of 64) on `device`, frozen. The weight
    is quantized from its fp32 values on `device`, so one layer at a time is ever there in full precision."""
    bnb = require_bnb()
    q = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=lin.bias is not None, compute_dtype=compute_dtype,
                          compress_statistics=True, quant_type='nf4', device='meta')
    q.support_avx512bf16_for_cpu = False  # no in-place repacking to bf16 at eval (module docstring)
    q.weight = bnb.nn.Params4bit(lin.weight.data.float(), requires_grad=False, compress_statistics=True,
                                 quant_type='nf4', blocksize=64)
    if lin.bias is not None:
        q.bias = nn.Parameter(lin.bias.data.to(compute_dtype), requires_grad=False)
    return q.to(device)


@torch.no_grad()
def quantize_model(model, compute_dtype, device):
    """In place: every nn.Linear of `model` (LoRA bases included) but the head and weights shared with another
    module becomes an NF4 Linear4bit on `device`, one layer at a time (the fp32 original is dropped as soon as its
    layer is done); every other frozen float parameter goes to `device` in `compute_dtype`, trainable ones (the
    adapters) in fp32. Buffers keep their dtype (RoPE tables stay fp32). Returns the number of layers quantized."""
    bnb = require_bnb()
    check_device(device)
    owners = {}
    for _, m in model.named_modules():
        for p in m.parameters(recurse=False):
            owners[id(p)] = owners.get(id(p), 0) + 1
    todo = [n for n, m in model.named_modules() if type(m) is nn.Linear and n not in HEAD_NAMES
            and owners[id(m.weight)] == 1]
    for name in todo:
        parent, _, child = name.rpartition('.')
        holder = model.get_submodule(parent) if parent else model
        setattr(holder, child, quantize_linear(getattr(holder, child), compute_dtype, device))
    for m in model.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            continue
        for key, p in m.named_parameters(recurse=False):
            dtype = torch.float32 if p.requires_grad else compute_dtype if p.is_floating_point() else p.dtype
            p.data = p.data.to(device, dtype)
        for key, b in m.named_buffers(recurse=False):
            m._buffers[key] = b.to(device)
    return len(todo)


def quantized_bytes(model):
    """(bytes, weights) of the model's 4-bit layers: every tensor they store, each once (packed NF4 codes, the 8-bit
    absmaxes, their fp32 absmaxes and offset, the code tables); biases are not counted."""
    bnb = require_bnb()
    storage, weights = {}, 0
    for m in model.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            qs = m.weight.quant_state
            weights += m.in_features * m.out_features
            for t in [m.weight.data, *vars(qs).values(), *(vars(qs.state2).values() if qs.nested else [])]:
                if torch.is_tensor(t):
                    storage[t.data_ptr()] = t.nbytes
    return sum(storage.values()), weights


def dequantize_weight(w):
    """A Params4bit weight -> its float weight (out_features, in_features), in the layer's compute dtype. A weight
    that bitsandbytes repacked for its AVX512-BF16 kernel (a Linear4bit not made by quantize_linear) is unpacked
    first, in place, by bitsandbytes' own inverse: its block scales were rounded to bf16 by the packing, so it
    differs from the original by that rounding (~0.2% of a weight)."""
    import bitsandbytes.functional as bnbF
    if getattr(w.quant_state, 'packing_format_for_cpu', False):
        w.data, w.quant_state = bnbF._convert_weight_packed_for_cpu_inverse(w.data, w.quant_state)
    return bnbF.dequantize_4bit(w.data, w.quant_state)
