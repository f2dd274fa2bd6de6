"""Hydra callbacks configured in conf/*.yaml under `hydra.callbacks`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from vae_cli.errors import VaeError


def reserve_folder(base: Path) -> Path:
    """Create `base`, or `base_1`, `base_2`, ... if taken; mkdir is atomic, so two runs started in the
    same second never share a folder."""
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VaeError(
            f"cannot create the output folder {base.parent}: {e.strerror}; "
            f"choose another with hydra.run.dir=<path>"
        ) from None
    for n in range(1000):
        candidate = base if n == 0 else base.with_name(f"{base.name}_{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
        except OSError as e:
            raise VaeError(
                f"cannot create the output folder {candidate}: {e.strerror}; "
                f"choose another with hydra.run.dir=<path>"
            ) from None
    raise VaeError(f"too many runs in {base.parent} this second")


class UniqueRunDir(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._reserve(config, "run")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._reserve(config, "sweep")

    @staticmethod
    def _reserve(config: DictConfig, mode: str) -> None:
        if any(o.startswith(f"hydra.{mode}.dir=") for o in config.hydra.overrides.hydra):
            return  # a folder the user chose explicitly is used as it is
        node = config.hydra[mode]
        folder = reserve_folder(Path(str(OmegaConf.select(config, f"hydra.{mode}.dir"))))
        with read_write(node), open_dict(node):
            node.dir = str(folder)
        if mode == "sweep":
            # Each job recomposes its config from the overrides: record the folder there too.
            with read_write(config.hydra.overrides):
                config.hydra.overrides.hydra.append(f"hydra.sweep.dir={folder}")
