from steprl.callbacks.checkpoint import Checkpoint
from steprl.callbacks.progress import StepProgressBar
from steprl.callbacks.rac import RACMonitor
from steprl.callbacks.samples import SampleTable

__all__ = ["Checkpoint", "RACMonitor", "SampleTable", "StepProgressBar"]
