"""``python -m mrdabak_pipeline.external.launcher torchrun|accelerate <their arguments>``.

Runs torchrun (``torch.distributed.run``) or ``accelerate launch`` in this process, under the same
parent-death watcher as the training script: when the Dagster run worker that started it is
killed, the launcher ends (SIGTERM: torchrun's agent stops its workers); when the launcher itself is
killed, each worker notices its own new parent and ends (`train_entry.watch_parent`). Either way no
training process outlives its run to hold the accelerator or write into a retry's folder.
"""

from __future__ import annotations

import sys

from mrdabak_pipeline.external.train_entry import watch_parent


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in {"torchrun", "accelerate"}:
        raise SystemExit("usage: python -m mrdabak_pipeline.external.launcher torchrun|accelerate ARGS...")
    watch_parent()
    which, args = argv[0], argv[1:]
    if which == "torchrun":
        from torch.distributed.run import main as torchrun

        torchrun(args)
        return
    from accelerate.commands.launch import launch_command, launch_command_parser

    launch_command(launch_command_parser().parse_args(args))


if __name__ == "__main__":
    main()
