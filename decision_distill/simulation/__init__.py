"""Simulations in which a decider (decision_distill.simulation.policy) makes every decision."""
