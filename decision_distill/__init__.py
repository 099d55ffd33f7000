"""Distil a teacher LLM's decision policy P(action | state) into cheap students."""

__version__ = "0.1.0"
