"""Plumbing every part uses: one-line user errors, atomic writes, the user cache
directory, params.yaml. Imports nothing of the project."""
