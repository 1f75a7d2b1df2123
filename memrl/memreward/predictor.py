"""The frozen reward predictor of a training run: the labelled memory graph and the trained reward model.

Online (docs/methods.md#online-reward): for a batch of new, unlabelled groups, embed them, attach them to the memory
graph (kNN edges to the labelled queries; memory edges unchanged), run the model once over the part of
the graph its layers read (`graph.receptive_subgraph`, exact), and read P(correct) at the new answer nodes. Nothing here reads a label: the memory's own labels are
training targets already baked into the model, and the new groups arrive without answers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from memrl.memreward.embed import TextGroup, build_inputs
from memrl.memreward.graph import GraphInputs, MemoryGraph, concat_inputs, receptive_subgraph


class RewardPredictor:
    """P(correct) for the rollouts of new queries.

    Args:
        model: a trained model (`memrl.memreward.gnn`), called as `model(graph) -> [R] logits`.
        spec: how the model was built (`memrl.stages.memreward.model_spec`), saved with its weights.
        memory: the labelled memory's graph inputs.
        encoder: the sentence encoder the memory was embedded with.
        k / direction / think_k: the graph options the model was trained with.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        spec: dict[str, Any],
        memory: GraphInputs,
        encoder: Any,
        k: int,
        direction: str,
        think_k: int,
    ) -> None:
        self.model = model.eval()
        self.spec = spec
        self.encoder = encoder
        self.k, self.direction, self.think_k = k, direction, think_k
        self.set_memory(memory)
        # where online scoring spends its time (read and reset by the reward component's metrics)
        self.seconds = {"embed": 0.0, "graph_and_model": 0.0}

    def set_memory(self, memory: GraphInputs) -> None:
        self.memory = memory
        self.graph = MemoryGraph(memory, self.k, self.direction, self.think_k)

    def grow(self, groups: Sequence[TextGroup]) -> int:
        """Add labelled groups (with their `labels`) to the memory; returns the rollouts added.

        The new queries become labelled memory: later queries may get them as neighbours.
        """
        if not groups:
            return 0
        new = build_inputs(self.encoder, groups, labelled=True)
        self.set_memory(concat_inputs(self.memory, new))
        return new.num_rollouts

    def refresh(self, val: GraphInputs, val_labels: torch.Tensor, settings: Any) -> dict[str, Any]:
        """Fine-tune the model on the current memory from its current weights (`training.fit`, early
        stopping and selection on the validation queries `val` with labels `val_labels` [R_val]).

        Returns:
            {"best_epoch", "val_f1", "val_fpr"} of the refresh.
        """
        import copy

        from memrl.memreward.training import fit, supervised_graph

        graph, train_mask, val_mask = supervised_graph(self.graph, val, val_labels)
        # each restart starts from a copy of the current weights; the live model changes only at the end
        result = fit(lambda: copy.deepcopy(self.model).train(), graph, train_mask, val_mask, settings)
        self.model.load_state_dict(result.model.state_dict())
        self.model.eval()
        return {
            "best_epoch": result.best_epoch,
            "val_f1": result.val_metrics.get("f1"),
            "val_fpr": result.val_metrics.get("fpr"),
        }

    @torch.no_grad()
    def predict(self, groups: Sequence[TextGroup]) -> list[list[float]]:
        """Per group, per rollout, the predicted probability that the rollout is correct.

        Args:
            groups: G unlabelled groups (their `labels` are ignored).
        """
        if not groups:
            return []
        t0 = time.perf_counter()
        new = build_inputs(self.encoder, groups, labelled=False)  # unlabelled: any `labels` are not read
        t1 = time.perf_counter()
        graph, answer_index = self.graph.attach(new)
        # only what the model's layers read: the cost of a batch does not grow with the memory
        hops = 0 if self.spec.get("kind") == "mlp" else int(self.spec.get("layers", 2))
        graph, answer_index = receptive_subgraph(graph, answer_index, hops)
        prob = torch.sigmoid(self.model(graph)[answer_index]).tolist()
        self.seconds["embed"] += t1 - t0
        self.seconds["graph_and_model"] += time.perf_counter() - t1
        out, start = [], 0
        for g in groups:
            out.append(prob[start : start + len(g.answers)])
            start += len(g.answers)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "memory": self.memory.to_dict(),
            "graph": {"k": self.k, "direction": self.direction, "think_k": self.think_k},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["spec"] != self.spec or state["graph"] != {
            "k": self.k,
            "direction": self.direction,
            "think_k": self.think_k,
        }:
            raise ValueError(
                f"the checkpoint's reward model ({state['spec']}, {state['graph']}) differs from this run's config"
            )
        self.model.load_state_dict(state["model"])
        self.model.eval()
        self.set_memory(GraphInputs.from_dict(state["memory"]))
