"""
Train a model on prepared token shards (see prepare.py). One loop, nanoGPT order:

    python train.py config/shakespeare_char.py
    python train.py config/shakespeare_char.py --max_iters=4000 --init_from=resume

Config is the globals below; a config file and --key=value override them (configurator.py). The effective config is
printed, saved as out_dir/config.json and inside every checkpoint. out_dir/ckpt.pt is the state to resume from (written
atomically at each eval -- with always_save_checkpoint=False only when val improved --, at the end, and on Ctrl-C /
SIGTERM); out_dir/best.pt the model with the best val loss so far. Every log line is also appended to out_dir/log.jsonl. A resumed run continues exactly where it stopped.
"""

import dataclasses
import json
import math
import os
import random
import signal
import sys
import time
from contextlib import nullcontext

import numpy as np
import torch

from configurator import ConfigError, configure, pick_device
from shards import DataError, load_meta, load_split, pack_examples, read_shard
from tokenizer import get_tokenizer

# -----------------------------------------------------------------------------
# I/O
out_dir = 'out'
eval_interval = 250
log_interval = 10
eval_iters = 20             # batches per split in each loss estimate
eval_only = False           # evaluate once and exit
always_save_checkpoint = True  # write ckpt.pt at every eval (else only when val improves, and at the end)
init_from = 'scratch'       # 'scratch' | 'resume' (from out_dir/ckpt.pt) | 'rwkv:<official RWKV-7 .pth>' |
                            # another run's out_dir (its weights, a fresh optimizer: pretrain, then fine-tune)
wandb_log = False
wandb_project = 'tiny-reasoner'
wandb_run_name = 'run'
# data
data_dir = 'data/shakespeare_byte'
gradient_accumulation_steps = 1
batch_size = 12             # micro-batch size
curriculum = False          # chat data: the first epoch goes from easy to hard examples
block_size = 256
# model
model_type = 'llama'        # 'llama' (model_llama.py) | 'rwkv7' (model_rwkv7.py)
preset = ''                 # llama: '' or one of model_llama.PRESETS (micro, tiny, small): sets the shape keys below
n_layer = 6
n_head = 6
n_kv_head = 2
n_embd = 384
intermediate_size = 0       # llama: SwiGLU width, 0 = Llama's rule from n_embd
rope_theta = 10000.0
norm_eps = 1e-5
tie_embeddings = True
qkv_bias = False
dropout = 0.0
vocab_size = 0              # 0 = the data's vocabulary rounded up to a multiple of 64
head_size = 64              # rwkv7: N, the WKV head size (n_head = n_embd / head_size; n_head is for llama)
dim_ffn = 0                 # rwkv7: channel-mix width, 0 = 4 * n_embd
wkv_impl = 'chunked'        # rwkv7: 'chunked' (matmuls per chunk) | 'naive' (per-step loop, the reference)
chunk_len = 32              # rwkv7: chunk length of the chunked WKV
# optimizer (AdamW)
learning_rate = 6e-4        # peak
max_iters = 5000
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0             # 0 = off
# learning rate schedule: linear warmup, then decay to min_lr at lr_decay_iters
decay_lr = True
lr_schedule = 'cosine'      # 'cosine' | 'linear'
warmup_iters = 100
lr_decay_iters = 5000
min_lr = 6e-5
# system
device = 'auto'             # 'auto' (cuda > mps > cpu) | 'cpu' | 'cuda' | 'cuda:1' | 'mps'
dtype = 'auto'              # 'auto' (bf16 on GPUs that have it, else fp16; fp32 on cpu/mps) | float32 | bfloat16 | float16
compile = False             # torch.compile the model
grad_checkpoint = False     # recompute activations in backward (less memory, ~30% slower)
seed = 1337
# -----------------------------------------------------------------------------


sys.stdout.reconfigure(line_buffering=True)  # log lines show up at once, also when piped to a file


def fail(msg):
    print(f"train.py: error: {msg}", file=sys.stderr)
    sys.exit(1)


