"""
Train a model on prepared token shards (see prepare.py). One loop, nanoGPT order:

    python train.py config/shakespeare_char.py
    python train.py config/shakespeare_char.py --max_iters=4000 --init_from=resume
    python train.py config/shakespeare_char.py --init_from=out-shakespeare-char --out_dir=out-lora --lora_r=8
    torchrun --standalone --nproc_per_node=4 train.py config/micro.py      # DDP: 4 GPUs (or 4 CPU processes, gloo)
    torchrun --standalone --nproc_per_node=8 train.py config/small.py --fsdp   # FSDP2: weights sharded over 8 GPUs

Config: the globals below, then config files and --key=value (configurator.py); the effective config goes into
out_dir/config.json and every checkpoint. out_dir/ckpt.pt resumes exactly, also after a SIGKILL (written atomically at
evals, at the end and on Ctrl-C / SIGTERM); best.pt holds the best val loss's model; log.jsonl every log line. A new
run never replaces another run's checkpoint in out_dir unless told to (--overwrite=True). Under torchrun every process
trains on its share of the same global batch, so a run sees the data one process would. A non-finite loss skips the
step (max_bad_steps in a row stop the run, or nan_rollback reloads ckpt.pt). The other owners: checkpoint.py (the
files), data.py (batches), optim.py, parallel.py (DDP/FSDP2), lora.py, qlora.py; docs/guide.md.
"""
import json
import math
import os
import random
import sys
import time
from contextlib import nullcontext

import numpy as np
import torch

import parallel
from checkpoint import (CheckpointError, drop_run_dir, make_out_dir, read_train_state, rng_state, save_run_file,
                        set_rng_state, start_model)
from configurator import ConfigError, check_train_config, configure, pick_device, pick_dtype
from data import Batches, perplexity
from lora import load_lora_state_dict, lora_state_dict, merged_state_dict, save_adapter
from optim import make_optimizer
from shards import DataError, load_meta
from tokenizer import get_tokenizer


# -----------------------------------------------------------------------------
# I/O
out_dir = 'out'             # ckpt.pt (latest, to resume), best.pt (best val loss), config.json, log.jsonl
overwrite = False           # a new run into an out_dir that holds another run's checkpoint: delete it (else an error)
eval_interval = 250         # evaluate (the same eval_iters batches each time) and checkpoint every N iterations
log_interval = 10           # a log line every N iterations: loss, lr, ms/iter, tokens/s, MFU (GPU), ETA
eval_iters = 20             # batches per split in each loss estimate
eval_only = False           # evaluate once and exit
always_save_checkpoint = True  # write ckpt.pt at every eval (else only when val improves, and at the end)
keep_last = 0               # also keep the k newest as ckpt_<iter>.pt (hard links); to go back, copy one over ckpt.pt
max_bad_steps = 10          # stop (exit 1) after this many skipped steps in a row (a non-finite loss or gradient)
nan_rollback = 0            # instead of stopping, up to N times: reload ckpt.pt (all state) and scale the learning
                            # rate by nan_lr_factor (evals amid skipped steps then leave ckpt.pt alone); 0 = off
nan_lr_factor = 0.5         # the factor is kept in later checkpoints, so a resume keeps it
init_from = 'scratch'       # 'scratch' | 'resume' (out_dir/ckpt.pt, exactly where it stopped) | 'rwkv:<RWKV-7 .pth>' |
                            # 'hf:<folder or hub id>' | 'llama2c:<file.bin>' (data prepared with the model's tokenizer)
                            # | another run's out_dir (its weights, a fresh optimizer: pretrain, then fine-tune)
# LoRA / QLoRA fine-tuning (lora.py, qlora.py): the base model (init_from) frozen, only the adapters train
lora_r = 0                  # adapter rank; 0 = off (every weight trains); the frozen base is what init_from names
lora_alpha = 16.0           # the update is scaled by lora_alpha / lora_r
lora_dropout = 0.0          # dropout on the adapters' input
lora_targets = ''           # comma-separated module-name suffixes ('q_proj,v_proj') or wildcards ('layers.1.*');
                            # '' = every attention and MLP projection of the model type (lora.DEFAULT_TARGETS)
