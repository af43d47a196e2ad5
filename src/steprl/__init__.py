"""steprl: reinforcement learning of language models with process / dense rewards."""

__version__ = "0.1.0"
