"""MemReward: an experience memory, a heterogeneous query/think/answer graph and a GNN that predicts rewards."""