rslora = False              # scale by lora_alpha / sqrt(lora_r) (rank-stabilized LoRA)
qlora = False               # the frozen base linears in 4-bit NF4 with double quantization (bitsandbytes, ~0.52
                            # bytes/weight; embeddings, norms, head in the compute dtype); needs lora_r > 0
merge_lora_on_save = True   # LoRA runs: best.pt holds the merged model (QLoRA: the dequantized base, fp32); the
                            # best adapters alone go to out_dir/adapter.safetensors in any case
wandb_log = False           # also log to Weights & Biases (pip install wandb)
wandb_project = 'tiny-reasoner'
wandb_run_name = 'run'
# data
data_dir = 'data/shakespeare_byte'  # a folder prepare.py wrote
gradient_accumulation_steps = 1  # micro-batches per step, all processes together
batch_size = 12             # rows per micro-batch (a step: gradient_accumulation_steps x batch_size x block_size)
curriculum = False          # chat data: the first epoch from easy to hard examples (gsm_synth steps, else length)
group_by_length = False     # chat data: a row one example, a batch ~batch_size * block_size tokens of one length
                            # band (drawn in proportion to its tokens: every example as often); else examples packed
block_size = 256            # tokens per row (the model's context)
# model
model_type = 'llama'        # 'llama' (model_llama.py) | 'rwkv7' (model_rwkv7.py)
preset = ''                 # llama: '' or one of model_llama.PRESETS (micro, tiny, small): sets the shape keys below
n_layer = 6
n_head = 6
n_kv_head = 2
n_embd = 384
intermediate_size = 0       # llama: SwiGLU width, 0 = 8/3 x n_embd rounded up to 32
rope_theta = 10000.0
norm_eps = 1e-5
tie_embeddings = True
qkv_bias = False
dropout = 0.0
vocab_size = 0              # 0 = the data's vocabulary rounded up to a multiple of 64
head_size = 64              # rwkv7: N, the WKV head size (n_embd / head_size heads; n_head is for llama)
dim_ffn = 0                 # rwkv7: channel-mix width, 0 = 4 * n_embd
wkv_impl = 'chunked'        # rwkv7: 'chunked' (matmuls per chunk) | 'naive' (per-step loop, the reference)
chunk_len = 32              # rwkv7: chunk length of the chunked WKV
# optimizer
optim = 'adamw'             # 'adamw' | 'adamw8bit' | 'paged_adamw8bit' (bitsandbytes: ~2 bytes of state per weight) |
                            # 'muon' (Muon on the blocks' matrices, AdamW on the rest, one learning_rate; not with
                            # LoRA or FSDP: optim.py)
muon_targets = ''           # optim='muon': fnmatch patterns of the Linear layers Muon trains ('*.mlp.*': Llama's MLP,
                            # '*.ffn.*': RWKV's channel mixing; the rest go to AdamW); '' = all
learning_rate = 6e-4        # peak, after linear warmup; decays to min_lr at lr_decay_iters
max_iters = 5000
weight_decay = 0.1          # AdamW's, on matrices only (fused AdamW on CUDA and CPU)
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
dtype = 'auto'              # 'auto' (bf16 on GPUs that have it, else fp16 with a GradScaler; fp32 on cpu/mps) |
                            # float32 | bfloat16 | float16
compile = False             # torch.compile the model (for GPUs: on a 2-core CPU it cost more than it saved)
grad_checkpoint = False     # recompute activations in backward (less memory, ~30% slower)
fsdp = False                # under torchrun: shard weights, gradients and optimizer state (FSDP2) instead of DDP
threads = 0                 # torch's CPU threads per process; 0 = PyTorch's default (one per core; give each of two
                            # jobs on the same cores its own, or they spin-wait on each other)
seed = 1337
# -----------------------------------------------------------------------------


sys.stdout.reconfigure(line_buffering=True)  # log lines show up at once, also when piped to a file
if os.environ.get('RANK', '0') != '0':
    sys.stdout = open(os.devnull, 'w')  # under torchrun one copy of the log (rank 0's); errors come from every rank


def fail(msg):
    """Print a user error (no traceback) and exit with status 1; under DDP from every rank that meets it."""
    rank = os.environ.get('RANK', '0')
    print(f"train.py{f' (rank {rank})' if rank != '0' else ''}: error: {msg}".replace('\n', '\\n'), file=sys.stderr)
    leave(1)


