"""What the service commands share about zk models: the store, and the entries' artifacts.

``assay node run`` and ``assay validator run`` serve or check every registry
entry in the ``zk`` mode from the artifacts ``assay zk setup`` made, kept in
the service's ``zk_store`` setting (default ``$ASSAY_HOME/zk``,
:func:`assay.commands.zk.default_zk_root`). Artifacts that are missing, that
do not match their manifest, that are not the ones the registry entry pins,
or whose pinned SRS is not in the store refuse the start, naming the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prover.registry import ModelRegistry, RegistryEntry
    from prover.zk import ZkArtifacts


def zk_store_root(setting: str) -> Path:
    """The zk store a service uses: its ``zk_store`` setting, or ``$ASSAY_HOME/zk``."""
    from assay.commands.zk import default_zk_root

    return Path(setting) if setting else default_zk_root()


def registered_zk_artifacts(
    registry: ModelRegistry, root: Path
) -> dict[bytes, tuple[RegistryEntry, ZkArtifacts]]:
    """Every ``zk``-mode entry of ``registry`` with its artifacts from the store at ``root``.

    Each entry's artifacts are loaded (every file checked against the
    manifest), checked against the hashes the entry pins
    (:meth:`~prover.zk.ZkArtifacts.check_pins`), and their SRS is looked up
    by its pinned hash and re-hashed; any failure is a ``CommandError`` that
    names the model and says to run ``assay zk setup``.
    """
    from assay.arguments import CommandError
    from prover.node import ZK_MODE
    from prover.zk import ZkArtifactStore, ZkError

    store = ZkArtifactStore(root)
    found = {}
    for entry in registry.list():
        if entry.mode != ZK_MODE:
            continue
        try:
            artifacts = store.load(entry.model_id)
            artifacts.check_pins(entry.params)
            store.pinned_srs(artifacts.srs_sha256)
        except (ZkError, OSError, KeyError, ValueError, TypeError) as exc:
            raise CommandError(
                f"zk model {entry.name} ({entry.model_id.hex()}) has no usable zk artifacts: "
                f"{exc} (set it up with `assay zk setup {entry.name} --registry {registry.root} "
                f"--store {store.root}`)"
            ) from exc
        found[entry.model_id] = (entry, artifacts)
    return found