try:
    config = configure(globals())
    device = pick_device(device)
    device_type = device.split(':')[0]
    if dtype == 'auto':  # bf16 where the GPU has it natively (Ampere and later), fp16 + GradScaler before
        dtype = ('bfloat16' if torch.cuda.is_bf16_supported(including_emulation=False) else 'float16') \
            if device_type == 'cuda' else 'float32'
    if dtype not in ('float32', 'bfloat16', 'float16'):
        raise ConfigError(f"dtype must be auto, float32, bfloat16 or float16, not '{dtype}'")
    if lr_schedule not in ('cosine', 'linear'):
        raise ConfigError(f"lr_schedule must be 'cosine' or 'linear', not '{lr_schedule}'")
    if init_from not in ('scratch', 'resume') and not init_from.startswith('rwkv:') and not os.path.isdir(init_from):
        raise ConfigError(f"init_from must be 'scratch', 'resume', 'rwkv:<file.pth>' or a run's out_dir, not "
                          f"'{init_from}' (no such folder)")
    if model_type not in ('llama', 'rwkv7'):
        raise ConfigError(f"model_type must be 'llama' or 'rwkv7', not '{model_type}'")
    if init_from.startswith('rwkv:') and model_type != 'rwkv7':
        raise ConfigError(f"init_from='{init_from}' loads an RWKV-7 checkpoint: set --model_type=rwkv7")
    for k in ('batch_size', 'block_size', 'gradient_accumulation_steps', 'eval_interval', 'eval_iters',
              'log_interval'):
        if globals()[k] < 1:
            raise ConfigError(f"{k} must be at least 1, got {globals()[k]}")
    if decay_lr and not warmup_iters <= lr_decay_iters:
        raise ConfigError(f"warmup_iters ({warmup_iters}) must not exceed lr_decay_iters ({lr_decay_iters})")
    if wandb_log:
        try:
            import wandb
        except ImportError:
            raise ConfigError("wandb_log=True needs wandb: pip install wandb (or leave wandb_log off)") from None
    meta = load_meta(data_dir)
    tok = get_tokenizer(meta['tokenizer'], data_dir)
except (ConfigError, DataError, FileNotFoundError, ValueError) as e:  # ValueError: an unusable tokenizer spec
    fail(str(e))

os.makedirs(out_dir, exist_ok=True)
torch.manual_seed(seed)
random.seed(seed)
np.random.seed(seed)
if device_type == 'cuda':
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
ptdtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}[dtype]
ctx = nullcontext() if dtype == 'float32' else torch.autocast(device_type=device_type, dtype=ptdtype)
tokens_per_iter = gradient_accumulation_steps * batch_size * block_size
print(f"tokens per iteration: {tokens_per_iter:,} ({gradient_accumulation_steps} x {batch_size} x {block_size}), "
      f"device {device}, dtype {dtype}")

# ---------------------------------------------------------------------------- model
from model_llama import PRESETS, Llama, LlamaConfig  # noqa: E402
from model_rwkv7 import RWKV7, RWKV7Config  # noqa: E402

MODELS = {'llama': (Llama, LlamaConfig), 'rwkv7': (RWKV7, RWKV7Config)}

checkpoint = None
if init_from == 'resume':
    ckpt_path = os.path.join(out_dir, 'ckpt.pt')
    if not os.path.isfile(ckpt_path):
        fail(f"init_from='resume' but {ckpt_path} does not exist: train from scratch first or fix --out_dir")
    checkpoint = torch.load(ckpt_path, map_location='cpu', weights_only=False)
    if checkpoint.get('model_type') != model_type:
        fail(f"{ckpt_path} holds a '{checkpoint.get('model_type')}' model, not '{model_type}': set --model_type")
    model_args = checkpoint['model_args']
    if checkpoint['tokenizer']['spec'] != tok.spec or checkpoint['tokenizer']['blob'] != tok.blob:
        fail(f"{ckpt_path} was trained with tokenizer '{checkpoint['tokenizer']['spec']}', but {data_dir} holds data "
             f"tokenized with '{tok.spec}': resume on the run's own data_dir")
    print("resuming: the model's shape comes from the checkpoint; shape keys given now are ignored")
elif init_from not in ('scratch', 'resume') and not init_from.startswith('rwkv:'):  # another run's out_dir
    name = 'best.pt' if os.path.isfile(os.path.join(init_from, 'best.pt')) else 'ckpt.pt'
    if not os.path.isfile(os.path.join(init_from, name)):
        fail(f"init_from='{init_from}' has no best.pt or ckpt.pt: train that run first")
    checkpoint = torch.load(os.path.join(init_from, name), map_location='cpu', weights_only=False)
    if checkpoint.get('model_type') != model_type or checkpoint['tokenizer']['spec'] != tok.spec \
            or checkpoint['tokenizer']['blob'] != tok.blob:
        fail(f"{init_from}/{name} is a '{checkpoint.get('model_type')}' model with tokenizer "
             f"'{checkpoint['tokenizer']['spec']}'; this run has model_type '{model_type}' and data tokenized with "
             f"'{tok.spec}': they must match")
    model_args = checkpoint['model_args']
    print(f"initialising from {init_from}/{name} (iteration {checkpoint['iter_num']}); a fresh optimizer")
