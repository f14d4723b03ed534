# QLoRA fine-tuning of a pretrained Hugging Face model on GSM8K's chain-of-thought, the Tiny-Reason recipe: r=16,
# alpha=32, dropout 0 on the 7 projections, lr 2e-4, batch 2 x 4 accumulation, warmup 50, 250 steps, weight decay
# 0.01, linear decay, 2000 GSM8K samples (10% of them val), 8-bit AdamW, a 4-bit NF4 base. Any Hugging Face Llama /
# Mistral / Qwen2 folder or hub id works: set --init_from=hf:<it> and prepare the data with its tokenizer.
# python prepare.py --dataset=gsm8k --tokenizer=hf:Qwen/Qwen2.5-1.5B-Instruct --max_examples=2000
#                   (offline: --source=folder with train.jsonl and test.jsonl)
# python train.py config/qlora_gsm8k.py
# python bench.py --task=gsm8k --out_dir=out-qlora-gsm8k --data=<folder>/test.jsonl   (or openai/gsm8k online)
init_from = 'hf:Qwen/Qwen2.5-1.5B-Instruct'
data_dir = 'data/gsm8k_hfQwen_Qwen2.5-1.5B-Instruct'
out_dir = 'out-qlora-gsm8k'
model_type = 'llama'
block_size = 512          # GSM8K conversations are 150-400 Qwen2.5 tokens; longer ones are truncated (counted)
batch_size = 2
gradient_accumulation_steps = 4
grad_checkpoint = True

lora_r = 16
lora_alpha = 32.0
lora_dropout = 0.0
lora_targets = ''         # '' = q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj
qlora = True
optim = 'adamw8bit'

learning_rate = 2e-4
max_iters = 250
lr_decay_iters = 250
lr_schedule = 'linear'
min_lr = 0.0
warmup_iters = 50
weight_decay = 0.01
eval_interval = 50
eval_iters = 20
log_interval = 5
