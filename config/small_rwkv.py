# RWKV-7 "Goose", 18 layers x 768 wide, head size 64, on gsm_synth (the embedded reasoning set; loss on the replies only).
# python prepare.py && python train.py config/small_rwkv.py
out_dir = 'out-small-rwkv'
data_dir = 'data/gsm_synth_sp1024'
# or pretrain on text: --data_dir=data/tinystories_gpt2 (python prepare.py --dataset=tinystories --tokenizer=gpt2)
model_type = 'rwkv7'
n_layer = 18
n_embd = 768
head_size = 64
block_size = 512
batch_size = 16
gradient_accumulation_steps = 8
eval_interval = 500
eval_iters = 50
log_interval = 10

learning_rate = 4e-4  # att.w0 trains at twice this, as the official trainer does
max_iters = 10000
lr_decay_iters = 10000
min_lr = 4e-5
warmup_iters = 200
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.99