def leave(code):
    """Exit with status code (a failure: without the out_dir this run made, if it wrote no checkpoint)."""
    if code:
        drop_new_out_dir()
    if wandb_log and 'wandb' in globals() and torch.distributed.is_initialized():  # else its atexit finishes it
        wandb.finish(exit_code=code)
    parallel.leave(code)  # under torchrun at once, after the process group is gone


def drop_new_out_dir():
    """A run that fails before its first checkpoint leaves no out_dir it created (rank 0 made it)."""
    if globals().get('made_out_dir'):
        drop_run_dir(out_dir)


def on_uncaught(kind, e, tb):
    """A run that dies before its first checkpoint leaves no out_dir it created. Out of GPU memory is a config
    problem, not a bug: say which keys lower memory instead of a traceback."""
    drop_new_out_dir()
    if not issubclass(kind, torch.OutOfMemoryError):
        return sys.__excepthook__(kind, e, tb)
    print(f"train.py: error: out of memory on {device} ({str(e).splitlines()[0]}). Lower the memory a step needs "
          f"with: --batch_size (now {batch_size}; halve it and double --gradient_accumulation_steps, now "
          f"{gradient_accumulation_steps}, to keep the tokens per step), --block_size (now {block_size}), "
          f"--grad_checkpoint=True (now {grad_checkpoint}), --dtype=bfloat16 (now {dtype}), or fine-tune adapters "
          f"only: --lora_r=16 (now {lora_r}) with --qlora=True (now {qlora}) and --optim=adamw8bit", file=sys.stderr)


sys.excepthook = on_uncaught
try:
    config = configure(globals())  # its first line: the threads, and the keys that differ from the defaults
    ddp, ddp_rank, ddp_local_rank, ddp_world_size = parallel.ranks()  # torchrun: a process per GPU or CPU share
    master_process = ddp_rank == 0
    device = pick_device(device)
    device = parallel.local_device(device, ddp_local_rank) if ddp else device  # one GPU per process
    device_type = device.split(':')[0]
    dtype = pick_dtype(dtype, device_type)
    check_train_config(dict(config, device=device, dtype=dtype), ddp, ddp_world_size)  # wandb_log: imports wandb
    meta = load_meta(data_dir)
    tok = get_tokenizer(meta['tokenizer'], data_dir)
except (ConfigError, DataError, FileNotFoundError, ValueError) as e:  # ValueError: an unusable tokenizer spec
    fail(str(e))

if ddp:
    parallel.init(device)
micro_steps = gradient_accumulation_steps // ddp_world_size  # this process's share of each step's micro-batches
torch.manual_seed(seed)  # the same on every rank: they build the same model
random.seed(seed)
np.random.seed(seed)
if device_type == 'cuda':
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
ptdtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}[dtype]
ctx = nullcontext() if dtype == 'float32' else torch.autocast(device_type=device_type, dtype=ptdtype)
tokens_per_iter = gradient_accumulation_steps * batch_size * block_size
print(f"tokens per iteration: {tokens_per_iter:,} ({gradient_accumulation_steps} x {batch_size} x {block_size}), "
      f"device {device}, dtype {dtype}" + (f", {ddp_world_size} processes" if ddp else ''))

# ---------------------------------------------------------------------------- model
try:  # resume, another run, a pretrained model or a new one (checkpoint.py), on the CPU; LoRA adapters on it
    model, model_args, checkpoint, lora_info = start_model(config, tok, meta['vocab_size'])  # lora_info: LoRA runs
except CheckpointError as e:
    fail(str(e))
model.grad_checkpoint = grad_checkpoint
if lora_info is not None and lora_info['qlora']:
    from qlora import quantize_model, quantized_bytes
    try:
        n_q = quantize_model(model, ptdtype, device)
    except (ImportError, RuntimeError) as e:
        fail(str(e))
    nbytes, nweights = quantized_bytes(model)
    print(f"QLoRA: {n_q} linear layers in NF4, {nbytes / 2**20:.2f} MiB for {nweights:,} weights "
          f"({nbytes / nweights:.3f} bytes/weight); embeddings, norms and head in {dtype}"
          + ("; best.pt: the dequantized base with the adapters merged, fp32" if merge_lora_on_save else ''))
