# A small RWKV-7 trained from scratch on gsm_synth (generated GSM8K-style problems) on a laptop CPU: the RWKV
# counterpart of reasoning_llama.py, on the same data, with O(1)-per-token generation.
# python prepare.py && python train.py config/reasoning_rwkv.py
# python bench.py --task=gsm_synth --out_dir=out-reasoning-rwkv --max_new_tokens=1024
out_dir = 'out-reasoning-rwkv'
data_dir = 'data/gsm_synth_sp1024'
model_type = 'rwkv7'
eval_interval = 275       # 4 evals and checkpoints for the accuracy curve
eval_iters = 10
log_interval = 50
always_save_checkpoint = True
keep_last = 4             # ckpt_000275.pt ... ckpt_001100.pt: bench.py --ckpt=... gives the accuracy curve

batch_size = 6
block_size = 512
group_by_length = True    # rows of one example, batches of one length band, as reasoning_llama.py
n_layer = 4
n_embd = 192
head_size = 32            # 6 WKV heads
dropout = 0.0

optim = 'muon'            # Muon on the channel-mix matrices (ffn.key, ffn.value), AdamW on the rest
muon_targets = '*.ffn.*'
learning_rate = 3e-3      # att.w0 trains at twice this, as the official trainer does
max_iters = 1100          # 792 s on 2 Zen 4 cores, evals included: 95.0% of the 500 held-out problems (seeds 1-3:
                          # 93.8%, 94.4%, 95.8%; docs/results.md)
lr_decay_iters = 1100
min_lr = 3e-4
warmup_iters = 100
weight_decay = 0.1
beta2 = 0.99
device = 'cpu'
