"""Reward components: verifiers, step scorers, and the machinery that runs them safely."""
from steprl.rewards.pipeline import RewardPipeline, RewardResult, metrics
from steprl.rewards.pool import BoundedPool, ItemResult

__all__ = ["BoundedPool", "ItemResult", "RewardPipeline", "RewardResult", "metrics"]
