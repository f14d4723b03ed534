"""
The one exporter: a run, a checkpoint or a pretrained model written in a format other tools read.

    python export.py out-run out-run-hf              # the run's best.pt (else ckpt.pt) as a Hugging Face folder
    python export.py out-run/ckpt_000390.pt out-hf   # one checkpoint
    python export.py llama2c:stories260K.bin out-hf  # a pretrained model (hf:<folder or hub id>, llama2c:<file.bin>)
    python export.py out-lora out-lora-hf --peft     # a LoRA run as its base + a PEFT adapter (out/base, out/adapter)
    python export.py out-reasoning-rwkv rwkv.pth     # an RWKV-7 run as an official .pth [--dtype=bfloat16]
    python export.py out-reasoning-llama r.gguf      # a Llama or an RWKV-7 run as GGUF for llama.cpp [--dtype=q8_0]

The format comes from the output's name:
- a folder: a Hugging Face model of a Llama run (export_hf: config.json, model.safetensors;
  tokenizer.hf_files: tokenizer.json and its config files, generation_config.json), which transformers'
  AutoModelForCausalLM and AutoTokenizer load with no other package. A LoRA run exports merged (its best.pt), or with
  --peft as the unmerged base plus the adapters in PEFT's layout (lora.save_peft). transformers has no RWKV-7.
- x.gguf: a Llama (a run, a checkpoint, hf:/llama2c:) or an RWKV-7 run as llama.cpp's convert_hf_to_gguf.py writes
  one (gguf_tensors; rwkv_gguf_tensors: its rwkv7 architecture), with its tokenizer and our chat template embedded,
  float32 unless --dtype says float16, bfloat16 or q8_0; written by the ggml project's `gguf` package, so nothing is
  compiled. An official rwkv: .pth carries the RWKV World vocabulary, which has no GGUF form here.
- x.pth: an RWKV-7 run (or an rwkv:<.pth>, to change its dtype) as BlinkDL's trainer saves it
  (RWKV7.official_state_dict; float32 unless --dtype says bfloat16 / float16, the releases' dtype is bfloat16), which
  the official `rwkv` pip package runs (RWKV_V7_ON=1, strategy 'cpu fp32'), beside x.tokenizer.json, the run's
  tokenizer for the package's PIPELINE (none for the RWKV World vocabulary: 'rwkv_vocab_v20230424' is built in).
"""

import copy
import json
import os
import sys

import torch

from checkpoint import atomic_save, find_checkpoint, load_model, read_checkpoint

DTYPES = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}


def read_plain(path, kind):
    """(model, checkpoint dict) of a train.py checkpoint file holding a full model of `kind` ('llama' | 'rwkv7' |
    None: either; a LoRA run's merged best.pt is one). Raises OSError (no file), ValueError (unreadable; another model
    type or a LoRA run's adapters, naming what to export instead; weights that do not fit its model_args)."""
    from checkpoint import model_class
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint {path}: give a train.py checkpoint, e.g. out-run/best.pt")
    ck = read_checkpoint(path)
    if 'lora' in ck:
        raise ValueError(f"{path} holds only LoRA adapters: export the run's merged best.pt"
                         + (" (or the base and a PEFT adapter: python export.py <run> <folder> --peft)"
                            if kind == 'llama' else ''))
    if kind not in (None, ck['model_type']):
        raise ValueError(f"{path} holds an RWKV-7: export it to a .pth or a .gguf file (transformers has no RWKV-7)"
                         if ck['model_type'] == 'rwkv7' else f"{path} holds a Llama: .pth is RWKV-7's format; export "
                         f"it to a folder (Hugging Face) or a .gguf file")
    Model, Config = model_class(ck['model_type'])
    try:
        model = Model(Config(**ck['model_args']))
        model.load_state_dict(ck['model'])
    except (TypeError, RuntimeError) as e:  # RuntimeError: missing or misshapen weights
        raise ValueError(f"{path} does not load into its model ({type(e).__name__}: {' '.join(str(e).split())[:200]}"
                         f"): export a checkpoint that train.py, sample.py or bench.py load") from None
    return model, ck