elif init_from.startswith('rwkv:'):
    try:
        pretrained = RWKV7.from_pretrained(init_from[5:], block_size=block_size, dropout=dropout, wkv_impl=wkv_impl,
                                           chunk_len=chunk_len)
    except (OSError, ValueError, RuntimeError) as e:
        fail(f"cannot load {init_from[5:]}: {e}")
    model_args = dataclasses.asdict(pretrained.config)
    print(f"loaded {init_from[5:]}")
elif model_type == 'rwkv7':
    model_args = dict(block_size=block_size, vocab_size=vocab_size or 64 * math.ceil(meta['vocab_size'] / 64),
                      n_layer=n_layer, n_embd=n_embd, head_size=head_size, dim_ffn=dim_ffn, dropout=dropout)
else:
    shape = dict(n_layer=n_layer, n_head=n_head, n_kv_head=n_kv_head, n_embd=n_embd)
    if preset:
        if preset not in PRESETS:
            fail(f"unknown preset '{preset}': choose one of {', '.join(PRESETS)}")
        shape = PRESETS[preset]
    model_args = dict(shape, block_size=block_size, vocab_size=vocab_size or 64 * math.ceil(meta['vocab_size'] / 64),
                      intermediate_size=intermediate_size, rope_theta=rope_theta, norm_eps=norm_eps,
                      tie_embeddings=tie_embeddings, qkv_bias=qkv_bias, dropout=dropout)
if model_args['vocab_size'] < meta['vocab_size']:
    fail(f"vocab_size {model_args['vocab_size']} is smaller than the tokenizer's {meta['vocab_size']} ({data_dir}): "
         f"leave vocab_size=0 to size it from the data")
if block_size > model_args['block_size']:
    fail(f"block_size {block_size} is longer than the model's {model_args['block_size']}")
if model_type == 'rwkv7':  # the WKV implementation is a run-time choice, also on resume
    model_args.update(wkv_impl=wkv_impl, chunk_len=chunk_len)
try:
    model = pretrained if init_from.startswith('rwkv:') else MODELS[model_type][0](MODELS[model_type][1](**model_args))
except (ValueError, ZeroDivisionError) as e:
    fail(f"bad model shape: {e}")
model_args = dataclasses.asdict(model.config)  # with derived values (intermediate_size, LoRA ranks) filled in
if checkpoint is not None:
    model.load_state_dict(checkpoint['model'])
    if init_from != 'resume':
        checkpoint = None  # weights only: the rest starts fresh
model.grad_checkpoint = grad_checkpoint
model.to(device)
print(f"model: {model.get_num_params() / 1e6:.2f}M parameters, {json.dumps(model_args)}")

sft = meta.get('format') == 'chat'  # supervised examples with loss masks (prepare.py --format=chat)
try:
    data = {sp: load_split(data_dir, sp, model_args['vocab_size']) for sp in ('train', 'val')}
    if sft:
        masks = {sp: [read_shard(os.path.join(data_dir, f'mask_{sp}_{i:03d}.bin')) for i in range(len(data[sp]))]
                 for sp in data}
        # examples: (shard, start, length, difficulty) rows; training order by difficulty when curriculum is on
        examples = {sp: np.concatenate([np.column_stack([np.full(len(ix), i), ix]) for i, ix in enumerate(
            np.load(os.path.join(data_dir, f'idx_{sp}_{i:03d}.npy')) for i in range(len(data[sp])))]) for sp in data}
        if curriculum:
            examples['train'] = examples['train'][np.argsort(examples['train'][:, 3], kind='stable')]
        truncated = 0
except (DataError, FileNotFoundError) as e:
    fail(f"{e}: prepare the data again")
# a window of block_size + 1 tokens starts anywhere it fits inside one shard
starts = {sp: np.array([max(len(s) - block_size, 0) for s in shards]) for sp, shards in data.items()}
for sp in data:
    if starts[sp].sum() == 0 and not sft:
        fail(f"the {sp} split of {data_dir} has no shard of at least block_size + 1 = {block_size + 1} tokens: "
             f"lower block_size or prepare more data")
cum_starts = {sp: np.cumsum(starts[sp]) for sp in starts}  # window starts counted across shards
sampler = torch.Generator().manual_seed(seed)  # the data order; its state is saved, so resume is exact


