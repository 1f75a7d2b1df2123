"""Reinforcement learning: the GRPO / DAPO math (core_algos), batches, scoring, the trainer loop, checkpoints."""
