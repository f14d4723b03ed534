# RWKV-7 "Goose", 12 layers x 512 wide, head size 64, on gsm_synth (the embedded reasoning set; loss on the replies only).
# python prepare.py && python train.py config/tiny_rwkv.py
out_dir = 'out-tiny-rwkv'
data_dir = 'data/gsm_synth_sp1024'
# or pretrain on text: --data_dir=data/tinystories_gpt2 (python prepare.py --dataset=tinystories --tokenizer=gpt2)
model_type = 'rwkv7'
n_layer = 12
n_embd = 512
head_size = 64
block_size = 512
batch_size = 16
gradient_accumulation_steps = 4
eval_interval = 500
eval_iters = 50
log_interval = 10

learning_rate = 6e-4  # att.w0 trains at twice this, as the official trainer does
max_iters = 10000
lr_decay_iters = 10000
min_lr = 6e-5
warmup_iters = 200
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.99
