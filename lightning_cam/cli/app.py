"""The ``lightning-cam`` command: LightningCLI subcommands and the explain tools.

``lightning-cam fit|validate|test|predict --config configs/shapes.yaml`` are LightningCLI's
subcommands (model, data, trainer and callbacks from YAML). ``lightning-cam explain`` explains
pretrained or trained classifiers from the shell (see :mod:`lightning_cam.cli.explain`).
``lightning-cam predict`` with a :class:`~lightning_cam.predict.CAMWriter` among the callbacks
explains a whole dataset and prints the summary table at the end; ``lightning-cam report OUT``
writes its HTML report (:mod:`lightning_cam.cli.report`).

Example:
    $ lightning-cam fit --config configs/shapes.yaml
    $ lightning-cam fit --config configs/shapes.yaml --trainer.max_epochs 3
    $ lightning-cam predict --config configs/shapes_explain.yaml --ckpt_path model.ckpt
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
    # From the shell, LightningCLI reads sys.argv itself (passing it as args too makes it warn).
    CAMLightningCLI.run(None if argv is None else args)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
