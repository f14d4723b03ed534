"""
The benchmarks of bench.py that measure rather than evaluate: training and decode speed (--task=speed, generate), the
WKV7 implementations (--task=wkv) and the peak memory of a training step, full fine-tuning vs LoRA vs QLoRA
(--task=memory); and the markdown `table` bench.py shares with them. bench.py holds the configuration (its flags)
and passes it in; each function prints its markdown tables and returns the fields of its bench.jsonl record.
Timings are the median of `repeats` calls after one warm-up call (min in parentheses).
"""

import json
import os
import statistics
import sys
import time

import torch

from checkpoint import CheckpointError, model_class, new_model_args
from configurator import ConfigError, pick_dtype, script_defaults


def table(header, rows):
    """Print a markdown table: header a list of column names, rows lists of cells."""
    print('| ' + ' | '.join(header) + ' |\n|' + '---|' * len(header))
    for r in rows:
        print('| ' + ' | '.join(str(c) for c in r) + ' |', flush=True)


def sync(device):
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def timed(fn, repeats, device):
    """(median, min) seconds of `repeats` calls of fn after one warm-up call."""
    fn()
    ts = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), min(ts)


# ---------------------------------------------------------------------------- speed
def config_setup(config):
    """(model_type, model_args, batch_size, block_size) of a train.py config file over train.py's defaults: the model
    train.py would build from scratch (checkpoint.new_model_args; vocab_size 0: the data's vocabulary, padded, or
    GPT-2's 50304 when data_dir is not prepared). Raises ConfigError for a missing or failing file, an unknown preset."""
    if not os.path.isfile(config):
        raise ConfigError(f"--config='{config}' not found: a train.py config file (e.g. config/micro.py)")
    g = script_defaults(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'train.py'))
    try:
        exec(compile(open(config).read(), config, 'exec'), g)
    except Exception as e:
        raise ConfigError(f"config file '{config}' failed to run: {type(e).__name__}: {e}") from None
    meta = os.path.join(g['data_dir'], 'meta.json')
    try:
        args = new_model_args(g, json.load(open(meta))['vocab_size'] if os.path.isfile(meta) else 50304)
    except CheckpointError as e:
        raise ConfigError(f"{e} (in {config})") from None
    return g['model_type'], args, g['batch_size'], g['block_size']


def gen_speed(model, kind, ctx, new_tokens, repeats, device):
    """(prefill tok/s, decode tok/s) of batch 1 greedy decoding of new_tokens after a random context of ctx tokens."""
    idx = torch.randint(0, model.config.vocab_size, (1, ctx), device=device)

    def prefill():
        with torch.no_grad():
            model(idx) if kind == 'llama' else model.step(idx)
    p = timed(prefill, repeats, device)[0]
    stream = model.generate_stream(idx, new_tokens + 1, temperature=0)
    next(stream)  # the prefill and the first token
    sync(device)
    t0 = time.perf_counter()
    n = sum(1 for _ in stream)
    sync(device)
    return ctx / p, n / (time.perf_counter() - t0)


def official_rwkv_speed(model, contexts, new_tokens, repeats):
    """Decode tokens/s (batch 1, greedy, new_tokens after a random context) of our RWKV7 `model` and of BlinkDL's
    `rwkv` pip package (its x070 model, strategy 'cpu fp32', on the same weights written as an official .pth), each
    the median of `repeats` runs, the two interleaved, at each of `contexts`. Returns [(context, ours, official)]
    (tok/s). Raises ConfigError without the package (pip install rwkv)."""
    import tempfile
    os.environ.setdefault('RWKV_V7_ON', '1')  # read on import: the package's RWKV is then its x070 model
    try:
        from rwkv.model import RWKV as Official
    except ImportError:
        raise ConfigError("--vs_official needs BlinkDL's rwkv package: pip install rwkv") from None
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(model.official_state_dict(), os.path.join(tmp, 'm.pth'))
        official = Official(os.path.join(tmp, 'm'), strategy='cpu fp32')

    def theirs(ids):
        out, state = official.forward(ids, None)
        t0 = time.perf_counter()
        for _ in range(new_tokens):
            out, state = official.forward([int(out.argmax())], state)
        return new_tokens / (time.perf_counter() - t0)
    theirs(list(range(8)))  # its first call compiles TorchScript: not timed
    rows = []
    for ctx in contexts:
        ids = torch.randint(0, model.config.vocab_size, (ctx,)).tolist()
        pairs = [(gen_speed(model, 'rwkv7', ctx, new_tokens, 1, 'cpu')[1], theirs(ids)) for _ in range(repeats)]
        rows.append((ctx, *(statistics.median(x) for x in zip(*pairs))))
    return rows


