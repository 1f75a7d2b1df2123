"""Scale-out on PyTorch's own distributed stack: torchrun, FSDP2 (`fully_shard`) and DCP checkpoints.

The library pieces the trainer is wired to (docs/scaling.md):

- `memrl.dist.env`: the torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK, ...), the error for
  `dist=fsdp2` without torchrun, and a launch time every rank agrees on (one run directory for all ranks).
- `memrl.dist.runtime`: process group init/teardown (backend auto: nccl on CUDA, gloo on CPU; a collective
  timeout), the device mesh (replicate x shard: HSDP), rank-0-decides object broadcast/gather, the global
  token-count loss scaling that makes a result independent of the number of ranks, and the grad-norm read.
- `memrl.dist.shard`: `fully_shard` of a Hugging Face causal LM, one group per decoder layer plus the root,
  with mixed precision, reshard_after_forward and CPU offload.
- `memrl.dist.checkpoint`: DCP save/load of the sharded model and optimiser, per-rank RNG, reward state as
  one opaque blob from rank 0, the trainer state, `latest` last; async save on its own process group;
  resharding on resume; export of the full weights as a Hugging Face folder.
"""