def export_hf(model, out_dir, tokenizer_files=None):
    """Write `model` as a Hugging Face folder that transformers' AutoModelForCausalLM.from_pretrained loads: config.json
    (LlamaForCausalLM, or Qwen2ForCausalLM when qkv_bias) and model.safetensors (the parameters' dtype; a tied head
    not stored, as Hugging Face does); tokenizer_files: {file name: bytes}. Returns out_dir. Raises ValueError, before
    writing anything, for a model with other parameters than a plain Llama's (LoRA adapters: merge them first)."""
    from safetensors.torch import save_file
    from model_llama import Llama
    cfg, sd = model.config, dict(model.state_dict())
    with torch.device('meta'):
        plain = set(Llama(cfg).state_dict())
    if set(sd) != plain:
        raise ValueError(f"the model has parameters a plain Llama has not (or lacks some): "
                         f"{sorted(set(sd) ^ plain)[:5]}; merge LoRA adapters first (lora.merge_lora)")
    if cfg.tie_embeddings:
        del sd['lm_head.weight']
    arch, model_type = ('Qwen2ForCausalLM', 'qwen2') if cfg.qkv_bias else ('LlamaForCausalLM', 'llama')
    config = dict(architectures=[arch], model_type=model_type, vocab_size=cfg.vocab_size, hidden_size=cfg.n_embd,
                  intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.n_layer,
                  num_attention_heads=cfg.n_head, num_key_value_heads=cfg.n_kv_head, hidden_act='silu',
                  max_position_embeddings=cfg.block_size, rms_norm_eps=cfg.norm_eps, rope_theta=cfg.rope_theta,
                  rope_scaling=cfg.rope_scaling, tie_word_embeddings=cfg.tie_embeddings, use_cache=True,
                  torch_dtype=str(next(iter(sd.values())).dtype).removeprefix('torch.'),
                  **(dict(use_sliding_window=False, sliding_window=None, max_window_layers=cfg.n_layer) if cfg.qkv_bias
                     else dict(head_dim=cfg.n_embd // cfg.n_head, attention_bias=False, mlp_bias=False)))
    os.makedirs(out_dir, exist_ok=True)
    save_file({(k if k == 'lm_head.weight' else 'model.' + k): v.detach().cpu().contiguous() for k, v in sd.items()},
              os.path.join(out_dir, 'model.safetensors'), metadata={'format': 'pt'})
    for name, data in {'config.json': json.dumps(config, indent=2).encode(), **(tokenizer_files or {})}.items():
        with open(os.path.join(out_dir, name), 'wb') as f:
            f.write(data)
    return out_dir


def export_checkpoint(path, out_dir):
    """A train.py checkpoint of a Llama (a LoRA run's merged best.pt too) -> export_hf, with the tokenizer
    files that AutoTokenizer reads (tokenizer.hf_files), all built before out_dir is touched. Returns out_dir. Raises
    OSError (no file; out_dir a file), ValueError (an RWKV-7 run, a LoRA run's ckpt.pt, an unreadable file, a
    tokenizer hf_files cannot write)."""
    from tokenizer import hf_files
    model, ck = read_plain(path, 'llama')
    return export_hf(model, out_dir, hf_files(ck['tokenizer']))


def export_peft(run_dir, out_dir):
    """A train.py LoRA run of a Llama -> two Hugging Face folders: out_dir/base, its base model (export_hf, with the
    run's tokenizer files) and out_dir/adapter, its best adapters (run_dir/adapter.safetensors; ckpt.pt's latest
    when there is none yet) as PEFT (lora.save_peft, base_model_name_or_path the base folder). The base is rebuilt
    from the run's reference: another run's checkpoint (its init_from path, relative to where train.py ran) or an
    hf:/llama2c: model, and checked against the run's fingerprint. A QLoRA run's base is the original, unquantized
    one (as PEFT's QLoRA adapters are used). Returns (base folder, adapter folder). Raises LoRAError: not a LoRA
    run of a Llama, a seeded scratch base (stored nowhere: export the merged best.pt), another base than the run's."""
    from lora import LoRAError, apply_lora, base_fingerprint, load_adapter, load_lora_state_dict, save_peft
    from model_llama import Llama, LlamaConfig, resolve_pretrained
    from tokenizer import hf_files
    if not os.path.isfile(os.path.join(run_dir, 'ckpt.pt')):
        raise FileNotFoundError(f"no {os.path.join(run_dir, 'ckpt.pt')}: --peft exports a LoRA run's folder")
    ck = read_checkpoint(os.path.join(run_dir, 'ckpt.pt'))
    info = ck.get('lora')
    if info is None or ck.get('model_type') != 'llama':
        raise LoRAError(f"{run_dir}/ckpt.pt is not a LoRA run of a Llama (train.py --lora_r, model_type llama)")
    src, args = info['base']['init_from'], ck['model_args']
    if src.startswith(('hf:', 'llama2c:')):
        model = Llama.from_pretrained(resolve_pretrained(src.split(':', 1)[1]), block_size=args['block_size'],
                                      vocab_size=args['vocab_size'])
    elif info['base']['file']:
        if not os.path.isfile(os.path.join(src, info['base']['file'])):
            raise FileNotFoundError(f"no {os.path.join(src, info['base']['file'])}, the base of {run_dir} (its "
                                    f"init_from, relative to where train.py ran): run export.py from there")
        base = read_checkpoint(os.path.join(src, info['base']['file']))
        model = Llama(LlamaConfig(**base['model_args']))
        model.load_state_dict(base['model'])
    else:
        raise LoRAError(f"the base of {run_dir} is a seeded scratch model, stored nowhere: export its merged best.pt "
                        f"(python export.py {run_dir}/best.pt {out_dir})")
    if base_fingerprint(model) != info['base']['fingerprint']:
        raise LoRAError(f"the base '{src}' is not the one {run_dir} was trained on (fingerprint "
                        f"{base_fingerprint(model)}, the run's {info['base']['fingerprint']}): it changed since")
    base_dir, adapter = os.path.join(out_dir, 'base'), os.path.join(run_dir, 'adapter.safetensors')
    tuned = copy.deepcopy(model)  # the adapters go on a copy, read before anything is written: a bad one writes nothing
    if os.path.isfile(adapter):
        load_adapter(adapter, tuned)
    else:
        apply_lora(tuned, info['targets'], info['r'], info['alpha'], info['dropout'], info['rslora'])
        load_lora_state_dict(tuned, ck['model'])
    export_hf(model, base_dir, hf_files(ck['tokenizer']))
    return base_dir, save_peft(os.path.join(out_dir, 'adapter'), tuned, os.path.abspath(base_dir))


def export_pth(path, out, dtype='float32'):
    """A train.py checkpoint of an RWKV-7 (a LoRA run's merged best.pt too) or 'rwkv:<.pth>' -> `out`, an official
    `.pth` (RWKV7.official_state_dict in `dtype`, written atomically), and, unless the tokenizer is the RWKV World
    vocabulary, the tokenizer as out minus '.pth' plus '.tokenizer.json' (tokenizer.hf_files). Returns the files
    written. Raises OSError (no file; out a folder or unwritable), ValueError (a Llama, a LoRA run's ckpt.pt, an
    unreadable file, an unknown dtype)."""
    from model_rwkv7 import RWKV7
    from tokenizer import hf_files
    if dtype not in DTYPES:
        raise ValueError(f"unknown --dtype '{dtype}': use one of {', '.join(DTYPES)}")
    if os.path.isdir(out):
        raise IsADirectoryError(f"'{out}' is a folder: give a file name ending in .pth")
    tok_file, tok_json = out.removesuffix('.pth') + '.tokenizer.json', None
    if path.startswith('rwkv:'):
        model = RWKV7.from_pretrained(path[5:])
    else:
        model, ck = read_plain(path, 'rwkv7')
        if ck['tokenizer']['kind'] != 'rwkv':
            tok_json = hf_files(ck['tokenizer'])['tokenizer.json']
    sd = model.official_state_dict(DTYPES[dtype])
    try:  # both files to temp files first, then both renamed: a failure leaves the previous pair as it was
        if tok_json is not None:
            with open(tok_file + '.tmp', 'wb') as f:
                f.write(tok_json)
        atomic_save(sd, out + '.part')
        if tok_json is not None:
            os.replace(tok_file + '.tmp', tok_file)
        os.replace(out + '.part', out)
    finally:
        for name in (out + '.part', tok_file + '.tmp'):
            if os.path.isfile(name):
                os.remove(name)
    if tok_json is None and os.path.isfile(tok_file):  # an earlier export's tokenizer is not this model's
        os.remove(tok_file)
    return [out] + ([tok_file] if tok_json is not None else [])


GGUF_NAMES = {'input_layernorm.weight': 'attn_norm.weight', 'self_attn.q_proj': 'attn_q', 'self_attn.k_proj': 'attn_k',
              'self_attn.v_proj': 'attn_v', 'self_attn.o_proj.weight': 'attn_output.weight',
              'post_attention_layernorm.weight': 'ffn_norm.weight', 'mlp.gate_proj.weight': 'ffn_gate.weight',
              'mlp.up_proj.weight': 'ffn_up.weight', 'mlp.down_proj.weight': 'ffn_down.weight'}


def gguf_tensors(model):
    """The model in llama.cpp's GGUF layout, as its convert_hf_to_gguf.py writes a Llama or Qwen2: (architecture
    'llama' | 'qwen2', {hyperparameter key without the architecture prefix: value}, [(ggml tensor name, fp32 tensor
    (out, in) or (n,))]). For 'llama', q/k rows go back to Meta's interleaved RoPE layout (the inverse of hf_permute:
    llama.cpp's llama rotates adjacent pairs); Qwen2's rotate-half is llama.cpp's NEOX mode and stays as it is. The
    head is written even when tied (as llama.cpp's llama2.c converter does). `model` is a plain Llama (read_plain,
    load_model). Llama 3.1's RoPE scaling goes as llama.cpp's rope_freqs tensor: each frequency's divisor."""
    from model_llama import rope_frequencies
    cfg, sd = model.config, model.state_dict()
    arch, hd = 'qwen2' if cfg.qkv_bias else 'llama', cfg.n_embd // cfg.n_head
    hparams = {'context_length': cfg.block_size, 'embedding_length': cfg.n_embd, 'block_count': cfg.n_layer,
               'feed_forward_length': cfg.intermediate_size, 'attention.head_count': cfg.n_head,
               'attention.head_count_kv': cfg.n_kv_head, 'rope.dimension_count': hd,
               'attention.layer_norm_rms_epsilon': float(cfg.norm_eps), 'rope.freq_base': float(cfg.rope_theta)}
    out = [('token_embd.weight', sd['embed_tokens.weight'])]
    if cfg.rope_scaling and cfg.rope_scaling['rope_type'] == 'linear':
        hparams.update({'rope.scaling.type': 'linear', 'rope.scaling.factor': float(cfg.rope_scaling['factor'])})
    elif cfg.rope_scaling:  # llama3
        out.append(('rope_freqs.weight', rope_frequencies(hd, cfg.rope_theta) /
                    rope_frequencies(hd, cfg.rope_theta, cfg.rope_scaling)))
    for i in range(cfg.n_layer):
        for ours, theirs in GGUF_NAMES.items():
            for suffix in ('.weight', '.bias') if not ours.endswith('.weight') else ('',):
                if f'layers.{i}.{ours}{suffix}' not in sd:
                    continue  # no bias
                t = sd[f'layers.{i}.{ours}{suffix}']
                heads = cfg.n_head if ours.endswith('q_proj') else cfg.n_kv_head
                if arch == 'llama' and ours.endswith(('q_proj', 'k_proj')):  # rows: rotate-half -> interleaved pairs
                    t = t.view(heads, 2, hd // 2, -1).transpose(1, 2).reshape(t.shape)
                out.append((f'blk.{i}.{theirs}{suffix}', t))
    out += [('output_norm.weight', sd['norm.weight']), ('output.weight', sd['lm_head.weight'])]
    return arch, hparams, [(name, t.detach().float().cpu().contiguous()) for name, t in out]


RWKV_GGUF = {'ln1': 'attn_norm', 'ln2': 'attn_norm_2', 'att.ln_x': 'time_mix_ln', 'att.receptance': 'time_mix_receptance',
             'att.key': 'time_mix_key', 'att.value': 'time_mix_value', 'att.output': 'time_mix_output',
             'ffn.key': 'channel_mix_key', 'ffn.value': 'channel_mix_value'}


def rwkv_gguf_tensors(model):
    """An RWKV7 in llama.cpp's GGUF layout, as its convert_hf_to_gguf.py (Rwkv7Model) writes one: ('rwkv7',
    hyperparameters, [(ggml tensor name, fp32 tensor)]). The six token-shift mixes stacked as time_mix_lerp_fused (6,
    1, 1, C); the low-rank matrices (w1, w2, a1, a2, v1, v2, g1, g2) transposed; r_k flattened, the other vectors
    squeezed; block 0's unused v0, v1, v2 written as copies of its a0, a1, a2 (the shapes llama.cpp loads there)."""
    cfg, sd = model.config, model.state_dict()
    hparams = {'context_length': 1048576, 'embedding_length': cfg.n_embd, 'block_count': cfg.n_layer,  # no limit
               'attention.layer_norm_epsilon': float(model.ln_out.eps), 'wkv.head_size': cfg.head_size,
               'attention.decay_lora_rank': cfg.d_decay, 'attention.iclr_lora_rank': cfg.d_aaa,
               'attention.value_residual_mix_lora_rank': cfg.d_mv, 'attention.gate_lora_rank': cfg.d_gate,
               'feed_forward_length': cfg.dim_ffn, 'attention.head_count': 0}  # head_count: read, unused
    out = [('token_embd.weight', sd['emb.weight']), ('token_embd_norm.weight', sd['blocks.0.ln0.weight']),
           ('token_embd_norm.bias', sd['blocks.0.ln0.bias'])]
    for i in range(cfg.n_layer):
        b, g = f'blocks.{i}.', f'blk.{i}.'
        out.append((g + 'time_mix_lerp_fused.weight', torch.stack([sd[f'{b}att.x_{c}'] for c in 'rwkvag'])))
        for ours, theirs in RWKV_GGUF.items():
            out += [(f'{g}{theirs}.{p}', sd[f'{b}{ours}.{p}']) for p in ('weight', 'bias') if f'{b}{ours}.{p}' in sd]
        for c in ('w', 'a', 'v', 'g'):
            src = f'{b}att.a' if c == 'v' and i == 0 else f'{b}att.{c}'
            if c != 'g':
                out.append((f'{g}time_mix_{c}0.weight', sd[src + '0'].flatten()))
            out += [(f'{g}time_mix_{c}{n}.weight', sd[f'{src}{n}'].t()) for n in (1, 2)]
        out += [(f'{g}time_mix_{n}.weight', sd[f'{b}att.{n}'].flatten()) for n in ('k_k', 'k_a', 'r_k')]
        out.append((f'{g}channel_mix_lerp_k.weight', sd[f'{b}ffn.x_k'].flatten()))
    out += [('output_norm.weight', sd['ln_out.weight']), ('output_norm.bias', sd['ln_out.bias']),
            ('output.weight', sd['head.weight'])]
    return 'rwkv7', hparams, [(name, t.detach().float().cpu().contiguous()) for name, t in out]


def export_gguf(source, out, dtype='float32'):
    """A Llama or an RWKV-7 (a train.py checkpoint, a LoRA run's merged best.pt, or 'hf:<...>' / 'llama2c:<...>')
    -> `out`, a GGUF file llama.cpp runs, written with the ggml project's `gguf` package (no compiler): gguf_tensors'
    or rwkv_gguf_tensors' weights in `dtype` (float32, float16, bfloat16 or q8_0; 1-D tensors, RWKV-7's decay
    matrices and token-shift mixes, and q8_0 tensors whose rows are not a multiple of 32, stay float32, as llama.cpp's
    converter keeps them), the tokenizer embedded (tokenizer.gguf_vocab) with our chat template. Written atomically.
    Returns out. Raises OSError (no file, out a folder or unwritable), ValueError (a LoRA run's ckpt.pt, a tokenizer
    with no GGUF form, an unknown dtype)."""
    try:
        import gguf
    except ImportError:
        raise ValueError("GGUF export needs the gguf package: pip install gguf") from None
    from chat import CHAT_TEMPLATE
    from tokenizer import gguf_vocab
    Q = gguf.GGMLQuantizationType
    types = {'float32': (Q.F32, 0), 'float16': (Q.F16, 1), 'bfloat16': (Q.BF16, 32), 'q8_0': (Q.Q8_0, 7)}  # file type
    if dtype not in types:
        raise ValueError(f"unknown --dtype '{dtype}' for GGUF: use one of {', '.join(types)}")
    if os.path.isdir(out):
        raise IsADirectoryError(f"'{out}' is a folder: give a file name ending in .gguf")
    if source.startswith(('hf:', 'llama2c:')):
        model, tok, _ = load_model(source)
        state, name = tok.state(), source.split(':', 1)[1]
    else:
        model, ck = read_plain(source, None)
        state, name = ck['tokenizer'], os.path.basename(os.path.dirname(os.path.abspath(source)))
    arch, hparams, tensors = (rwkv_gguf_tensors if hasattr(model, 'blocks') else gguf_tensors)(model)
    vocab = gguf_vocab(state, model.config.vocab_size)  # ValueError before anything is written
    if arch == 'rwkv7' and model.config.head_size % 64:
        print(f"export.py: warning: head_size {model.config.head_size}: llama.cpp's CPU WKV7 kernel steps over 64 "
              f"floats at a time with AVX-512 and computes wrong logits for a head size that is not a multiple of it "
              f"(seen with llama-cpp-python 0.3.36); head_size 64, the official models', gives ours", file=sys.stderr)
    w = gguf.GGUFWriter(out + '.tmp', arch)
    try:
        w.add_name(name)
        for key, value in hparams.items():
            w.add_key_value(f'{arch}.{key}', value, gguf.GGUFValueType.STRING if isinstance(value, str) else
                            gguf.GGUFValueType.FLOAT32 if isinstance(value, float) else gguf.GGUFValueType.UINT32)
        w.add_file_type(types[dtype][1])
        w.add_tokenizer_model(vocab['model'])
        if vocab['pre']:
            w.add_tokenizer_pre(vocab['pre'])
        w.add_token_list(vocab['tokens'])
        w.add_token_types(vocab['types'])
        if vocab['scores'] is not None:
            w.add_token_scores(vocab['scores'])
        if vocab['merges'] is not None:
            w.add_token_merges(vocab['merges'])
        for key in ('bos', 'eos', 'eot', 'unk', 'pad'):
            if vocab[key] is not None:
                getattr(w, f'add_{key}_token_id')(vocab[key])
        w.add_add_bos_token(vocab['add_bos'])
        w.add_add_eos_token(False)
        w.add_add_space_prefix(vocab['add_space_prefix'])
        w.add_chat_template(CHAT_TEMPLATE)
        for tname, t in tensors:
            a, qtype = t.numpy(), types[dtype][0]
            if a.ndim == 1 or tname.endswith(('time_mix_w1.weight', 'time_mix_w2.weight', 'lerp_fused.weight')) \
                    or qtype == Q.Q8_0 and a.shape[-1] % 32:
                qtype = Q.F32
            w.add_tensor(tname, gguf.quants.quantize(a, qtype), raw_dtype=qtype)  # shape: from the bytes
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(out + '.tmp', out)
    except BaseException:
        w.close()
        if os.path.exists(out + '.tmp'):
            os.remove(out + '.tmp')
        raise
    return out


def export(source, out, peft=False, dtype=None):
    """Write `source` (a run folder: its best.pt, else ckpt.pt; a checkpoint file; 'hf:<...>' / 'llama2c:<...>' /
    'rwkv:<.pth>') to `out` in the format its name asks for (a folder: Hugging Face; .pth: RWKV-7's official, in
    `dtype`); peft: a LoRA run as base + PEFT adapter. Returns a line saying what was written. Raises ValueError
    (CheckpointError, LoRAError) or OSError naming the problem."""
    pth, gg = out.endswith('.pth'), out.endswith('.gguf')
    if out.endswith(('.bin', '.pt', '.safetensors')):
        raise ValueError(f"cannot write '{out}': export.py writes a Hugging Face folder (a name without a file "
                         f"extension), a GGUF file (.gguf) or an RWKV-7 .pth")
    if (pth or gg) and peft:
        raise ValueError(f"--peft writes Hugging Face folders: a {out.rsplit('.', 1)[1]} file holds the merged model")
    if dtype is not None and not (pth or gg):
        raise ValueError("--dtype is for .pth and .gguf files: a Hugging Face folder keeps the checkpoint's dtype")
    if not (pth or gg) and os.path.isfile(out):
        raise ValueError(f"'{out}' is a file: give a folder name for the Hugging Face model")
    if peft:
        return "wrote {} and {}".format(*export_peft(source, out))
    if source.startswith('rwkv:') and not pth:
        raise ValueError(f"{source} is an official RWKV-7: export it to a .pth file (transformers has no RWKV-7, and "
                         f"its World vocabulary has no GGUF form here)")
    if gg and source.startswith(('hf:', 'llama2c:')):
        return f"wrote {export_gguf(source, out, dtype or 'float32')}"
    if source.startswith(('hf:', 'llama2c:')):
        if pth:
            raise ValueError(f"{source} is a Llama: .pth is RWKV-7's format; export it to a folder (Hugging Face)")
        from tokenizer import hf_files
        model, tok, _ = load_model(source)
        return f"wrote {export_hf(model, out, hf_files(tok.state()))}"
    if os.path.isdir(source):
        try:
            source = find_checkpoint(source)
        except FileNotFoundError:
            raise FileNotFoundError(f"no best.pt or ckpt.pt in {source}: train that run first, or give a checkpoint "
                                    f"file") from None
    if pth:
        return f"wrote {' and '.join(export_pth(source, out, dtype or 'float32'))}"
    if gg:
        return f"wrote {export_gguf(source, out, dtype or 'float32')}"
    return f"wrote {export_checkpoint(source, out)}"


if __name__ == '__main__':
    usage = ("usage: python export.py <run folder | checkpoint.pt | hf:<folder> | llama2c:<file.bin> | rwkv:<file.pth>> "
             "<folder | file.gguf | file.pth> [--peft] [--dtype=float32|bfloat16|float16|q8_0]")
    args = sys.argv[1:]
    if '-h' in args or '--help' in args:
        sys.exit(print(f"{usage}\n\n{__doc__.strip()}"))
    peft = '--peft' in args
    dtype = next((a.split('=', 1)[1] for a in args if a.startswith('--dtype=')), None)
    args = [a for a in args if a != '--peft' and not a.startswith('--dtype=')]
    try:
        if len(args) != 2:
            raise ValueError(f"expected 2 arguments, got {len(args)} ({usage})")
        print(export(*args, peft=peft, dtype=dtype))
    except (OSError, ValueError, RuntimeError) as e:  # LoRAError, CheckpointError: ValueErrors
        print(f"export.py: error: {e}".replace('\n', '\\n'), file=sys.stderr)
        sys.exit(1)