def official_llama_speed(model, batches, new_tokens, repeats, prompt_len=64):
    """Sampling tokens/s (temperature 1, new_tokens per row, no stop) of our Llama `model` (generate_stream: KV cache)
    and of transformers' generate on the same weights (export.export_hf, loaded by AutoModelForCausalLM), each
    the median of `repeats` runs, the two interleaved, at each batch size of `batches`, every row the same random
    prompt of prompt_len tokens (an RL group: rl.py samples group_size replies per problem). Returns [(batch, ours,
    transformers)] (tok/s). Raises ConfigError without transformers."""
    import tempfile
    from export import export_hf
    try:
        from transformers import AutoModelForCausalLM
    except ImportError:
        raise ConfigError("--vs_official on a Llama needs transformers: pip install transformers") from None
    with tempfile.TemporaryDirectory() as tmp:
        hf = AutoModelForCausalLM.from_pretrained(export_hf(model, tmp)).float().eval()
    prompt = torch.randint(0, model.config.vocab_size, (1, prompt_len))

    def ours(x):
        t0 = time.perf_counter()
        n = sum(t.numel() for t in model.generate_stream(x, new_tokens, 1.0))
        return n / (time.perf_counter() - t0)

    def theirs(x):
        t0 = time.perf_counter()
        with torch.no_grad():
            out = hf.generate(x, attention_mask=torch.ones_like(x), do_sample=True, temperature=1.0, top_k=0,
                              top_p=1.0, max_new_tokens=new_tokens, min_new_tokens=new_tokens, eos_token_id=None,
                              pad_token_id=0)
        return (out.size(1) - x.size(1)) * x.size(0) / (time.perf_counter() - t0)
    rows = []
    for b in batches:
        x = prompt.expand(b, -1).contiguous()
        ours(x), theirs(x)  # warm-up
        pairs = [(ours(x), theirs(x)) for _ in range(repeats)]
        rows.append((b, *(statistics.median(v) for v in zip(*pairs))))
    return rows


