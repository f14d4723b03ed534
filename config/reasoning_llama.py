# A small Llama trained from scratch on gsm_synth (generated GSM8K-style problems) on a laptop CPU.
# python prepare.py --dataset=gsm_synth --tokenizer=sp:512 && python train.py config/reasoning_llama.py
# python bench.py --task=accuracy --out_dir=out-reasoning-llama --data=data/gsm_synth_sp512/test.jsonl
out_dir = 'out-reasoning-llama'
data_dir = 'data/gsm_synth_sp512'
eval_interval = 250
eval_iters = 10
log_interval = 50
always_save_checkpoint = True

batch_size = 12
block_size = 384
n_layer = 4
n_head = 6
n_kv_head = 2
n_embd = 192
dropout = 0.0

learning_rate = 2e-3
max_iters = 1000
lr_decay_iters = 1000
min_lr = 2e-4
warmup_iters = 100
beta2 = 0.99
device = 'cpu'
