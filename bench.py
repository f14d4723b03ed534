"""
Benchmarks that print figures (never timed tests):

    python bench.py --task=wkv                       # WKV7 forward / forward+backward per implementation
    python bench.py --task=wkv --compile=True        # ... plus the torch.compile'd chunked WKV
    python bench.py --task=generate --model_type=rwkv7 --n_layer=12 --n_embd=512   # decode speed vs context length
    python bench.py --task=generate --out_dir=out-shakespeare-char                 # ... of a trained checkpoint
    python bench.py --task=accuracy --out_dir=out-sft --data=data/gsm_synth_byte/test.jsonl --limit=500

Each timing is the median of `repeats` calls after one warm-up call (min in parentheses). Results are printed as a
markdown table.
"""

import statistics
import sys
import time

import torch

from configurator import ConfigError, configure, pick_device

# -----------------------------------------------------------------------------
task = 'wkv'              # 'wkv' | 'generate' | 'accuracy'
device = 'auto'
repeats = 5
compile = False           # wkv: also time the torch.compile'd chunked WKV (compiling takes minutes on a CPU)
# wkv: the shape (fp32)
B = 4
H = 4
N = 64
T = 1024
impls = 'naive,chunked'
chunk_len = 32
# generate: a checkpoint (out_dir) or a random model of this shape
out_dir = ''
model_type = 'rwkv7'
n_layer = 12
n_embd = 512
n_head = 8
n_kv_head = 4
vocab_size = 50304
contexts = '64,256,1024,2048'
new_tokens = 32           # decode steps timed after each context
# accuracy: greedy answers of a chat-trained run (out_dir) to GSM8K-format problems ({'question', 'answer'} jsonl)
data = ''
limit = 0                 # 0 = every problem
max_new_tokens = 256
# -----------------------------------------------------------------------------


def timed(fn):
    """(median, min) seconds of `repeats` calls of fn after one warm-up call."""
    fn()
    ts = []
    for _ in range(repeats):
        if device.startswith('cuda'):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.startswith('cuda'):
            torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), min(ts)


def bench_wkv():
    from model_rwkv7 import DECAY_SCALE, wkv_chunked, wkv_naive
    torch.manual_seed(0)
    r, k, v = (torch.randn(B, T, H, N, device=device) for _ in range(3))
    w = -DECAY_SCALE * torch.sigmoid(torch.randn(B, T, H, N, device=device) * 3)
    kk = torch.nn.functional.normalize(torch.randn(B, T, H, N, device=device), dim=-1)
    a = torch.sigmoid(torch.randn(B, T, H, N, device=device))
    xs = [t.requires_grad_() for t in (r, w, k, v, -kk, kk * a)]
    dy = torch.randn(B, T, H, N, device=device)
    fns = {'naive': wkv_naive, 'chunked': lambda *x: wkv_chunked(*x, chunk_len=chunk_len)}
    names = impls.split(',') + (['chunked+compile'] if compile else [])
    print(f"WKV7, B={B} H={H} N={N} T={T}, fp32, {device}, {torch.get_num_threads()} threads; seconds, median (min)\n")
    print("| implementation | forward | forward+backward | fwd+bwd speed-up over naive |\n|---|---|---|---|")
    base = None
    for name in names:
        if name == 'chunked+compile':
            fn = torch.compile(fns['chunked'])
        elif name in fns:
            fn = fns[name]
        else:
            raise ConfigError(f"unknown WKV implementation '{name}' in impls: use naive, chunked")

        def fwd():
            with torch.no_grad():
                fn(*xs)

        def fwd_bwd():
            y, _ = fn(*xs)
            (y * dy).sum().backward()
        f, fb = timed(fwd), timed(fwd_bwd)
        base = fb[0] if name == 'naive' else base
        speedup = f"{base / fb[0]:.1f}x" if base else '-'
        print(f"| {name}{f' (L={chunk_len})' if 'chunked' in name else ''} | {f[0]:.3f} ({f[1]:.3f}) | "
              f"{fb[0]:.3f} ({fb[1]:.3f}) | {speedup} |", flush=True)


