"""Output folders that resume: the parameters are recorded before anything else is written."""

from __future__ import annotations

import json
from pathlib import Path

from ..utils.io import atomic_write_json
from .folder import DataError


def claim_folder(out: Path, record: str, params: dict, what: str, key: str | None = None) -> None:
    """Record ``params`` in ``out/record`` before writing anything else, so that a rerun with the same
    parameters resumes, and refuse (DataError) a folder that holds other parameters or other files.
    ``key``: the record holds the parameters under this key (beside results written later)."""
    meta = out / record
    if meta.exists():
        try:
            previous = json.loads(meta.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"{meta}: unreadable ({e}); delete {out} or choose another folder") from e
        if key is not None:
            previous = previous.get(key) if isinstance(previous, dict) else None
        if not isinstance(previous, dict):
            raise DataError(f"{meta}: no parameters recorded; delete {out} or choose another folder")
        if previous != params:
            changed = sorted(k for k in params.keys() | previous.keys() if params.get(k) != previous.get(k))
            raise DataError(
                f"{out} already holds {what} with other parameters ({', '.join(changed)} differ: "
                f"{ {k: previous.get(k) for k in changed} }); delete it or choose another folder"
            )
    elif out.exists() and any(out.iterdir()):
        raise DataError(f"{out} exists and is not empty (no {record}); choose an empty or new folder")
    else:
        atomic_write_json(meta, params if key is None else {key: params})
