"""The small causal LM student: its answers, its LoRA training stage and its perplexity report."""
