"""memrl.dist.runtime: failure handling of 2 ranks, the mesh shape, the loss scaling and the one-process paths."""

from __future__ import annotations

import pytest
import torch

from memrl.config.schema import DistConfig, DistMeshConfig
from memrl.dist.runtime import (
    all_gather_objects,
    broadcast_object,
    dp_loss_scale,
    gather_objects,
    global_sum,
    grad_norm_value,
    mesh_shape,
    resolve_backend,
)
from memrl.errors import UserError


@pytest.mark.timeout(600)
def test_one_rank_raising_ends_both_with_an_error_naming_it(dl, tmp_path):
    run = dl.launch(tmp_path, "--steps", "3", "--fail-rank", "1")
    assert run.returncode != 0
    assert "deliberate failure on rank 1" in run.output
    # torchrun's summary names the failing rank as the root cause
    root = run.output.split("Root Cause")[-1]
    assert "rank      : 1" in root


@pytest.mark.timeout(600)
def test_a_stuck_rank_fails_the_others_within_the_collective_timeout(dl, tmp_path):
    run = dl.launch(tmp_path, "--steps", "3", "--hang-rank", "1", "--timeout-s", "5")
    assert run.returncode != 0
    # rank 0's collective timed out (gloo), and torchrun ended the stuck rank
    assert "rank      : 0" in run.output.split("Root Cause")[-1]


def test_mesh_shape():
    def cfg(replicate, shard=None):
        return DistConfig(mesh=DistMeshConfig(replicate=replicate, shard=shard))

    assert mesh_shape(cfg(1), 8) == (1, 8)
    assert mesh_shape(cfg(2), 8) == (2, 4)
    assert mesh_shape(cfg(2, 4), 8) == (2, 4)
    with pytest.raises(UserError, match=r"dist.mesh.replicate=3 does not divide the 8"):
        mesh_shape(cfg(3), 8)
    with pytest.raises(UserError, match=r"dist.mesh.replicate=2 x dist.mesh.shard=2 = 4 processes, but .* 8"):
        mesh_shape(cfg(2, 2), 8)


def test_backend():
    assert resolve_backend("auto") == ("nccl" if torch.cuda.is_available() else "gloo")
    assert resolve_backend("gloo") == "gloo"
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="dist.backend=nccl needs CUDA"):
            resolve_backend("nccl")


def test_loss_scale_makes_the_averaged_gradient_the_global_mean():
    # two ranks with 3 and 5 tokens: FSDP2 averages the two ranks' gradients
    losses = [torch.tensor([1.0, 2.0, 3.0]), torch.tensor([4.0, 5.0, 6.0, 7.0, 8.0])]
    total = sum(len(x) for x in losses)
    averaged = sum(x.sum() * dp_loss_scale(total, 2) for x in losses) / 2
    assert averaged.item() == pytest.approx(torch.cat(losses).mean().item())
    # each rank's own mean, averaged, is not the global mean here
    assert (sum(x.mean() for x in losses) / 2).item() != pytest.approx(torch.cat(losses).mean().item())
    with pytest.raises(ValueError):
        dp_loss_scale(0, 2)


def test_one_process_collectives_are_identities():
    assert broadcast_object({"dir": "outputs/x"}) == {"dir": "outputs/x"}
    assert gather_objects(3) == [3]
    assert all_gather_objects("a") == ["a"]
    assert global_sum(7) == 7.0
    assert dp_loss_scale(4) == 0.25


def test_grad_norm_value_reads_a_dtensor():
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    assert grad_norm_value(torch.tensor(2.5)) == 2.5
    if dist.is_initialized():
        pytest.skip("a process group is already up in this process")
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1,))
        dt = distribute_tensor(torch.tensor([3.0, 4.0]), mesh, [Shard(0)])
        assert grad_norm_value(dt.norm()) == pytest.approx(5.0)
    finally:
        dist.destroy_process_group()
