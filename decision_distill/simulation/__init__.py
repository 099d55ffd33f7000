"""Simulations in which a decider (decision_distill.policy) makes every decision."""
