"""The Hydra job this process runs: its command-line overrides and config-group choices, or, for a resumed run,
the checkpoint's (``steprl.resume`` sets them; ``steprl.cli.preflight`` clears them before each job of a
multirun). The config checks read the choices, the checkpoint stores both."""
from __future__ import annotations

#: the overrides the current run was made with (the resumed run's own plus today's): stored in its checkpoints
effective_overrides: list[str] | None = None
#: the config-group choices of the run being resumed (Hydra's own would be today's defaults)
effective_choices: dict[str, str] | None = None


def reset() -> None:
    """Forget a previous job's resume (one Hydra job after another in a multirun)."""
    global effective_overrides, effective_choices
    effective_overrides = effective_choices = None


def task_overrides() -> list[str]:
    """The running Hydra job's command-line overrides ([] outside a Hydra app)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except Exception:  # noqa: BLE001 - composed without a Hydra app
        return []


def hydra_choices() -> dict[str, str]:
    """The running Hydra job's config-group choices ({} outside a Hydra app)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return {k: v for k, v in HydraConfig.get().runtime.choices.items()
                if v is not None and not k.startswith("hydra")}
    except Exception:  # noqa: BLE001 - composed without a Hydra app
        return {}
