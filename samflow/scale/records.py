"""What an output folder remembers between runs, for `samflow run` and `samflow annotate` on either engine.

- **Where each item came from.** A graph item's folder holds `OUT/<item>/.samflow-item.json`, the inputs it was
  made from (local paths resolved, URIs as given), written into the staging folder so it appears with the item.
  The data engine keeps the same in `OUT/image_ids.json` (stem -> id and source). A rerun gives an item whose
  inputs are recorded under an id that id again (done before: left out); an item whose usual id is recorded for
  *other* inputs gets a new one (`x_2`, `x_3`, ...) and a warning naming both, so `shiftB/x.png` never passes for
  the results of `shiftA/x.png` when a glob is widened or shifted. A folder from before these records is adopted
  by the item of its name, as it always was.
- **Leftovers of an interrupted run** (staging folders `.<item>.partial`, temporaries `.<name>.tmp`) are removed
  when the next run starts, whichever items it plans.
- **The manifest describes the whole folder**: this run's items, then the items of earlier runs that are not
  among this run's inputs, each once: done (on disk: `skipped`, "done in an earlier run"), `failed` (as recorded)
  or `pending`. The disk decides over a stale manifest (one a killed run could not rewrite): an item on disk is
  done whatever the manifest said, and one that a manifest called done but is gone is pending.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: in each graph item's folder: {"id", "inputs": {name: source}}
ITEM_RECORD = ".samflow-item.json"
#: a graph item is built in `OUT/.<item>.partial` and renamed to `OUT/<item>` when it succeeds
STAGING_SUFFIX = ".partial"
#: fileio's atomic writes go through `.<name>.tmp` beside the target
TEMPORARY_SUFFIX = ".tmp"

EARLIER = "done in an earlier run"
WARN_RENAMED = 5  # renamed items named one by one in the log
NOT_PLANNED = "not among this run's inputs"

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

Item = tuple[str, dict[str, Any]]


def is_uri(spec: str | Path) -> bool:
    """True for `scheme://...` (read through pyarrow); False for local paths, including Windows drive letters."""
    return isinstance(spec, str) and bool(_SCHEME.match(spec))


def source_of(path: str | Path) -> str:
    """What identifies an input across runs: a local path resolved (the working folder and symlinks do not
    matter), a URI as given."""
    text = str(path)
    return text if is_uri(text) else str(Path(text).resolve())


def sources_of(inputs: Mapping[str, Any]) -> dict[str, str]:
    return {name: source_of(path) for name, path in inputs.items()}


def staging_dir(out: Path, item_id: str) -> Path:
    return out / f".{item_id}{STAGING_SUFFIX}"


def item_record(item_id: str, inputs: Mapping[str, Any]) -> bytes:
    """The bytes of `OUT/<item>/.samflow-item.json` (the same from either engine)."""
    return (json.dumps({"id": item_id, "inputs": sources_of(inputs)}, indent=2) + "\n").encode()


def scan_items(out: Path) -> dict[str, dict[str, str] | None]:
    """Every item folder in `out`: id -> the inputs recorded in it (None: a folder without a readable record,
    e.g. from before records were kept)."""
    found: dict[str, dict[str, str] | None] = {}
    try:
        entries = sorted(os.scandir(out), key=lambda entry: entry.name)
    except FileNotFoundError:
        return found
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        try:
            data = json.loads((Path(entry.path) / ITEM_RECORD).read_text())
            found[entry.name] = {str(k): str(v) for k, v in data["inputs"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            found[entry.name] = None
    return found


def settle_ids(planned: Sequence[tuple[str, Hashable]], known: Mapping[str, Hashable | None]
               ) -> tuple[list[str], list[int]]:
    """Final ids for `planned` (usual id, identity) pairs, given what the folder knows (id -> identity; None: an
    id of unknown identity, adopted by the planned item of that id). Returns the ids and the indexes renamed.

    1. An identity known under an id gets that id again (resume, also when the listing changed around it).
    2. Else its usual id, unless that is known for another identity or given to another planned item.
    3. Else the first free `<usual id>_N` (N = 2, 3, ...)."""
    by_identity: dict[Hashable, str] = {}
    for item_id, identity in known.items():
        if identity is not None:
            by_identity.setdefault(identity, item_id)
    ids: list[str | None] = [None] * len(planned)
    claimed: set[str] = set()
    for index, (_, identity) in enumerate(planned):
        item_id = by_identity.get(identity)
        if item_id is not None and item_id not in claimed:
            ids[index] = item_id
            claimed.add(item_id)
    usual = {default for (default, _), item_id in zip(planned, ids) if item_id is None}
    renamed = []
    for index, (default, _) in enumerate(planned):
        if ids[index] is not None:
            continue
        if default in claimed or known.get(default) is not None:
            n = 2
            while (name := f"{default}_{n}") in claimed or name in known or name in usual:
                n += 1
            ids[index] = name
            renamed.append(index)
        else:
            ids[index] = default
        claimed.add(ids[index])  # type: ignore[arg-type]
    return [item_id for item_id in ids if item_id is not None], renamed


def _identity(sources: Mapping[str, str]) -> str:
    return json.dumps(dict(sources), sort_keys=True)


def settle_items(items: Sequence[Item], known: Mapping[str, Mapping[str, str] | None], out: Path) -> list[Item]:
    """`items` with ids settled against the item folders `known` in `out` (`scan_items`): see `settle_ids`."""
    identities = {item_id: None if inputs is None else _identity(inputs) for item_id, inputs in known.items()}
    planned = [(item_id, _identity(sources_of(inputs))) for item_id, inputs in items]
    ids, renamed = settle_ids(planned, identities)
    if len(renamed) > WARN_RENAMED:
        log.warning("%d items of this run have ids whose folders in %s hold other inputs' results (a widened or "
                    "shifted listing, or changed shared inputs?); they get new ids, e.g.:", len(renamed), out)
    for index in renamed[:WARN_RENAMED]:
        default, inputs = items[index]
        holder = known.get(default)
        if holder is not None:
            log.warning("%s holds the results of %s; %s is written to %s instead", out / default,
                        _describe(holder), _describe(sources_of(inputs)), out / ids[index])
        else:
            log.warning("id %s is another input's; %s is written to %s", default, _describe(sources_of(inputs)),
                        out / ids[index])
    return [(item_id, inputs) for item_id, (_, inputs) in zip(ids, items)]


def _describe(sources: Mapping[str, str]) -> str:
    values = list(sources.values())
    return values[0] if len(values) == 1 else ", ".join(f"{k}={v}" for k, v in sources.items())


def remove_leftovers(out: Path, folders: Sequence[str] = ()) -> list[Path]:
    """Remove what interrupted runs left in `out` (and its subfolders `folders`): staging folders
    `.<item>.partial` and temporaries `.<name>.tmp`. Returns what was removed."""
    removed = []
    for folder in [out, *(out / name for name in folders)]:
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            if not entry.name.startswith("."):
                continue
            if entry.name.endswith(STAGING_SUFFIX) and entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            elif entry.name.endswith(TEMPORARY_SUFFIX) and entry.is_file(follow_symlinks=False):
                Path(entry.path).unlink(missing_ok=True)
            else:
                continue
            removed.append(Path(entry.path))
    if removed:
        log.info("removed %d leftover(s) of an interrupted run in %s", len(removed), out)
    return removed


def earlier_items(manifest: Path) -> list[dict[str, Any]]:
    """The item records of the manifest an earlier run left (none when it is missing or unreadable)."""
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return []
    items = data.get("items") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return []
    return [item for item in items if isinstance(item, dict) and isinstance(item.get("id"), str)]


def carried_over(listed: Sequence[Mapping[str, Any]], earlier: Sequence[Mapping[str, Any]],
                 known: Mapping[str, Mapping[str, Any] | None], is_done: Callable[[str], bool]
                 ) -> list[dict[str, Any]]:
    """The records of the folder's items that this run does not list (`listed`): those of the earlier manifest,
    then those only the disk knows (`known`: id -> inputs, e.g. committed by a run killed before its manifest),
    each once, with its status decided by the disk. Each is marked `"earlier_run": true` (a run's exit status
    counts its own items only)."""
    seen = {item["id"] for item in listed}
    carried: list[dict[str, Any]] = []
    for record in earlier:
        item_id = record["id"]
        if item_id in seen:
            continue
        seen.add(item_id)
        base = {"id": item_id, "inputs": record.get("inputs") or dict(known.get(item_id) or {})}
        if is_done(item_id):
            carried.append({**base, "status": "skipped", "reason": f"{EARLIER} ({NOT_PLANNED})"})
        elif record.get("status") == "failed":
            carried.append({**record, "reason": f"failed in an earlier run ({NOT_PLANNED})"})
        elif record.get("status") == "pending":
            carried.append({**base, "status": "pending", "reason": f"not done yet ({NOT_PLANNED})"})
        else:
            carried.append({**base, "status": "pending",
                            "reason": f"recorded as done, but its outputs are gone ({NOT_PLANNED})"})
    for item_id, inputs in known.items():
        if item_id in seen or inputs is None:
            continue
        seen.add(item_id)
        status = ("skipped", f"{EARLIER} ({NOT_PLANNED})") if is_done(item_id) else (
            "pending", f"not done yet ({NOT_PLANNED})")
        carried.append({"id": item_id, "inputs": dict(inputs), "status": status[0], "reason": status[1]})
    return [{**record, "earlier_run": True} for record in carried]


def count(records: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    counts = {"ok": 0, "failed": 0, "skipped": 0, "pending": 0}
    for record in records:
        counts[record["status"]] += 1
    return counts
