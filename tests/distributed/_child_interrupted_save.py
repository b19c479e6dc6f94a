"""Saves step 0 of a run with an orbax CheckpointManager, then is SIGKILLed in the middle of saving step 1.

The kill comes after step 1's arrays are written and before orbax commits them (its ``finalize``:
the rename of the temporary directory, or the commit-success file), i.e. the worst moment: all data
on disk, the checkpoint not yet declared complete. test_sharded_checkpoints.py then restores.
"""

from __future__ import annotations

import os
import signal
import sys

import jax
import orbax.checkpoint as ocp
from _models import init_params
from orbax.checkpoint._src.path import atomicity


def kill_before_committing_the_step(finalize):
    async def patched(self):
        if self.get_final().name == "1":  # the step directory; its items (``default``) are finalized before
            print("killing mid-save", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        return await finalize(self)

    return patched


if __name__ == "__main__":
    directory = sys.argv[1]
    params = init_params()
    with ocp.CheckpointManager(directory) as manager:
        manager.save(0, args=ocp.args.StandardSave(params))
        manager.wait_until_finished()
        print("step 0 saved", flush=True)
        for cls in (atomicity.AtomicRenameTemporaryPath, atomicity.CommitFileTemporaryPath):
            cls.finalize = kill_before_committing_the_step(cls.finalize)
        manager.save(1, args=ocp.args.StandardSave(jax.tree.map(lambda x: x + 1.0, params)))
        manager.wait_until_finished()
    print("step 1 saved: the kill did not happen", flush=True)
