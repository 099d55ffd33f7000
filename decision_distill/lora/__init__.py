"""LoRA machinery shared by the decision and persona adapters: the adapter and its
files, the one training loop (trainer), checkpoints, merging."""
