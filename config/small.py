# The 'small' Llama preset (model_llama.PRESETS) on TinyStories with the GPT-2 tokenizer.
# python prepare.py --dataset=tinystories --tokenizer=gpt2 && python train.py config/small.py
# Use another tokenizer with e.g. --data_dir=data/tinystories_sp4096 (prepared with --tokenizer=sp:4096).
out_dir = 'out-small'
data_dir = 'data/tinystories_gpt2'
preset = 'small'
block_size = 512
batch_size = 32
gradient_accumulation_steps = 8
eval_interval = 500
eval_iters = 50
log_interval = 10

learning_rate = 6e-4
max_iters = 20000
lr_decay_iters = 20000
min_lr = 6e-5
warmup_iters = 200
weight_decay = 0.1
beta2 = 0.95
