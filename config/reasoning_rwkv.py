# A small RWKV-7 trained from scratch on gsm_synth (generated GSM8K-style problems) on a laptop CPU: the RWKV
# counterpart of reasoning_llama.py, with O(1)-per-token generation.
# python prepare.py --tokenizer=sp:512 && python train.py config/reasoning_rwkv.py   (measured with sp:512)
# python bench.py --task=gsm_synth --out_dir=out-reasoning-rwkv --max_new_tokens=480
# Measured: 86.2% of 500 held-out problems after 1000 iterations, on sp:512 packed rows with AdamW (the Llama
# quickstart, config/reasoning_llama.py: 92.0% after 1950 iterations, sp:1024, grouped by length, Muon on the MLP).
out_dir = 'out-reasoning-rwkv'
data_dir = 'data/gsm_synth_sp512'
model_type = 'rwkv7'
eval_interval = 250
eval_iters = 10
log_interval = 50
always_save_checkpoint = True

batch_size = 6
block_size = 512
n_layer = 4
n_embd = 192
head_size = 32            # 6 WKV heads
dropout = 0.0

learning_rate = 3e-3      # att.w0 trains at twice this, as the official trainer does
max_iters = 1000          # ~0.75 s/iter on 2 quiet cores (60 iterations), so ~13 min
lr_decay_iters = 1000
min_lr = 3e-4
warmup_iters = 100
weight_decay = 0.1
beta2 = 0.99
device = 'cpu'
