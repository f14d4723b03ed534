# Stage 2 of two-stage training: supervised fine-tuning of a pretrained run on GSM8K's chain-of-thought solutions,
# in the reasoning format of chat.py (loss on the assistant's reply only, a fresh optimizer).
# python prepare.py --dataset=tinystories --tokenizer=gpt2 && python train.py config/micro.py        # stage 1
# python prepare.py --dataset=gsm8k --tokenizer=gpt2      # offline: --source=folder with train.jsonl, test.jsonl
# python train.py config/sft_gsm8k.py                                                                 # stage 2
# python bench.py --task=accuracy --out_dir=out-sft-gsm8k --data=data/gsm8k_gpt2/test.jsonl --limit=200
# The data must be tokenized with the pretrained run's tokenizer; the model's shape comes from its checkpoint.
init_from = 'out-micro'
out_dir = 'out-sft-gsm8k'
data_dir = 'data/gsm8k_gpt2'
block_size = 512          # GSM8K examples are 150-450 GPT-2 tokens in this format; longer ones are truncated
batch_size = 8
gradient_accumulation_steps = 4
eval_interval = 100
eval_iters = 20
log_interval = 10

learning_rate = 1e-4      # fine-tuning: ~10x below pretraining
max_iters = 1000          # ~4 epochs of GSM8K's 7,473 problems
lr_decay_iters = 1000
min_lr = 1e-5
warmup_iters = 50
weight_decay = 0.0
