# The README's main job: a small Llama trained from scratch on gsm_synth (generated GSM8K-style problems whose
# reasoning walks through every sentence of the question and works each computation out digit by digit) in ~15
# minutes on 2 CPU cores.
# python prepare.py && python train.py config/reasoning_llama.py
# python bench.py --task=gsm_synth --out_dir=out-reasoning-llama --max_new_tokens=1024   (replies ~230 tokens on
# average; the generalization splits' run longer)
out_dir = 'out-reasoning-llama'
data_dir = 'data/gsm_synth_sp1024'
eval_interval = 390       # 6 evals (~4 s each) and checkpoints for the accuracy curve
eval_iters = 10
log_interval = 50
always_save_checkpoint = True
keep_last = 6             # ckpt_000390.pt ... ckpt_001950.pt: bench.py --ckpt=... gives the accuracy curve

batch_size = 6
block_size = 512          # 99.2% of the walk-format examples fit (sp:1024: 325 tokens on average); longer ones are
                          # truncated (and counted)
group_by_length = True    # rows of one example, batches of ~6 x 512 tokens of one length band: ~1.3x the examples/s
                          # of packing (no attention across examples, less padding); 1750 iterations: 88.8%, 93.4%
                          # (seeds 1337, 1; packing at 1600: 83.0%, 84.0%)
n_layer = 6               # deep and narrow learned the digit facts faster than 4 x 192 at the same cost
n_head = 2                # head size 64: 2 / 1 heads beat 4 / 2 (76.6% vs 71.0% held-out, 1800 iterations)
n_kv_head = 1
n_embd = 128
dropout = 0.0

optim = 'muon'            # Muon (optim.py) on the MLP matrices, AdamW on attention, embedding and norms (packed rows,
muon_targets = '*.mlp.*'  # 1650 iterations: 92.4%; Muon on every matrix 87.8%, AdamW alone 1750: 79.2%)
learning_rate = 3e-3      # one rate for both optimizers
max_iters = 1950          # ~345 ms/iter on 2 Zen 4 cores, evals included: 672 s, 94.0% in-distribution (gsm_synth v4,
                          # walk format; v3 data, earlier format, seeds 1-4: 89.4%, 92.8%, 90.4%, 93.4%)
lr_decay_iters = 1950
min_lr = 3e-4
warmup_iters = 100
beta2 = 0.99
device = 'cpu'