elif fsdp:  # each block a unit of its own, then the rest (parallel.py); moved to the device, this rank's shard
    parallel.shard(model, model.layers if model_type == 'llama' else model.blocks, device_type, ddp_world_size)
else:
    model.to(device)

try:  # token windows, or chat examples with loss masks (data.py)
    data = Batches(data_dir, meta, model_args['vocab_size'], block_size, batch_size, curriculum, group_by_length)
except DataError as e:
    fail(str(e))
sampler = torch.Generator().manual_seed(seed)  # the data order; its state is saved, so resume is exact

scaler = torch.amp.GradScaler(device_type, enabled=(dtype == 'float16'))
try:  # AdamW, 8-bit AdamW or Muon over the model's parameter groups (optim.py)
    optimizer = make_optimizer(model, optim, learning_rate, (beta1, beta2), weight_decay, device_type, muon_targets)
except (ValueError, ImportError, RuntimeError) as e:
    fail(str(e))
raw_model = model
iter_num, best_val_loss, loss_acc, n_acc, lr_factor, rollbacks = 0, float('inf'), 0.0, 0, 1.0, 0
if ddp_rank > 0:
    torch.manual_seed(seed + ddp_rank)  # its own dropout masks; rank 0 goes on with the stream of a single process


def restore(ck, weights=False):
    """Put the run back where checkpoint ck was written: optimizer, scaler, iteration, best val loss, log window, LR
    factor and every RNG state; with weights also the model's weights."""
    global iter_num, best_val_loss, loss_acc, n_acc, lr_factor
    if weights and lora_info is not None:  # a NaN rollback; at start-up they are loaded before LoRA and sharding
        load_lora_state_dict(raw_model, ck['model'])
    elif weights and not fsdp:
        raw_model.load_state_dict(ck['model'])
    if fsdp:  # the full tensors into the shards
        parallel.load_full_state(raw_model, optimizer, ck, weights)
    else:
        optimizer.load_state_dict(ck['optimizer'])
    if scaler.is_enabled() and ck['scaler']:  # an fp32/bf16 run has no scaler state
        scaler.load_state_dict(ck['scaler'])
    iter_num, best_val_loss, lr_factor = ck['iter_num'], ck['best_val_loss'], ck.get('lr_factor', 1.0)
    set_rng_state(ck['rng'], sampler, device, ddp_rank, ddp_world_size)  # says so if the world size changed
    loss_acc, n_acc = ck['log_acc']  # a log window cut by the stop goes on after it


if checkpoint is not None:
    restore(checkpoint)
    print(f"resuming from {os.path.join(out_dir, 'ckpt.pt')} at iteration {iter_num} (best val loss {best_val_loss:.4f})"
          + (f", learning rate x{lr_factor:g} after NaN rollbacks" if lr_factor != 1 else ''))
checkpoint = None  # free memory
on_disk = {'ckpt.pt': iter_num} if init_from == 'resume' else {}  # the iteration of each file this run has written
if compile:
    print("compiling the model... (takes a minute)")
    model = torch.compile(model)
eval_model = model  # evals run outside DDP: each rank a different number of batches (FSDP: as many forwards)
if ddp and not fsdp:  # only trainable parameters (all of them, or the LoRA adapters) join the gradient all-reduce
    model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[ddp_local_rank] if device_type == 'cuda'
                                                      else None)


