"""Validation of bundle metadata against the MONAI bundle metadata schema shipped in resources/schema/.

MONAI's own `verify_metadata` downloads the schema named in the metadata; no machine that runs this
project can download, so the schema file is shipped (see resources/schema/NOTICE.md).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import jsonschema

from core.errors import BundleError

SCHEMA_NAME = "meta_schema_20240725.json"
SCHEMA_URL = f"https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/{SCHEMA_NAME}"
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "resources" / "schema" / SCHEMA_NAME


@lru_cache(maxsize=1)
def load_schema() -> dict:
    """The MONAI bundle metadata JSON Schema (draft 2019-09) from resources/schema/."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def validate_metadata(metadata: dict) -> None:
    """Check `metadata` (the content of configs/metadata.json) against the MONAI metadata schema.

    Raises `BundleError` naming the first failing field (JSON path) and the reason.
    """
    schema = load_schema()
    validator_cls = jsonschema.validators.validator_for(schema)
    validator = validator_cls(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(metadata))
    if error is not None:
        where = error.json_path if error.absolute_path else "metadata"
        raise BundleError(
            f"metadata does not match the MONAI bundle metadata schema {SCHEMA_NAME}: "
            f"{where}: {error.message}"
        )
