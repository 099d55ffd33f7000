"""Scoring students against the teacher: evaluate, the noise floor, teacher stability,
effects, the games report and the figures."""
