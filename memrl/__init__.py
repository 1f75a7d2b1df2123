"""memrl: reinforcement-learning fine-tuning of LLMs with memory-based rewards (MemReward, MEDS)."""

__version__ = "0.1.0"
