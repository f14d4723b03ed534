# A baby Llama on Tiny Shakespeare, character (byte) level: nanoGPT's CPU "baby GPT" shape and budget.
# python prepare.py --dataset=shakespeare --tokenizer=byte && python train.py config/shakespeare_char.py
out_dir = 'out-shakespeare-char'
data_dir = 'data/shakespeare_byte'
eval_interval = 500
eval_iters = 20
log_interval = 100
always_save_checkpoint = False

batch_size = 12
block_size = 64
n_layer = 4
n_head = 4
n_kv_head = 2  # grouped-query attention, as TinyLlama
n_embd = 128
dropout = 0.0

learning_rate = 1e-3  # small models can take a larger learning rate
max_iters = 2000
lr_decay_iters = 2000
min_lr = 1e-4
beta2 = 0.99  # a little larger because there are few tokens per iteration
warmup_iters = 100
device = 'cpu'
compile = False
