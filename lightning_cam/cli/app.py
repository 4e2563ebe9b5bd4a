"""The ``lightning-cam`` command: LightningCLI subcommands and the explain tools.

``lightning-cam fit|validate|test|predict --config shapes`` are LightningCLI's subcommands
(model, data, trainer and callbacks from YAML): ``--config`` takes a packaged config's name
(:mod:`lightning_cam.configs`) or a path. ``lightning-cam demo`` is the main job, ``fit
--config shapes``, from any directory (its logs go to ``./lightning_logs``).
``lightning-cam explain`` explains pretrained or trained classifiers from the shell (see
:mod:`lightning_cam.cli.explain`).
``lightning-cam predict`` with a :class:`~lightning_cam.predict.CAMWriter` among the callbacks
explains a whole dataset and prints the summary table at the end; ``lightning-cam report OUT``
writes its HTML report (:mod:`lightning_cam.cli.report`).

Example:
    $ lightning-cam demo                                     # = lightning-cam fit --config shapes
    $ lightning-cam fit --config shapes --trainer.max_epochs 3
    $ lightning-cam fit --config my_run.yaml
    $ lightning-cam predict --config shapes_explain --ckpt_path model.ckpt
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

_TOOLS = {
    "explain": "lightning_cam.cli.explain",
    "detect": "lightning_cam.cli.detect",
    "report": "lightning_cam.cli.report",
}

#: ``lightning-cam demo [ARGS]`` is ``lightning-cam fit --config shapes [ARGS]``: the main job.
DEMO_CONFIG = "shapes"


def config_args(args: Sequence[str]) -> list[str]:
    """``args`` with every ``--config NAME`` / ``--config=NAME`` naming a packaged config
    replaced by its path; ``demo`` becomes ``fit --config shapes``.

    Raises:
        ValueError: a ``--config`` value is neither a file nor a packaged config (the message
            lists the known names).
    """
    from lightning_cam.configs import config_path, resolve_config

    out = list(args)
    if out and out[0] == "demo":
        out[:1] = ["fit", "--config", str(config_path(DEMO_CONFIG))]
    for i, arg in enumerate(out):
        if arg == "--config" and i + 1 < len(out):
            out[i + 1] = resolve_config(out[i + 1])
        elif arg.startswith("--config="):
            out[i] = "--config=" + resolve_config(arg[len("--config="):])
    return out


class CAMLightningCLI:
    """Builds LightningCLI with lightning-cam's defaults (subclass mode for model and data)."""

    @staticmethod
    def run(args: Sequence[str] | None = None) -> Any:
        from pytorch_lightning import LightningDataModule, LightningModule
        from pytorch_lightning.cli import LightningCLI

        class _CLI(LightningCLI):
            def after_predict(self) -> None:
                """Print the summary of every CAMWriter (rank zero holds it)."""
                trainer: Any = self.trainer
                for callback in trainer.callbacks:
                    path = getattr(callback, "summary_path", None)
                    if getattr(callback, "summary", None) is not None and path is not None:
                        print(path.read_text(encoding="utf-8"))
                        print(f"Written to {callback.output_dir}")

        return _CLI(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=list(args) if args is not None else None,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lightning-cam`` console script and ``python -m lightning_cam``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in _TOOLS:
        import importlib

        try:
            module = importlib.import_module(_TOOLS[args[0]])
        except ModuleNotFoundError as err:  # pragma: no cover - tool not built in this install
            print(
                f"lightning-cam {args[0]}: not available in this installation ({err})",
                file=sys.stderr,
            )
            return 2
        return int(module.main(args[1:]) or 0)
    try:
        resolved = config_args(args)
    except ValueError as err:
        print(f"lightning-cam: {err}", file=sys.stderr)
        return 2
    if argv is None:
        # From the shell, LightningCLI reads sys.argv itself (passing it as args too warns).
        sys.argv[1:] = resolved
        CAMLightningCLI.run(None)
    else:
        CAMLightningCLI.run(resolved)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
