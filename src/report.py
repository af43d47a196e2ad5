"""Compare the runs of a sweep: `python src/report.py [--sweep DIR | --all] [--group-by algo] [--out-dir DIR]`.

Writes a markdown table (final val/acc mean ± std over seeds per algorithm, rollouts and wall time to reach it)
and PNG learning curves from the MLflow store. See src/steprl/report.py.
"""
from steprl.report import main

if __name__ == "__main__":
    main()
