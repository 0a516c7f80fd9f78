"""Generate ``schemas/records/*.schema.json`` from the record models in ``configd_core.records``.

The models are the one definition of each record format; the JSON Schemas are derived for readers outside Python
(``consul kv get`` users, other languages). ``make schemas`` rewrites them; a test keeps them in sync.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from configd_core.records import RECORD_MODELS


def render() -> dict[str, str]:
    """File name -> pretty JSON Schema text, one per record model."""
    rendered = {}
    for slug, model in RECORD_MODELS.items():
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"urn:configd:record:{slug}",
            **model.model_json_schema(mode="serialization"),
        }
        rendered[f"{slug}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return rendered


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else "schemas") / "records"
    out.mkdir(parents=True, exist_ok=True)
    for filename, text in render().items():
        (out / filename).write_text(text)
        print(out / filename)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
