"""dapo-nb: DAPO reinforcement learning for instruct LLMs with a live multi-objective reward."""
__version__ = "0.1.0"
