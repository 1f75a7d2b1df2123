"""FSDP2 over 2 gloo processes trains like one process on the same global batch (memrl.dist.runtime, shard).

The batch's sequences have unequal lengths, so the two ranks hold different token counts: only the global
token-count scaling (dp_loss_scale) makes the averaged gradient the global mean's.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(900)


def test_two_ranks_equal_one_process(runs, dl):
    single, two = runs("single"), runs("two")
    assert two.result["world_size"] == 2 and single.result["world_size"] == 1
    assert dl.max_diff(single.params, two.params) < 1e-5
    # same metrics: the global token-mean loss and the full gradient norm (read from the DTensor)
    for a, b in zip(single.result["history"], two.result["history"], strict=True):
        assert a["step"] == b["step"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)
    # the run really trained: the parameters moved and the loss fell
    losses = [h["loss"] for h in two.result["history"]]
    assert losses[-1] < losses[0]


@pytest.mark.parametrize(
    "flags",
    [["--replicate", "2"], ["--cpu-offload"]],
    ids=["hsdp-2x1", "cpu-offload"],
)
def test_hsdp_mesh_and_cpu_offload_equal_one_process(runs, dl, tmp_path, flags):
    """A 2-D (replicate x shard) mesh, and FSDP2's CPUOffloadPolicy, train like one process too."""
    run = dl.ok(dl.launch(tmp_path, "--steps", "4", *flags))
    assert dl.max_diff(runs("single").params, run.params) < 1e-5


def test_per_rank_mean_is_not_the_global_mean(runs, dl, tmp_path):
    """The control: each rank averaging its own tokens gives another result, which the test above would see."""
    naive = dl.ok(dl.launch(tmp_path, "--steps", "4", "--naive-mean"))
    assert dl.max_diff(runs("single").params, naive.params) > 1e-4


def test_two_nodes_with_c10d_rendezvous_equal_two_processes(runs, dl, tmp_path):
    """Two torchrun agents (--nnodes=2, one process each) meeting at a c10d rendezvous on 127.0.0.1."""
    port = dl.free_port()
    procs = [
        dl.start(
            [
                *dl.torchrun,
                "--nnodes=2",
                "--nproc_per_node=1",
                "--rdzv-backend=c10d",
                f"--rdzv-endpoint=127.0.0.1:{port}",
                "--rdzv-id=memrl-two-nodes",
                str(dl.worker),
                "--out",
                str(tmp_path),
                "--steps",
                "4",
            ]
        )
        for _ in range(2)
    ]
    done = [dl.finish(p, tmp_path) for p in procs]
    for d in done:
        dl.ok(d)
    assert dl.max_diff(runs("two").params, done[0].params) == 0.0
