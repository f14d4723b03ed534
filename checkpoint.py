"""
Which checkpoint file a run resolves to: the one rule that train.py, sample.py and bench.py share.

    path = find_checkpoint('out-run', '')              # out-run/best.pt if there is one, else out-run/ckpt.pt
    path = find_checkpoint('out', 'run/best.pt')       # a path to an existing file is that file
    path = find_checkpoint('out-run', 'ckpt_000390.pt')  # a bare name is looked up in out_dir
"""

import os

PRETRAINED = ('hf:', 'llama2c:', 'rwkv:')  # specs of pretrained models, loaded by their own readers


def find_checkpoint(out_dir, ckpt=''):
    """The checkpoint file that `ckpt` names for the run in `out_dir` (str paths):
    - '' : out_dir/best.pt if it exists, else out_dir/ckpt.pt;
    - a bare file name: out_dir/ckpt, else ckpt itself if that file exists (in the working directory);
    - a path (with a folder, or absolute): that file if it exists, else out_dir/ckpt;
    - a pretrained spec (hf:, llama2c:, rwkv:): returned as it is.
    Returns the path of an existing file, or the spec. Raises FileNotFoundError with a one-line message naming the
    paths it tried and the fix."""
    if ckpt.startswith(PRETRAINED):
        return ckpt
    if not ckpt:
        tried = [os.path.join(out_dir, 'best.pt'), os.path.join(out_dir, 'ckpt.pt')]
    elif os.path.basename(ckpt) == ckpt:
        tried = [os.path.join(out_dir, ckpt), ckpt]
    else:
        tried = [ckpt, os.path.join(out_dir, ckpt)]
    tried = list(dict.fromkeys(tried))  # an absolute ckpt joins out_dir as itself
    for path in tried:
        if os.path.isfile(path):
            return path
    where = tried[-1] if not ckpt else tried[0] + (f" (nor {tried[1]})" if len(tried) > 1 else '')
    raise FileNotFoundError(f"no checkpoint {where}: train first (python train.py ...), or set --out_dir to a trained "
                            f"run, or --ckpt to a checkpoint file")