def speed(name, kind, args, sd, *, bsz, blk, device, train, contexts, new_tokens, repeats, burn_in, steps, dtype,
          compiled, impls, chunk_len, profile, out_dir, vs_official=False):
    """Training step tokens/s, MFU and peak memory (burn_in untimed steps, then `steps` timed; bsz x blk tokens), and
    prefill/decode tokens/s at each of `contexts`, per WKV implementation for RWKV-7, of the model `kind` with
    model_args `args` (and state dict sd, or None for random weights). train=False: generation only. profile: a
    torch.profiler trace of 3 training steps to out_dir. vs_official (on a CPU): RWKV-7's decode tokens/s against
    BlinkDL's rwkv package on the same weights (official_rwkv_speed), a Llama's sampling tokens/s at batch 1 and 8
    against transformers' generate (official_llama_speed). compiled: also RWKV-7's decode step
    (RWKV7.compile_step), compiled before the timings."""
    import resource
    from contextlib import nullcontext
    if vs_official and device != 'cpu':
        raise ConfigError("--vs_official compares on the CPU (RWKV-7: BlinkDL's rwkv package; Llama: transformers): "
                          "set --device=cpu")
    dev_type = device.split(':')[0]
    dt_name = pick_dtype(dtype, dev_type)
    amp = nullcontext() if dt_name == 'float32' else torch.autocast(dev_type, dtype=getattr(torch, dt_name))
    Model, Config = model_class(kind)
    train_rows, gen_rows, recs = [], [], []
    for impl in (['sdpa'] if kind == 'llama' else impls):
        extra = {} if kind == 'llama' else dict(wkv_impl=impl, chunk_len=chunk_len)
        if train:
            model = Model(Config(**{**args, 'block_size': blk, **extra})).to(device)  # (MFU counts block_size)
            if sd is not None:
                model.load_state_dict(sd)
            opt = model.configure_optimizers(0.1, 1e-4, (0.9, 0.95), dev_type)
            fwd = torch.compile(model) if compiled else model
            x = torch.randint(0, args['vocab_size'], (bsz, blk), device=device)
            y = torch.randint(0, args['vocab_size'], (bsz, blk), device=device)

            def step():
                with amp:
                    loss = fwd(x, y)[1]
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
            for _ in range(burn_in):
                step()
            if dev_type == 'cuda':
                torch.cuda.reset_peak_memory_stats(device)
            sync(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            sync(device)
            dt = (time.perf_counter() - t0) / max(steps, 1)
            mfu = model.estimate_mfu(bsz * blk, dt, device)
            mem = torch.cuda.max_memory_allocated(device) if dev_type == 'cuda' else \
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == 'darwin' else 1024)
            train_rows.append([name, kind, impl, f"{model.get_num_params() / 1e6:.2f}M", f"{bsz} x {blk}",
                               f"{bsz * blk / dt:,.0f}", f"{dt * 1000:.1f}", f"{mfu:.1%}" if mfu else '-',
                               f"{mem / 2 ** 30:.2f} GiB" + ('' if dev_type == 'cuda' else ' (process RSS)')])
            recs.append({'impl': impl, 'tok_per_s': bsz * blk / dt, 'ms_per_step': dt * 1000, 'mfu': mfu,
                         'peak_mem_bytes': mem})
            if profile:
                if not out_dir:
                    raise ConfigError("--profile=True writes its trace to out_dir: set --out_dir")
                from torch.profiler import ProfilerActivity, profile as tprofile
                acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev_type == 'cuda' else [])
                with tprofile(activities=acts, record_shapes=True) as prof:
                    for _ in range(3):
                        step()
                os.makedirs(out_dir, exist_ok=True)
                trace = os.path.join(out_dir, f"trace_{kind}_{impl}.json")
                prof.export_chrome_trace(trace)
                print(f"profiler trace (chrome://tracing, perfetto.dev): {trace}", file=sys.stderr)
            del model, opt, fwd
        # generation: RoPE tables grow with block_size (no weights), so any context can be timed
        model = Model(Config(**{**args, 'block_size': max(args['block_size'], max(contexts) + new_tokens + 1),
                                **extra})).to(device)
        if sd is not None:
            model.load_state_dict(sd)
        model.eval()
        if compiled and kind == 'rwkv7':  # the decode step compiled, outside the timings
            model.compile_step()
            gen_speed(model, kind, 8, 2, 1, device)
        for ctx in contexts:
            pre, dec = gen_speed(model, kind, ctx, new_tokens, repeats, device)
            gen_rows.append([kind, impl + (' (compiled step)' if compiled and kind == 'rwkv7' else ''), ctx,
                             f"{pre:,.0f}", f"{dec:,.1f}"])
            recs.append({'impl': impl, 'context': ctx, 'prefill_tok_per_s': pre, 'decode_tok_per_s': dec})
        if vs_official and kind == 'llama':
            official_rows = official_llama_speed(model, [1, 8], new_tokens, repeats)
        elif vs_official and impl == impls[-1]:
            official_rows = official_rwkv_speed(model, contexts, new_tokens, repeats)
        del model
    print(f"\n{name}: {kind}{f', {dt_name} training step' if train else ''}, {device}, {torch.get_num_threads()} "
          f"threads\n")
    if train_rows:
        table(['model', 'type', 'impl', 'params', 'batch x block', 'train tok/s', 'ms/step', 'MFU', 'peak memory'],
              train_rows)
        print()
    table(['type', 'impl', 'context', 'prefill tok/s', 'decode tok/s (batch 1, greedy)'], gen_rows)
    if vs_official and kind == 'llama':
        print(f"\nsampling tok/s (temperature 1, {new_tokens} tokens a row after 64 prompt tokens; median of {repeats}, "
              f"interleaved): ours vs transformers' generate, the same weights, the rows of a batch one prompt\n")
        table(['batch', 'ours', 'transformers', 'ours / transformers'],
              [[b, f"{a:,.0f}", f"{c:,.0f}", f"{a / c:.2f}x"] for b, a, c in official_rows])
        recs += [{'batch': b, 'ours_tok_per_s': a, 'transformers_tok_per_s': c} for b, a, c in official_rows]
    elif vs_official:
        print(f"\ndecode tok/s (batch 1, greedy, {new_tokens} tokens; median of {repeats}, interleaved): ours "
              f"({impls[-1]}{', compiled step' if compiled else ''}) vs BlinkDL's rwkv package (x070, 'cpu fp32'), the "
              f"same weights\n")
        table(['context', 'ours', 'rwkv package', 'ours / package'],
              [[n, f"{a:,.1f}", f"{c:,.1f}", f"{a / c:.2f}x"] for n, a, c in official_rows])
        recs += [{'context': n, 'official_decode_tok_per_s': c} for n, a, c in official_rows]
    return {'model': name, 'model_type': kind, 'dtype': dt_name, 'device': device, 'batch': bsz, 'block': blk,
            'results': recs}


