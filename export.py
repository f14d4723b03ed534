"""
The one exporter: a run, a checkpoint or a pretrained model written in a format other tools read.

    python export.py out-run out-run-hf              # the run's best.pt (else ckpt.pt) as a Hugging Face folder
    python export.py out-run/ckpt_000390.pt out-hf   # one checkpoint
    python export.py llama2c:stories260K.bin out-hf  # a pretrained model (hf:<folder or hub id>, llama2c:<file.bin>)
    python export.py out-lora out-lora-hf --peft     # a LoRA run as its base + a PEFT adapter (out/base, out/adapter)

The format comes from the output's name: a folder is a Hugging Face model (model_llama.export_hf: config.json,
model.safetensors; tokenizer.hf_files: tokenizer.json and its config files, generation_config.json), which
transformers' AutoModelForCausalLM and AutoTokenizer load with no other package. A LoRA run exports merged (its
best.pt), or with --peft as the unmerged base plus the adapters in PEFT's layout (lora.save_peft). Only Llama runs
export: transformers has no RWKV-7 counterpart here.
"""

import copy
import os
import sys

from checkpoint import find_checkpoint, load_model, read_checkpoint


def export_checkpoint(path, out_dir):
    """A train.py checkpoint of a Llama (a LoRA run's merged best.pt too) -> model_llama.export_hf, with the tokenizer
    files that AutoTokenizer reads (tokenizer.hf_files), all built before out_dir is touched. Returns out_dir. Raises
    OSError (no file; out_dir a file), ValueError (an RWKV-7 run, a LoRA run's ckpt.pt, an unreadable file, a
    tokenizer hf_files cannot write)."""
    from model_llama import Llama, LlamaConfig, export_hf
    from tokenizer import hf_files
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint {path}: give a train.py checkpoint, e.g. out-run/best.pt")
    ck = read_checkpoint(path)
    if ck['model_type'] != 'llama' or 'lora' in ck:
        raise ValueError(f"{path} holds an RWKV-7 model, which transformers cannot run: only Llama runs export"
                         if ck['model_type'] == 'rwkv7' else f"{path} is not a train.py checkpoint of a full Llama "
                         f"(LoRA runs: export best.pt, or the base and a PEFT adapter with python export.py <run> "
                         f"<folder> --peft)")
    model = Llama(LlamaConfig(**ck['model_args']))
    model.load_state_dict(ck['model'])  # RuntimeError: missing or misshapen weights
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
    from model_llama import Llama, LlamaConfig, export_hf, resolve_pretrained
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


def export(source, out, peft=False):
    """Write `source` (a run folder: its best.pt, else ckpt.pt; a checkpoint file; 'hf:<...>' / 'llama2c:<...>') to
    `out` in the format its name asks for (a folder: Hugging Face); peft: a LoRA run as base + PEFT adapter. Returns
    a line saying what was written. Raises ValueError (CheckpointError, LoRAError) or OSError naming the problem."""
    if out.endswith(('.gguf', '.pth', '.bin', '.pt', '.safetensors')):
        raise ValueError(f"cannot write '{out}': export.py writes a Hugging Face folder (a name without a file "
                         f"extension); GGUF and RWKV .pth are not written yet")
    if os.path.isfile(out):
        raise ValueError(f"'{out}' is a file: give a folder name for the Hugging Face model")
    if peft:
        return "wrote {} and {}".format(*export_peft(source, out))
    if source.startswith(('hf:', 'llama2c:')):
        from model_llama import export_hf
        from tokenizer import hf_files
        model, tok, _ = load_model(source)
        return f"wrote {export_hf(model, out, hf_files(tok.state()))}"
    if os.path.isdir(source):
        try:
            source = find_checkpoint(source)
        except FileNotFoundError:
            raise FileNotFoundError(f"no best.pt or ckpt.pt in {source}: train that run first, or give a checkpoint "
                                    f"file") from None
    return f"wrote {export_checkpoint(source, out)}"


if __name__ == '__main__':
    usage = "usage: python export.py <run folder | checkpoint.pt | hf:<folder> | llama2c:<file.bin>> <folder> [--peft]"
    args = sys.argv[1:]
    if '-h' in args or '--help' in args:
        sys.exit(print(f"{usage}\n\n{__doc__.strip()}"))
    peft = '--peft' in args
    args = [a for a in args if a != '--peft']
    try:
        if len(args) != 2:
            raise ValueError(f"expected 2 arguments, got {len(args)} ({usage})")
        print(export(*args, peft=peft))
    except (OSError, ValueError, RuntimeError) as e:  # LoRAError, CheckpointError: ValueErrors
        print(f"export.py: error: {e}".replace('\n', '\\n'), file=sys.stderr)
        sys.exit(1)