@torch.no_grad()
def estimate_loss():
    """Mean loss over the target tokens of eval_iters batches of each split, always the same batches (a fixed seed),
    so evals compare."""
    out = {}
    eval_model.eval()
    for split in ('train', 'val'):
        gen = torch.Generator().manual_seed(seed + 1)
        sums = torch.zeros(2, eval_iters, device=device)  # loss x tokens and tokens of each batch
        for k in range(eval_iters):
            picks = data.draw(split, gen, iter_num, tokens_per_iter)
            mine = k % ddp_world_size == ddp_rank  # DDP: each rank its share of the batches, summed below
            # FSDP's forwards gather the weights: every rank runs as many, those without a batch a spare one
            if mine or fsdp and k == eval_iters - 1 and ddp_rank > k % ddp_world_size:
                X, Y = data.get(split, picks, device)
                n = int((Y != -1).sum()) if mine else 0
                if n or fsdp:  # chat data: rows may hold no supervised token
                    with ctx:
                        loss = eval_model(X, Y)[1]
                    if n:
                        sums[0, k], sums[1, k] = loss * n, n
        if ddp:
            torch.distributed.all_reduce(sums)
        out[split] = (sums[0].sum() / sums[1].sum()).item()  # the mean over all target tokens
    eval_model.train()
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
    """Write out_dir/name (checkpoint.save_run_file: atomic) on rank 0; every rank calls it. with_state adds what
    resume needs (a LoRA run: its adapters and base reference), else the model alone (a LoRA run: merged). A failed
    write (a full disk) stops the run, the previous file kept as it was."""
    rng = rng_state(sampler, device, ddp) if with_state else None  # every rank's RNG (their dropout masks differ)
    error, (weights, opt_state) = None, (parallel.full_state(raw_model, optimizer if with_state else None) if fsdp
                                         else (None, None))
    if master_process and not fsdp:
        weights, opt_state = raw_model.state_dict(), optimizer.state_dict() if with_state else None
    if master_process:
        if lora_info is not None:
            weights = lora_state_dict(raw_model) if with_state else merged_state_dict(raw_model)
        ckpt = {'model': weights, 'model_type': model_type, 'model_args': model_args, 'config': config,
                'tokenizer': tok.state(), 'iter_num': iter_num, 'best_val_loss': best_val_loss}
        if lora_info is not None:
            ckpt['lora' if with_state else 'merged_lora'] = lora_info
        if with_state:
            ckpt.update(optimizer=opt_state, scaler=scaler.state_dict(), rng=rng, log_acc=(loss_acc, n_acc),
                        lr_factor=lr_factor)
        try:
            save_run_file(ckpt, out_dir, name, config, keep_last if with_state else 0, on_disk.get(name))
        except CheckpointError as e:
            error = str(e)
    if ddp:
        box = [error]
        torch.distributed.broadcast_object_list(box, src=0)
        error = box[0] if master_process or box[0] is None else "rank 0 could not save a checkpoint: stopping"
    if error:
        fail(error)
    on_disk[name] = iter_num


def log(record):  # rank 0: a line of out_dir/log.jsonl (and wandb)
    if master_process:
        with open(os.path.join(out_dir, 'log.jsonl'), 'a') as f:
            f.write(json.dumps(record) + '\n')
        if wandb_log:
            wandb.log(record)


if eval_only:
    print(json.dumps(estimate_loss()))
    if master_process and not fsdp:  # val loss, perplexity and bits per byte (data.py; as bench.py gives them)
        try:
            with ctx:
                perplexity(raw_model.eval(), tok, data_dir, f"the model of init_from='{init_from}'",
                           batch_size=batch_size, device=device)
        except ConfigError as e:
            fail(str(e))
    if ddp:
        torch.distributed.barrier()
    leave(0)
if master_process:
    try:
        made_out_dir = make_out_dir(out_dir, init_from != 'resume')  # removed if the run dies before a checkpoint
    except CheckpointError as e:
        fail(str(e))
    if wandb_log:
        import wandb
        wandb.init(project=wandb_project, name=wandb_run_name, config=config)

if device_type == 'cpu' and not ddp and iter_num < max_iters:  # a GPU-sized run on a CPU: say so before it starts
    with torch.random.fork_rng(devices=[]):  # one micro-batch of random tokens, timed; the run's RNG is untouched
        x = torch.randint(0, model_args['vocab_size'], (batch_size, block_size))
        t_micro = time.time()
        with ctx:
            raw_model(x, x)[1].backward()
        t_micro = time.time() - t_micro
    optimizer.zero_grad(set_to_none=True)
    hours = t_micro * (max_iters - iter_num) * (gradient_accumulation_steps + 2 * eval_iters / 3 / eval_interval) / 3600
    if hours > 1:
        print(f"on this CPU the run takes ~{hours:.1f} hours ({t_micro:.1f} s a micro-batch of {batch_size} x "
              f"{block_size}): a GPU-sized run; config/reasoning_{'rwkv' if model_type == 'rwkv7' else 'llama'}.py "
              f"is sized for a CPU (~15 minutes)")