def bench_generate():
    if out_dir:
        import os
        ckpt = torch.load(os.path.join(out_dir, 'ckpt.pt'), map_location='cpu', weights_only=False)
        kind, args = ckpt['model_type'], ckpt['model_args']
    else:
        kind, ckpt = model_type, None
        args = dict(n_layer=n_layer, n_embd=n_embd, vocab_size=vocab_size, block_size=max(map(int, contexts.split(',')))
                    + new_tokens + 1)
        if kind == 'llama':
            args.update(n_head=n_head, n_kv_head=n_kv_head)
    if kind == 'llama':
        from model_llama import Llama as Model, LlamaConfig as Config
    else:
        from model_rwkv7 import RWKV7 as Model, RWKV7Config as Config
    model = Model(Config(**args))
    if ckpt is not None:
        model.load_state_dict(ckpt['model'])
    model.eval().to(device)
    print(f"{kind}: {model.get_num_params() / 1e6:.1f}M parameters, batch 1, fp32, {device}; greedy decoding of "
          f"{new_tokens} tokens after the context\n")
    print("| context | prefill tok/s | decode tok/s |\n|---|---|---|")
    for ctx in map(int, contexts.split(',')):
        if ctx + new_tokens > model.config.block_size and kind == 'llama':
            print(f"| {ctx} | - | - (longer than block_size {model.config.block_size}) |")
            continue
        idx = torch.randint(0, model.config.vocab_size, (1, ctx), device=device)

        def prefill():
            with torch.no_grad():
                model(idx) if kind == 'llama' else model.step(idx)
        p = timed(prefill)[0]
        gen = model.generate_stream(idx, new_tokens + 1, temperature=0)
        next(gen)  # the prefill and the first token
        t0 = time.perf_counter()
        n = sum(1 for _ in gen)
        d = (time.perf_counter() - t0) / n
        print(f"| {ctx} | {ctx / p:,.0f} | {1 / d:,.1f} |", flush=True)


def load_run(path):
    """(model, tokenizer, checkpoint) of a run's best.pt (else ckpt.pt), in eval mode on `device`."""
    import os
    from tokenizer import tokenizer_from_state
    name = 'best.pt' if os.path.isfile(os.path.join(path, 'best.pt')) else 'ckpt.pt'
    if not os.path.isfile(os.path.join(path, name)):
        raise ConfigError(f"no checkpoint in '{path}': set --out_dir to a run")
    ckpt = torch.load(os.path.join(path, name), map_location='cpu', weights_only=False)
    if ckpt['model_type'] == 'llama':
        from model_llama import Llama as Model, LlamaConfig as Config
    else:
        from model_rwkv7 import RWKV7 as Model, RWKV7Config as Config
    model = Model(Config(**ckpt['model_args']))
    model.load_state_dict(ckpt['model'])
    return model.eval().to(device), tokenizer_from_state(ckpt['tokenizer']), ckpt


def bench_accuracy():
    """Greedy zero-shot answers in the chat format; a problem is right when the number after '**Final Answer:**'
    equals the number after the gold answer's '####' (both normalised). Prints accuracy with a 95% interval."""
    import json
    import math
    import os
    import chat
    if not os.path.isfile(data):
        raise ConfigError(f"--data='{data}' not found: a jsonl of {{'question', 'answer'}} (e.g. data/<run>/test.jsonl)")
    model, tok, ckpt = load_run(out_dir)
    problems = [json.loads(line) for line in open(data) if line.strip()][:limit or None]
    stops = [tok.special['<|im_end|>'], tok.eot_id]
    right, t0 = 0, time.perf_counter()
    for i, p in enumerate(problems, 1):
        ids = chat.prompt(tok, p['question'])
        x = torch.tensor([ids[-(model.config.block_size - max_new_tokens):] if ckpt['model_type'] == 'llama'
                          else ids], device=device)
        out = model.generate(x, max_new_tokens, temperature=0, stop_tokens=stops, vocab_limit=tok.vocab_size)
        reply = tok.decode([t for t in out[0, x.size(1):].tolist() if t not in stops])
        right += chat.final_answer(reply) == chat.gsm8k_parts(p['answer'])[1]
        if i % 50 == 0 or i == len(problems):
            print(f"{i}/{len(problems)}: accuracy {right / i:.3f}", file=sys.stderr, flush=True)
    acc, n = right / len(problems), len(problems)
    half = 1.96 * math.sqrt(acc * (1 - acc) / n)
    print(f"| run | problems | accuracy | 95% interval | problems/min |\n|---|---|---|---|---|\n"
          f"| {out_dir} | {n} | {acc:.3f} | [{max(0, acc - half):.3f}, {min(1, acc + half):.3f}] | "
          f"{n / (time.perf_counter() - t0) * 60:.0f} |")
    return acc


if __name__ == '__main__':
    try:
        configure(globals(), verbose=False)
        device = pick_device(device)
        if task not in ('wkv', 'generate', 'accuracy'):
            raise ConfigError(f"unknown task '{task}': use wkv, generate or accuracy")
        {'wkv': bench_wkv, 'generate': bench_generate, 'accuracy': bench_accuracy}[task]()
    except ConfigError as e:
        print(f"bench.py: error: {e}", file=sys.stderr)
        sys.exit(1)
