"""Reference implementations in plain NumPy (seed 004), used to check the framework."""
