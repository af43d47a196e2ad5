"""PROPA (``algo=propa``): MCTS over reasoning steps, sibling GRPO on node values, interleaved SFT and a PRM.

``module``: the LightningModule (the algorithm box: one outer iteration per training step); ``parts``: the PRM
head, the MCTS step policy over the HF engine, the tree-search collector and the final-step tests.
"""
from steprl.algos.propa.module import PROPA, sft_schedule
from steprl.algos.propa.parts import EngineStepPolicy, PRMHead, TreeSearch, check_final_step, clean_step, final_step_test

__all__ = ["PROPA", "sft_schedule", "EngineStepPolicy", "PRMHead", "TreeSearch", "check_final_step", "clean_step",
           "final_step_test"]
