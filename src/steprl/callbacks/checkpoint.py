"""Checkpoints that survive a crash: ``Checkpoint`` (a ModelCheckpoint) and ``AtomicCheckpointIO`` (its file IO).

``Checkpoint`` always leaves ``last.ckpt``, also when max_steps is not a multiple of the interval, and installs
``AtomicCheckpointIO`` as the trainer's checkpoint IO when the strategy uses Lightning's plain
``TorchCheckpointIO`` (single device, DDP; sharded strategies keep their own).

``AtomicCheckpointIO`` saves a local checkpoint to a temporary file BESIDE the final one (same directory, so the
same filesystem), fsyncs it, renames it over the final path (atomic on POSIX) and fsyncs the directory. A
``kill -9`` or a power cut at any moment leaves either the previous checkpoint or the new one, never a torn file.
(Lightning's own save writes the temporary file in ``$TMPDIR`` and, when that is another filesystem, copies it
over the final path: a kill during the copy destroys the previous ``last.ckpt``.) Temporary files of
interrupted saves (``.<name>.tmp-<pid>-<random>``, whose process is gone) are removed at the next save or load.
Loading a file that was cut off raises :class:`CheckpointIncomplete` naming the file, instead of a bare
``EOFError`` from deep inside ``torch.load``. Remote paths (``s3://``, ...) go through Lightning's IO unchanged.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

log = logging.getLogger(__name__)

__all__ = ["Checkpoint", "AtomicCheckpointIO", "CheckpointIncomplete", "atomic_save", "check_complete",
           "clean_interrupted_saves"]

_TMP_MARK = ".tmp-"
_TMP_RE = re.compile(r"^\..+\.tmp-(?P<pid>\d+)-[^/]+$")
_ZIP_MAGIC = b"PK\x03\x04"


class CheckpointIncomplete(RuntimeError):
    """A checkpoint file that was cut off while being written (or is otherwise not a whole checkpoint)."""


def _is_local(path: Any) -> bool:
    s = str(path)
    return "://" not in s or s.startswith("file://")


def _local(path: Any) -> Path:
    s = str(path)
    return Path(s[len("file://"):] if s.startswith("file://") else s)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():  # ours: a leftover of an earlier process that had our pid (a restarted container)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, someone else's
        return True
    return True


def clean_interrupted_saves(directory: str | Path) -> list[Path]:
    """Remove the temporary files that interrupted saves left in ``directory`` (their writer is gone)."""
    removed = []
    d = Path(directory)
    if not d.is_dir():
        return removed
    for p in d.iterdir():
        m = _TMP_RE.match(p.name)
        if m and not _pid_alive(int(m["pid"])):
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    if removed:
        log.info("removed %d temporary file(s) of interrupted checkpoint saves in %s", len(removed), d)
    return removed


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems cannot fsync a directory
        pass
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj)`` to ``path`` so that ``path`` is, at every moment, either its old content or the new one."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_interrupted_saves(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{_TMP_MARK}{os.getpid()}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def check_complete(path: str | Path) -> None:
    """Raise :class:`CheckpointIncomplete` when ``path`` is empty or a torch zip archive without its end (the
    central directory is written last: a cut-off file lacks it). Other formats are left to ``torch.load``."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise CheckpointIncomplete(_incomplete_message(path, "the file is empty"))
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == _ZIP_MAGIC:
        try:
            with zipfile.ZipFile(path):
                pass
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            raise CheckpointIncomplete(_incomplete_message(path, f"{size} bytes, the archive has no end: {e}")) from None


def _incomplete_message(path: Path, why: str) -> str:
    others = sorted((p for p in path.parent.glob("*.ckpt") if p != path), key=lambda p: p.stat().st_mtime)
    hint = f"; other checkpoints there: {', '.join(p.name for p in others[-3:])}" if others else ""
    return (f"checkpoint {path} is incomplete ({why}): it was cut off while being written (a killed save or a "
            f"full disk). Resume from another checkpoint (ckpt_path=...){hint}")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` with crash-safe local saves and a clear error on a cut-off file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_save(checkpoint, _local(path))

    def load_checkpoint(self, path, map_location: Any = lambda storage, loc: storage,
                        weights_only: bool | None = None) -> dict[str, Any]:
        if _is_local(path):
            local = _local(path)
            if not local.exists():
                raise FileNotFoundError(f"Checkpoint file not found: {local}")
            clean_interrupted_saves(local.parent)
            check_complete(local)
            try:
                return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
            except (EOFError, zipfile.BadZipFile) as e:
                raise CheckpointIncomplete(_incomplete_message(local, f"{type(e).__name__}: {e}")) from None
            except RuntimeError as e:
                if "PytorchStreamReader" in str(e) or "failed finding central directory" in str(e):
                    raise CheckpointIncomplete(_incomplete_message(local, f"{type(e).__name__}: {e}")) from None
                raise
        return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)


class Checkpoint(ModelCheckpoint):
    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        # before the trainer restores ckpt_path: loading goes through the IO installed here as well
        strategy = trainer.strategy
        if type(strategy.checkpoint_io) is TorchCheckpointIO:
            strategy.checkpoint_io = AtomicCheckpointIO()

    def on_train_end(self, trainer, pl_module) -> None:
        super().on_train_end(trainer, pl_module)
        if self.save_last and self.dirpath and self._last_global_step_saved != trainer.global_step:
            trainer.save_checkpoint(os.path.join(self.dirpath, self.CHECKPOINT_NAME_LAST + self.FILE_EXTENSION))
            self._last_global_step_saved = trainer.global_step
