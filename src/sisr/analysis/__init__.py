"""Workflows that look at a network rather than use it: what it costs (``sisr.analysis.profile``) and what
it looks at (``sisr.analysis.lam``).

The modules here sit on top of the networks, the checkpoint loader and the image reader, and below the
command line: each is plain functions with typed arguments that a Python user can call directly.
"""
