from steprl.callbacks.progress import StepProgressBar
from steprl.callbacks.samples import SampleTable

__all__ = ["SampleTable", "StepProgressBar"]
