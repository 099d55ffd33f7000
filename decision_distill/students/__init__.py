"""The small students: input encoding, architectures, losses and the training loop."""
