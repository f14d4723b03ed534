# RL with verifiable rewards (rl.py, GRPO) on gsm_synth, from the README main job's SFT run:
# python prepare.py && python train.py config/reasoning_llama.py && python rl.py config/rl_gsm_synth.py
# python bench.py --task=gsm_synth --out_dir=out-rl-gsm-synth --max_new_tokens=1024   (the generalization table)
init_from = 'out-reasoning-llama'
out_dir = 'out-rl-gsm-synth'
prompts_per_step = 8
group_size = 8
max_new_tokens = 480      # replies run to ~440 tokens; a Llama's also end at its context of 512
eval_interval = 10
eval_problems = 200
max_iters = 300
max_minutes = 30.0
learning_rate = 1e-4
device = 'cpu'