# ---------------------------------------------------------------------------- wkv
def wkv(B, H, N, T, *, impls, chunk_len, compiled, device, repeats):
    """Forward and forward+backward seconds of each WKV7 implementation in impls (and, compiled, the
    torch.compile'd chunked one) on random fp32 inputs of shape (B, T, H, N)."""
    from model_rwkv7 import DECAY_SCALE, wkv_chunked, wkv_naive
    torch.manual_seed(0)
    r, k, v = (torch.randn(B, T, H, N, device=device) for _ in range(3))
    w = -DECAY_SCALE * torch.sigmoid(torch.randn(B, T, H, N, device=device) * 3)
    kk = torch.nn.functional.normalize(torch.randn(B, T, H, N, device=device), dim=-1)
    a = torch.sigmoid(torch.randn(B, T, H, N, device=device))
    xs = [t.requires_grad_() for t in (r, w, k, v, -kk, kk * a)]
    dy = torch.randn(B, T, H, N, device=device)
    fns = {'naive': wkv_naive, 'chunked': lambda *x: wkv_chunked(*x, chunk_len=chunk_len)}
    names = list(impls) + (['chunked+compile'] if compiled else [])
    print(f"WKV7, B={B} H={H} N={N} T={T}, fp32, {device}, {torch.get_num_threads()} threads; seconds, median (min)\n")
    print("| implementation | forward | forward+backward | fwd+bwd speed-up over naive |\n|---|---|---|---|")
    base, recs = None, []
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
        f, fb = timed(fwd, repeats, device), timed(fwd_bwd, repeats, device)
        base = fb[0] if name == 'naive' else base
        speedup = f"{base / fb[0]:.1f}x" if base else '-'
        print(f"| {name}{f' (L={chunk_len})' if 'chunked' in name else ''} | {f[0]:.3f} ({f[1]:.3f}) | "
              f"{fb[0]:.3f} ({fb[1]:.3f}) | {speedup} |", flush=True)
        recs.append({'impl': name, 'forward_s': f[0], 'forward_backward_s': fb[0]})
    return {'shape': [B, T, H, N], 'chunk_len': chunk_len, 'device': device, 'results': recs}


# ---------------------------------------------------------------------------- memory
MEMORY_MODES = {'full': 'full fine-tuning, AdamW', 'lora': 'LoRA r=16, AdamW', 'qlora': 'QLoRA (NF4 base), AdamW',
                'qlora8': 'QLoRA, 8-bit AdamW'}


