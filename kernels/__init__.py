"""Triton kernels of daenr_fast, installed as ``daenr_fast.kernels``.

Importing this package never imports Triton; each kernel module does, and is only imported by the
``triton`` backend once it is known to be usable.
"""
