"""C++ (``cpu/``) and CUDA (``cuda/``) sources, shipped as package data and compiled on first use."""
