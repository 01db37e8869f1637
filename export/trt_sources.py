"""The fp32 graphs the TensorRT builder starts from, and the bundle manifest's engine entries.

:func:`builder_fp32_models` (each stage's fp32 ONNX, an fp32 copy of a Q/DQ model where
needed), :func:`merge_engine_entries` and :func:`_with_engine_sources` (``manifest["engines"]``
and ``manifest["engine_sources"]``), :func:`write_manifest` (atomic ``manifest.json``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Sequence


def builder_fp32_models(bundle) -> Dict[str, dict]:
    """The fp32 ONNX of each stage that engines (and the fp16 / int8 ONNX) are made from.

    -> ``{stage: {"path": Path, "file": bundle-relative str, "sha256": str, "derived_from":
    dict or None}}``. An fp32 stage gives its own model (``derived_from`` None); any other
    precision (int8 Q/DQ) gives an fp32 copy written atomically to
    ``<bundle>/engines/onnx/<stage>.fp32.onnx`` by :func:`export.graph_fixes.dequantize_qdq`
    (``derived_from``: the source's precision and sha256). The bundle's models and manifest
    are untouched. Raises ``ValueError`` for a Q/DQ pattern the fold does not know.
    """
    import onnx

    from runtime.backends.tensorrt import source_relpath
    from runtime.bundle import sha256_file

    from .graph_fixes import dequantize_qdq

    out = {}
    for stage, info in bundle.stages.items():
        precision = bundle.manifest["models"][stage].get("precision", "fp32")
        if precision == "fp32":
            out[stage] = {"path": Path(info.path), "file": Path(info.path).name, "sha256": info.sha256,
                          "derived_from": None}
            continue
        rel = source_relpath(stage, "fp32")
        dst = Path(bundle.root) / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.tmp")
        onnx.save(dequantize_qdq(onnx.load(str(info.path))), str(tmp))
        os.replace(tmp, dst)
        out[stage] = {"path": dst, "file": rel, "sha256": sha256_file(dst),
                      "derived_from": {"precision": precision, "sha256": info.sha256,
                                       "how": "weights dequantised, activation Q/DQ removed"}}
    return out


# ----------------------------------------------------------------------------- manifest

def write_manifest(root: Path, manifest: dict) -> None:
    """Replace ``root/manifest.json`` atomically (:func:`runtime.outputs.atomic_write_bytes`: a uniquely named
    temp file in the folder, flushed to disk, readable like the rest of the bundle (0666 less the umask), then
    renamed over the old one). Raises OSError."""
    from runtime.bundle import MANIFEST
    from runtime.outputs import atomic_write_bytes

    atomic_write_bytes(Path(root) / MANIFEST, json.dumps(manifest, indent=1).encode())


def merge_engine_entries(manifest: dict, entries: Sequence[dict]) -> dict:
    """``manifest`` with ``entries`` added to ``manifest["engines"]``, replacing any entry for the same file."""
    files = {e["file"] for e in entries}
    kept = [e for e in manifest.get("engines", []) or [] if e.get("file") not in files]
    return {**manifest, "engines": kept + list(entries)}



def _with_engine_sources(manifest: dict, sources: dict) -> dict:
    """A copy of ``manifest`` with ``sources`` ({stage: {precision: entry}}) merged into ``engine_sources``."""
    manifest = dict(manifest)
    es = {k: dict(v) for k, v in (manifest.get("engine_sources") or {}).items()}
    for stage, by_p in sources.items():
        es.setdefault(stage, {}).update(by_p)
    if es:
        manifest["engine_sources"] = es
    return manifest