def memory_step(mode, shape, *, device, seed, batch, block):
    """A Llama of `shape` (model_args) in `mode` (LoRA r=16, alpha 32, all seven projections), here: a warm-up
    training step (forward, backward, optimizer step; batch x block tokens), then the measured one. Returns a dict:
    peak_bytes of the measured step above the process after a run on a 1 x 64 model (imports, first use of library
    code not counted; CUDA max_memory_allocated; CPU peak RSS, VmHWM reset by /proc/self/clear_refs, freed heap
    returned by malloc_trim), params, trainable, nf4_bytes_per_weight, state_bytes_per_trainable, shape."""
    import ctypes
    from lora import DEFAULT_TARGETS, apply_lora, count_params
    from model_llama import Llama, LlamaConfig
    from optim import adamw8bit
    from qlora import quantize_model, quantized_bytes
    cuda, dev_type = device.startswith('cuda'), device.split(':')[0]
    ptdtype = torch.bfloat16 if cuda else torch.float32  # as train.py: bf16 compute on GPU, fp32 on CPU
    trim = ctypes.CDLL('libc.so.6').malloc_trim if sys.platform == 'linux' else lambda _: None
    rss = lambda key: next(int(line.split()[1]) * 1024 for line in open('/proc/self/status')  # noqa: E731
                           if line.startswith(key + ':'))

    def run(shape, measure):
        torch.manual_seed(seed)
        model = Llama(LlamaConfig(**shape, block_size=block))
        out = {'params': model.get_num_params(), 'shape': shape, 'nf4_bytes_per_weight': None}
        if mode != 'full':
            apply_lora(model, DEFAULT_TARGETS['llama'], r=16, alpha=32)
        if mode.startswith('qlora'):
            quantize_model(model, ptdtype, device)
            nbytes, nweights = quantized_bytes(model)
            out['nf4_bytes_per_weight'] = nbytes / nweights
        opt = model.to(device).configure_optimizers(0.1, 1e-4, (0.9, 0.95), dev_type)
        opt = adamw8bit(opt.param_groups, 1e-4, (0.9, 0.95), dev_type) if mode == 'qlora8' else opt
        x = torch.randint(0, shape['vocab_size'], (2, batch, block), device=device)
        for i in range(2):
            if i and measure:  # the warm-up step made the optimizer state; measure the next one
                trim(0)
                torch.cuda.reset_peak_memory_stats(device) if cuda else open('/proc/self/clear_refs', 'w').write('5')
            with torch.autocast(dev_type, dtype=ptdtype, enabled=cuda):
                model(x[0], x[1])[1].backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        states = {t.data_ptr(): t.nbytes for st in opt.state.values() for t in st.values() if torch.is_tensor(t)}
        n = count_params(model)[0]
        return dict(out, trainable=n, state_bytes_per_trainable=sum(states.values()) / n)
    run(dict(n_layer=1, n_embd=64, n_head=4, n_kv_head=2, vocab_size=320), measure=False)
    trim(0)
    base = torch.cuda.memory_allocated(device) if cuda else rss('VmRSS')
    res = run(shape, measure=True)
    return dict(res, mode=mode, peak_bytes=(torch.cuda.max_memory_allocated(device) if cuda else rss('VmHWM')) - base)


def memory_report(res, *, device, batch, block):
    """Print the memory_step results of every mode ({mode: dict}) against full fine-tuning's, and the goals (NF4 <=
    0.55 bytes/weight, 8-bit AdamW <= 2.1 bytes/parameter, QLoRA + 8-bit <= 40% of full)."""
    cuda = device.startswith('cuda')
    full, s = res['full']['peak_bytes'], res['full']['shape']
    nf4, st8 = res['qlora']['nf4_bytes_per_weight'], res['qlora8']['state_bytes_per_trainable']
    ratio, met = res['qlora8']['peak_bytes'] / full, lambda ok: 'met' if ok else 'NOT met'
    print(f"\nLlama {s['n_layer']} x {s['n_embd']} (heads {s['n_head']}/{s['n_kv_head']}), vocabulary "
          f"{s['vocab_size']:,}, tied: {res['full']['params']:,} parameters; a training step of {batch} x "
          f"{block} tokens, {device}, {'bf16 autocast' if cuda else 'fp32'}; peak "
          f"{'allocated' if cuda else 'RSS'} above the process's after a warm-up on a tiny model\n")
    table(['mode', 'trainable params', 'peak MiB', 'ratio to full', 'optimizer state bytes / trainable param'],
          [[MEMORY_MODES[m], f"{r['trainable']:,}", f"{r['peak_bytes'] / 2**20:,.1f}",
            f"{r['peak_bytes'] / full:.3f}", f"{r['state_bytes_per_trainable']:.3f}"] for m, r in res.items()])
    print(f"\nNF4 base: {nf4:.3f} bytes per quantized weight (goal <= 0.55: {met(nf4 <= 0.55)})\n8-bit AdamW: "
          f"{st8:.3f} bytes of state per trainable parameter (goal <= 2.1: {met(st8 <= 2.1)})\nQLoRA + 8-bit AdamW "
          f"peak: {ratio:.1%} of full fine-tuning's (goal <= 40%: {met(ratio <= 0.4)})")
    return {'device': device, 'batch': batch, 'block': block, 'nf4_bytes_per_weight': nf4,
            'adamw8bit_state_bytes_per_trainable': st8, 'qlora8_over_full': ratio, 'results': res}


if __name__ == '__main__':  # a library of bench.py's: say where its tasks run instead of exiting silently
    print(f"bench_perf.py: error: this file holds bench.py's performance tasks; run them with python bench.py "
          f"{' '.join(sys.argv[1:]) or '--task=speed'}", file=sys.stderr)
    sys.exit(1)