def get_sft_batch(split, gen):
    """Rows that start at an example: whole examples packed one after another while they fit in block_size + 1
    tokens (an example is never split; one longer than a row is truncated and counted), the rest padded. Y is -1
    wherever the mask says the token is not learned. With curriculum, the first epoch draws from the easiest share
    of the examples, a share that grows to all of them."""
    global truncated
    ex = examples[split]
    share = min(1.0, (iter_num + 1) * tokens_per_iter / meta['train_tokens']) if curriculum and split == 'train' else 1
    picks = torch.randint(max(batch_size, int(len(ex) * share)), (batch_size,), generator=gen).tolist()
    rows, learn, cut = pack_examples(data[split], masks[split], ex, picks, block_size + 1, meta['eot_id'])
    truncated += cut if split == 'train' else 0
    y = np.where(learn[:, 1:], rows[:, 1:], -1)
    return torch.from_numpy(rows[:, :-1]).to(device), torch.from_numpy(y).to(device)


def get_batch(split, gen):
    """A random (X, Y) batch of shape (batch_size, block_size), int64; Y is X shifted by one token."""
    if sft:
        return get_sft_batch(split, gen)
    cum = cum_starts[split]
    pick = torch.randint(int(cum[-1]), (batch_size,), generator=gen).numpy()
    shard_of = np.searchsorted(cum, pick, side='right')
    offsets = pick - (cum - starts[split])[shard_of]
    rows = np.stack([data[split][s][o:o + block_size + 1] for s, o in zip(shard_of, offsets)]).astype(np.int64)
    x, y = torch.from_numpy(rows[:, :-1]), torch.from_numpy(rows[:, 1:])
    if device_type == 'cuda':
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


scaler = torch.amp.GradScaler(device_type, enabled=(dtype == 'float16'))
optimizer = model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type)
iter_num, best_val_loss, loss_acc0, n_acc = 0, float('inf'), 0.0, 0
if checkpoint is not None:
    optimizer.load_state_dict(checkpoint['optimizer'])
    if scaler.is_enabled() and checkpoint['scaler']:  # an fp32/bf16 run has no scaler state
        scaler.load_state_dict(checkpoint['scaler'])
    iter_num, best_val_loss = checkpoint['iter_num'], checkpoint['best_val_loss']
    rng = checkpoint['rng']
    torch.set_rng_state(rng['torch'])
    sampler.set_state(rng['sampler'])
    random.setstate(rng['python'])
    np.random.set_state(rng['numpy'])
    if device_type == 'cuda' and rng.get('cuda') is not None:
        torch.cuda.set_rng_state(rng['cuda'], device)
    if device_type == 'mps' and rng.get('mps') is not None:
        torch.mps.set_rng_state(rng['mps'])
    loss_acc0, n_acc = checkpoint['log_acc']  # a log window cut by the stop goes on after it
    print(f"resuming from {ckpt_path} at iteration {iter_num} (best val loss {best_val_loss:.4f})")
checkpoint = None  # free memory
raw_model = model
if compile:
    print("compiling the model... (takes a minute)")
    model = torch.compile(model)


@torch.no_grad()
def estimate_loss():
    """Mean loss over eval_iters batches of each split, always the same batches (a fixed seed), so evals compare."""
    out = {}
    model.eval()
    for split in ('train', 'val'):
        gen = torch.Generator().manual_seed(seed + 1)
        losses = torch.zeros(eval_iters)
        for k in range(eval_iters):
            X, Y = get_batch(split, gen)
            with ctx:
                losses[k] = model(X, Y)[1].item()
        out[split] = losses.mean().item()
    model.train()
    return out


def get_lr(it):
    """Linear warmup for warmup_iters, then cosine or linear decay to min_lr at lr_decay_iters, then min_lr."""
    if not decay_lr:
        return learning_rate
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    ratio = (it - warmup_iters) / max(lr_decay_iters - warmup_iters, 1)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio)) if lr_schedule == 'cosine' else 1.0 - ratio
    return min_lr + coeff * (learning_rate - min_lr)


def save(name, with_state):
    """Write out_dir/name atomically: a temp file, fsync, rename. with_state adds what resume needs."""
    ckpt = {'model': raw_model.state_dict(), 'model_type': model_type, 'model_args': model_args, 'config': config,
            'tokenizer': tok.state(), 'iter_num': iter_num, 'best_val_loss': best_val_loss}
    if with_state:
        ckpt.update(optimizer=optimizer.state_dict(), scaler=scaler.state_dict(), rng={
            'torch': torch.get_rng_state(), 'sampler': sampler.get_state(), 'python': random.getstate(),
            'numpy': np.random.get_state(), 'cuda': torch.cuda.get_rng_state(device) if device_type == 'cuda' else None,
            'mps': torch.mps.get_rng_state() if device_type == 'mps' else None},
            log_acc=(loss_acc.item(), n_acc))
    path = os.path.join(out_dir, name)
    with open(path + '.tmp', 'wb') as f:
        torch.save(ckpt, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + '.tmp', path)


