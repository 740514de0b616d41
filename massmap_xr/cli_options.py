"""Pieces of the command line shared by its commands: the ``--storage-options`` option and the
human-readable form of ``massmap info``."""

from __future__ import annotations

from massmap_xr.errors import MassmapError

__all__ = ["describe_info", "parse_storage_options", "storage_options_arg"]


def storage_options_arg(q) -> None:
    """Add ``--storage-options JSON`` (fsspec options of a store URL) to a sub-command taking a store."""
    q.add_argument("--storage-options", metavar="JSON", default=None,
                   help="fsspec options of the store URL as a JSON object, e.g. "
                        "'{\"endpoint_url\": \"http://127.0.0.1:9000\", \"key\": \"...\", \"secret\": \"...\"}', "
                        "or @FILE.json to read them from a file")


def parse_storage_options(text: str | None) -> dict | None:
    """The dict of ``--storage-options``: a JSON object, or ``@FILE`` holding one; MassmapError otherwise."""
    import json

    if text is None:
        return None
    source = "--storage-options"
    if text.startswith("@"):
        source = f"--storage-options {text}"
        try:
            with open(text[1:], encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise MassmapError(f"{source}: cannot read the file ({exc.strerror or exc}); give @FILE.json naming a "
                               "readable JSON file, or the JSON object itself") from None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise MassmapError(f"{source}: not valid JSON ({exc}); give a JSON object such as "
                           "'{\"endpoint_url\": \"http://127.0.0.1:9000\"}'") from None
    if not isinstance(value, dict):
        raise MassmapError(f"{source}: expected a JSON object of fsspec options, got a {type(value).__name__}; "
                           "give e.g. '{\"anon\": true}'")
    return value


def describe_info(info: dict) -> list[tuple[str, str]]:
    """``store_info`` as (label, text) lines for people: the store's kind and build state in words,
    the slab size (halos per chunk, what ``--halo-range`` must align to), and no empty entries."""
    shape, chunks = info["shape"], info["chunks"]
    status = info.get("status")
    kind = info.get("kind") or "materialised store"
    if kind == "materialised store":
        kind = "materialised store (posterior values on disk)"
    if status == "complete":
        state = "complete (every slab written and checksummed)"
    elif info.get("pending"):
        state = f"incomplete: an interrupted {info['pending']} (finish it or run `massmap verify`)"
    else:
        state = (f"incomplete: {info.get('chunks_written', 0)} chunks written (an interrupted build, or several writers "
                 "still at work; `massmap finalize` seals it when all are written)")
    lines = [("path", info["path"]), ("kind", kind), ("status", state),
             ("halos", f"{shape['halo']:,}"), ("mass grid", f"{shape['mass']} points"),
             ("realizations", f"{shape['realization']}"),
             ("slab size", f"{info.get('slab_halos', chunks['halo'])} halos (the --halo-range START:STOP of each "
                           "writer must be multiples of it)"),
             ("chunks", " x ".join(f"{chunks[d]} {d}" for d in ("halo", "mass", "realization")))]
    if info.get("shards"):
        lines.append(("shards", " x ".join(f"{info['shards'][d]} {d}" for d in ("halo", "mass", "realization"))))
    if "chunks_written" in info:  # a recipe store has no posterior chunks
        lines.append(("chunks written", info["chunks_written"]))
    if info.get("max_normalisation_error") is not None:
        lines.append(("max normalisation err", f"{info['max_normalisation_error']:.3g}"))
    lines.append(("size (uncompressed)", f"{info['uncompressed_bytes'] / 1e9:.3g} GB"))
    labels = {"schema_version": "schema version", "massmap_version": "written by massmap_xr", "method": "method",
              "prior": "prior", "catalog_hash": "catalogue hash", "hyper_hash": "hyperparameter hash"}
    done = {"path", "kind", "status", "pending", "shape", "chunks", "shards", "chunks_written", "slab_halos",
            "max_normalisation_error", "uncompressed_bytes"}
    for k, v in info.items():
        if k in done or v is None or v == "":
            continue
        lines.append((labels.get(k, k.replace("_", " ")), str(v)))
    return lines
