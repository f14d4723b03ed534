"""
What a script needs to run under torchrun, and nothing else: this process's rank, the process group, FSDP2 sharding,
the full (unsharded) state of a sharded model and its optimizer for checkpoints, and leaving cleanly. The training
loop's own collectives (the step's loss, the stop flag) stay in train.py, where they are read.

    ddp, rank, local_rank, world_size = ranks()      # (False, 0, 0, 1) without torchrun
    init(device)                                     # NCCL on CUDA, gloo on the CPU
    shard(model, model.layers, 'cuda', world_size)   # FSDP2: each block a unit, then the rest
    weights, opt = full_state(model, optimizer)      # every rank calls it; rank 0 gets the tensors on the CPU
    stop = StopFlag('saving a checkpoint at the end of this iteration')  # Ctrl-C / SIGTERM: stop.requested

A checkpoint of a sharded run is the same file as one process's: full tensors, tied weights one tensor, the optimizer
state keyed by parameter index (as optimizer.state_dict() keys it).
"""

import os
import signal
import sys

import torch


def ranks():
    """(ddp, rank, local_rank, world_size) of this process: ddp is True under torchrun (its RANK, LOCAL_RANK and
    WORLD_SIZE environment variables), else (False, 0, 0, 1)."""
    if 'RANK' not in os.environ:
        return False, 0, 0, 1
    return (True, *(int(os.environ[k]) for k in ('RANK', 'LOCAL_RANK', 'WORLD_SIZE')))


def local_device(device, local_rank):
    """This process's device under torchrun: its own GPU (cuda:local_rank, whatever cuda:N was asked for) on CUDA,
    else `device` as it is. Raises configurator.ConfigError when the node has no GPU for this rank."""
    if not device.startswith('cuda'):
        return device
    if local_rank >= torch.cuda.device_count():
        from configurator import ConfigError
        raise ConfigError(f"local rank {local_rank} has no GPU: this node has {torch.cuda.device_count()}; "
                          f"use --nproc_per_node={torch.cuda.device_count()} at most")
    return f'cuda:{local_rank}'


def init(device):
    """Join torchrun's process group: NCCL on a CUDA device (this process's GPU made current), gloo on the CPU."""
    if device.startswith('cuda'):
        torch.cuda.set_device(device)
    torch.distributed.init_process_group(backend='nccl' if device.startswith('cuda') else 'gloo')


def shard(model, blocks, device_type, world_size):
    """FSDP2 over world_size processes: each of `blocks` a unit of its own (all-gathered only for its forward and
    backward), then the rest of the model. Moves the model to the device, keeping this rank's shard."""
    from torch.distributed.fsdp import fully_shard
    mesh = torch.distributed.device_mesh.init_device_mesh(device_type, (world_size,))
    for block in blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)


def _names(model, optimizer):
    """The parameter names of the optimizer's parameters, in its order (index -> name)."""
    names = {p: n for n, p in model.named_parameters()}
    return [names[p] for g in optimizer.param_groups for p in g['params']]


def _rekey(osd, keys):
    """An optimizer state dict with its parameter keys mapped through keys (index -> name or name -> index)."""
    return {'state': {keys[k]: v for k, v in osd['state'].items()},
            'param_groups': [dict(g, params=[keys[k] for k in g['params']]) for g in osd['param_groups']]}


def full_state(model, optimizer=None):
    """(state dict, optimizer state dict or None) of an FSDP2-sharded model, gathered onto rank 0's CPU as full
    tensors; every rank must call it (other ranks get empty dicts). As without FSDP: tied weights are one tensor (half
    the file for a big vocabulary), the optimizer state is keyed by index."""
    import torch.distributed.checkpoint.state_dict as dsd
    full = dsd.StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = dsd.get_model_state_dict(model, options=full)
    opt = dsd.get_optimizer_state_dict(model, optimizer, options=full) if optimizer is not None else None
    if torch.distributed.get_rank() == 0:
        first = {}
        for n, p in model.named_parameters(remove_duplicate=False):
            weights[n] = weights[first.setdefault(p, n)]
        opt = opt and _rekey(opt, {n: i for i, n in enumerate(_names(model, optimizer))})
    return weights, opt


def load_full_state(model, optimizer, ck, weights=True):
    """Put a checkpoint's full tensors (ck['model'], with weights) and optimizer state (ck['optimizer'], keyed by
    index) into an FSDP2-sharded model and its optimizer; every rank calls it with the same checkpoint."""
    import torch.distributed.checkpoint.state_dict as dsd
    full = dsd.StateDictOptions(full_state_dict=True, cpu_offload=True)
    if weights:
        dsd.set_model_state_dict(model, ck['model'], options=full)
    dsd.set_optimizer_state_dict(model, optimizer, _rekey(ck['optimizer'], _names(model, optimizer)), options=full)


class StopFlag:
    """Ctrl-C or SIGTERM (torchrun passes them on to every process): the first sets .requested (the loop then saves
    and leaves; it shares the flag with the other ranks itself) and prints 'stopping: <what>'; a second one raises
    KeyboardInterrupt, to quit at once."""

    def __init__(self, what):
        self.requested, self.what = False, what
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.handle)

    def handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(f"\nstopping: {self.what} (Ctrl-C again to quit now)")


def leave(code):
    """Exit with status code. Under torchrun the process group is destroyed first and the process then leaves at once
    (os._exit, after the logs are flushed): in a normal interpreter exit, gloo's worker threads may still be freeing
    the last collective's tensors, which aborts the process (SIGABRT, about 1 run in 10 on a busy CPU, torch 2.13)."""
    if not torch.distributed.is_initialized():
        sys.exit(code)
    torch.distributed.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