def log(record):
    with open(os.path.join(out_dir, 'log.jsonl'), 'a') as f:
        f.write(json.dumps(record) + '\n')
    if wandb_log:
        wandb.log(record)


if eval_only:
    print(json.dumps(estimate_loss()))
    sys.exit(0)
with open(os.path.join(out_dir, 'config.json.tmp'), 'w') as f:
    json.dump(config, f, indent=2)
os.replace(os.path.join(out_dir, 'config.json.tmp'), os.path.join(out_dir, 'config.json'))
if wandb_log:
    wandb.init(project=wandb_project, name=wandb_run_name, config=config)

# Ctrl-C or SIGTERM: finish the current iteration, save, exit. A second Ctrl-C stops at once.
stop_requested = False


def request_stop(signum, frame):
    global stop_requested
    if stop_requested:
        raise KeyboardInterrupt
    stop_requested = True
    print("\nstopping: saving a checkpoint at the end of this iteration (Ctrl-C again to quit now)")


signal.signal(signal.SIGINT, request_stop)
signal.signal(signal.SIGTERM, request_stop)

# ---------------------------------------------------------------------------- the loop
start_iter, t_start, t0, last_log = iter_num, time.time(), time.time(), iter_num
loss_acc = torch.full((), loss_acc0, device=device)  # summed losses of the n_acc steps since the last log line
while True:
    lr = get_lr(iter_num)
    for group in optimizer.param_groups:
        group['lr'] = lr * group.get('lr_scale', 1.0)
    if (iter_num % eval_interval == 0 or iter_num == max_iters) and iter_num > start_iter or iter_num == 0:
        losses = estimate_loss()
        print(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
        log({'iter': iter_num, 'train_loss': losses['train'], 'val_loss': losses['val'], 'lr': lr,
             'elapsed_s': round(time.time() - t_start, 2)})
        if losses['val'] < best_val_loss:
            best_val_loss = losses['val']
            if iter_num > 0:
                save('best.pt', with_state=False)
        if iter_num > 0 and (always_save_checkpoint or best_val_loss == losses['val'] or iter_num == max_iters):
            save('ckpt.pt', with_state=True)
            print(f"saved {out_dir}/ckpt.pt")
    if iter_num >= max_iters or stop_requested:
        if stop_requested and iter_num > start_iter:
            save('ckpt.pt', with_state=True)
            print(f"saved {out_dir}/ckpt.pt at iteration {iter_num}; resume with --init_from=resume")
        break

    # one optimizer step over gradient_accumulation_steps micro-batches; each micro-batch loss is weighted by its
    # share of the window's target tokens, so the step's loss is the mean over all tokens of the window
    batches = [get_batch('train', sampler) for _ in range(gradient_accumulation_steps)]
    counts = [int((Y != -1).sum()) for _, Y in batches]
    for (X, Y), n in zip(batches, counts):
        with ctx:
            _, loss = model(X, Y)
            loss = loss * (n / sum(counts))
        scaler.scale(loss).backward()
        loss_acc += loss.detach()
    n_acc += 1
    if grad_clip != 0.0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    iter_num += 1

    if iter_num % log_interval == 0:
        t1 = time.time()
        lossf, dt = loss_acc.item() / n_acc, (t1 - t0) / (iter_num - last_log)
        loss_acc.zero_()
        t0, n_acc, last_log = t1, 0, iter_num
        mfu = raw_model.estimate_mfu(tokens_per_iter, dt, device)
        eta = (max_iters - iter_num) * dt
        print(f"iter {iter_num}: loss {lossf:.4f}, lr {lr:.2e}, {dt * 1000:.1f} ms/iter, "
              f"{tokens_per_iter / dt:,.0f} tok/s" + (f", mfu {mfu * 100:.1f}%" if mfu is not None else '')
              + f", eta {eta / 60:.1f} min" + (f", {truncated} examples truncated" if sft and truncated else ''))
        log({'iter': iter_num, 'loss': lossf, 'lr': lr, 'ms_per_iter': dt * 1000, 'tok_per_s': tokens_per_iter / dt,
             'mfu': mfu, 'elapsed_s': round(time.time() - t_start, 2)})
print(f"done: {iter_num} iterations in {time.time() - t_start:.1f} s, best val loss {best_val_loss:.4f}")