# Ctrl-C or SIGTERM (torchrun passes them on): finish the current iteration, save, exit. A second one stops at once.
stop_signal = parallel.StopFlag('saving a checkpoint at the end of this iteration')  # this process got one
stop_requested = False  # some process got one (all ranks agree)

# ---------------------------------------------------------------------------- the loop
start_iter, t_start, t0, last_log, bad_steps, truncated_all = iter_num, time.time(), time.time(), iter_num, 0, 0
while True:
    lr = get_lr(iter_num) * lr_factor
    for group in optimizer.param_groups:
        group['lr'] = lr * group.get('lr_scale', 1.0)
    if (iter_num % eval_interval == 0 or iter_num == max_iters) and iter_num > start_iter or iter_num == 0:
        losses = estimate_loss()
        print(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
        log({'iter': iter_num, 'train_loss': losses['train'], 'val_loss': losses['val'], 'lr': lr,
             'elapsed_s': round(time.time() - t_start, 2)})
        if losses['val'] < best_val_loss:
            best_val_loss = losses['val']
            if iter_num > 0 and lora_info is not None and master_process:
                save_adapter(os.path.join(out_dir, 'adapter.safetensors'), raw_model, meta=dict(
                    model_type=model_type, model_args=model_args, base=lora_info['base'], iter_num=iter_num,
                    val_loss=best_val_loss, tokenizer=tok.spec))
            if iter_num > 0 and (lora_info is None or merge_lora_on_save):
                save('best.pt', with_state=False)
        keep = bad_steps and rollbacks < nan_rollback and iter_num < max_iters  # the state to roll back to
        if iter_num > 0 and not keep and (always_save_checkpoint or best_val_loss == losses['val']
                                          or iter_num == max_iters):
            save('ckpt.pt', with_state=True)
            print(f"saved {out_dir}/ckpt.pt")
    if iter_num >= max_iters or stop_requested:
        if stop_requested and iter_num > start_iter:
            if on_disk.get('ckpt.pt') != iter_num:  # not saved just now by the eval
                save('ckpt.pt', with_state=True)
            print(f"saved {out_dir}/ckpt.pt at iteration {iter_num}; resume with --init_from=resume")
        break

    # one optimizer step over gradient_accumulation_steps micro-batches, drawn alike on every rank; each rank trains
    # on its own consecutive share. A micro-batch's loss is weighted by its share of the target tokens of the whole
    # window (all ranks), so the step's loss is the mean over all tokens of the window, on any number of processes
    picks = [data.draw('train', sampler, iter_num, tokens_per_iter) for _ in range(gradient_accumulation_steps)]
    batches = [data.get('train', p, device) for p in picks[ddp_rank * micro_steps:(ddp_rank + 1) * micro_steps]]
    counts = [int((Y != -1).sum()) for _, Y in batches]
    total = sum(counts)
    if ddp:  # chat data: the supervised tokens differ from rank to rank
        total_t = torch.tensor(total, device=device)
        torch.distributed.all_reduce(total_t)
        total = int(total_t.item())
    step_loss = torch.zeros((), device=device)
    for k, ((X, Y), n) in enumerate(zip(batches, counts)):
        if fsdp:  # reduce the gradients once, in the backward pass of the last micro-batch
            raw_model.set_requires_gradient_sync(k == micro_steps - 1)
        elif ddp:
            model.require_backward_grad_sync = k == micro_steps - 1
        with ctx:
            logits, loss = model(X, Y)  # chat data: with no supervised token in the micro-batch the mean is NaN
            loss = loss * (n / total) if n else logits.sum() * 0.0  # and it adds nothing (the backward still runs)
        scaler.scale(loss * ddp_world_size).backward()  # DDP, FSDP average the ranks' gradients; we want a sum
        step_loss += loss.detach()
    stats = torch.stack([step_loss, torch.tensor(float(stop_signal.requested), device=device),
                         torch.tensor(float(data.truncated), device=device)])
    if ddp:  # the step's loss over all ranks; whether any rank was asked to stop
        torch.distributed.all_reduce(stats)
    step_lossf, stop_f, truncated_f = stats.tolist()  # one device-to-host copy per step
    stop_requested, truncated_all = stop_f > 0, int(truncated_f)
    ok = math.isfinite(step_lossf)
    if ok and grad_clip != 0.0:
        scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        ok = scaler.is_enabled() or math.isfinite(norm.item())  # fp16: the scaler skips inf gradients itself
    if ok:
        scaler.step(optimizer)
        scaler.update()
        loss_acc, n_acc, bad_steps = loss_acc + step_lossf, n_acc + 1, 0
    else:  # skip the step: no update, the gradients are dropped
        bad_steps += 1
        print(f"iter {iter_num}: non-finite loss or gradient (loss {step_lossf}), step skipped ({bad_steps} in a row)")
        log({'iter': iter_num, 'skipped': 'non-finite loss or gradient', 'bad_steps_in_a_row': bad_steps})
        if bad_steps >= max_bad_steps and rollbacks < nan_rollback and 'ckpt.pt' in on_disk:
            rollbacks, factor, bad_at = rollbacks + 1, lr_factor * nan_lr_factor, iter_num
            try:
                restore(read_train_state(os.path.join(out_dir, 'ckpt.pt')), weights=True)  # also the data position
            except CheckpointError as e:
                fail(str(e))
            lr_factor, bad_steps, t0, last_log = factor, 0, time.time(), iter_num
            print(f"iter {bad_at}: {max_bad_steps} non-finite steps in a row: rolled back to {out_dir}/ckpt.pt "
                  f"(iteration {iter_num}), learning rate now x{lr_factor:g} (rollback {rollbacks} of {nan_rollback})")
            log({'iter': bad_at, 'rollback_to': iter_num, 'lr_factor': lr_factor, 'rollback': rollbacks})
            optimizer.zero_grad(set_to_none=True)
            continue
        if bad_steps >= max_bad_steps:
            fail(f"{bad_steps} steps in a row had a non-finite loss or gradient (iterations {iter_num - bad_steps + 1}"
                 f" to {iter_num}, all skipped): the run diverged. "
                 + (f"{out_dir}/ckpt.pt (iteration {on_disk['ckpt.pt']}) is kept; " if 'ckpt.pt' in on_disk else '')
                 + f"resume from a checkpoint with a lower --learning_rate (now {learning_rate}), a longer "
                 f"--warmup_iters (now {warmup_iters}) or --grad_clip=1.0 (now {grad_clip})"
                 + (", or --dtype=bfloat16 instead of float16" if dtype == 'float16' else '')
                 + f"; --max_bad_steps (now {max_bad_steps}) sets how many in a row stop the run"
                 + (f"; rolled back {rollbacks} of --nan_rollback={nan_rollback} times" if nan_rollback else ''))
    optimizer.zero_grad(set_to_none=True)
    iter_num += 1

    if iter_num % log_interval == 0 and n_acc:
        t1 = time.time()
        lossf, dt = loss_acc / n_acc, (t1 - t0) / (iter_num - last_log)
        t0, loss_acc, n_acc, last_log, eta_min = t1, 0.0, 0, iter_num, (max_iters - iter_num) * dt / 60
        mfu = raw_model.estimate_mfu(tokens_per_iter // ddp_world_size, dt, device)  # per GPU
        print(f"iter {iter_num}: loss {lossf:.4f}, lr {lr:.2e}, {dt * 1000:.1f} ms/iter, "
              f"{tokens_per_iter / dt:,.0f} tok/s" + (f", mfu {mfu * 100:.1f}%" if mfu is not None else '')
              + f", eta {eta_min:.1f} min" + (f", {truncated_all} examples truncated" if truncated_all else ''))
        log({'iter': iter_num, 'loss': lossf, 'lr': lr, 'ms_per_iter': dt * 1000, 'tok_per_s': tokens_per_iter / dt,
             'mfu': mfu, 'elapsed_s': round(time.time() - t_start, 2)})
print(f"done: {iter_num} iterations in {time.time() - t_start:.1f} s, best val loss {best_val_loss:.4f}")
if ddp:
    torch.distributed.barrier()  # every rank done with the last collective before any leaves (gloo aborts otherwise)
    leave(0)
