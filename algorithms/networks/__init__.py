"""Neural networks of the built-in algorithms, in plain PyTorch (torch is an optional dependency: import these
modules only where a network is trained or served)."""
