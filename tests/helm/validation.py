"""Offline validation of rendered objects, with unknown fields rejected everywhere.

- Built-in kinds: `kubernetes-validate` (the Kubernetes OpenAPI schemas, strict).
- KEDA kinds: `jsonschema` against the vendored CRDs' openAPIV3Schema, made strict the way the API
  server's strict field validation behaves (`additionalProperties: false` on every object that
  lists its properties). kubernetes-validate only warns for kinds it does not know, so those are
  never handed to it.
- Prometheus Operator kinds: a hand-written schema of the fields the chart uses (below), equally
  strict. It is not the upstream CRD; it stops typos and wrong types in our templates.

Any other kind fails: a new kind needs a validator before it can ship.
"""

from __future__ import annotations

import copy
import functools
import hashlib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

KEDA_CRD_DIR = Path(__file__).resolve().parent / "crds" / "keda"
KEDA_CRD_SHA256 = {
    "keda.sh_scaledobjects.yaml": "af35555862a83933b074af14ad439c4b4ceabaf4daa3e9338e9b23e36d308d80",
    "keda.sh_scaledjobs.yaml": "8805cd6c5b05161fb1541726e2c32c8e2990f435649fa74cbc616600b84b583a",
    "keda.sh_triggerauthentications.yaml": "275307b4cb19ca8f0f506a879282aa4c67587ac16ec757f494d6585c5c185d65",
    "keda.sh_clustertriggerauthentications.yaml": (
        "177413d75f11b76ba7bf98aef200a1736245254197c7c1d8877fc7a0fc641df4"
    ),
}
KEDA_FILE_BY_KIND = {
    "ScaledObject": "keda.sh_scaledobjects.yaml",
    "ScaledJob": "keda.sh_scaledjobs.yaml",
    "TriggerAuthentication": "keda.sh_triggerauthentications.yaml",
    "ClusterTriggerAuthentication": "keda.sh_clustertriggerauthentications.yaml",
}
KUBE_MINOR = "1.33"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def strictify(schema: Any) -> Any:
    """Reject unknown fields: add additionalProperties false where an object lists its properties."""
    if isinstance(schema, dict):
        out = {key: strictify(value) for key, value in schema.items()}
        if (
            out.get("type") == "object"
            and "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strictify(item) for item in schema]
    return schema


@functools.cache
def keda_schema(kind: str) -> dict[str, Any]:
    path = KEDA_CRD_DIR / KEDA_FILE_BY_KIND[kind]
    crd = yaml.safe_load(path.read_text(encoding="utf-8"))
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    schema = strictify(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
    # The API server validates metadata itself (and the CRD leaves it open).
    schema["properties"]["metadata"] = {"type": "object"}
    assert isinstance(schema, dict)
    return schema


# ------------------------------------------------------------ Prometheus Operator (subset) ----------

_DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}
_STRMAP = {"type": "object", "additionalProperties": {"type": "string"}}
_LABEL_SELECTOR = {
    "type": "object",
    "properties": {
        "matchLabels": _STRMAP,
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"type": "string"},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}


def _resource(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
        },
    }


PROMETHEUS_SCHEMAS: dict[str, dict[str, Any]] = {
    "ServiceMonitor": strictify(
        _resource(
            {
                "type": "object",
                "required": ["selector", "endpoints"],
                "properties": {
                    "jobLabel": {"type": "string"},
                    "selector": _LABEL_SELECTOR,
                    "namespaceSelector": {
                        "type": "object",
                        "properties": {
                            "any": {"type": "boolean"},
                            "matchNames": {"type": "array", "items": {"type": "string"}},
                        },
                    },
                    "endpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "properties": {
                                "port": {"type": "string"},
                                "targetPort": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
                                "path": {"type": "string"},
                                "scheme": {"enum": ["http", "https"]},
                                "interval": _DURATION,
                                "scrapeTimeout": _DURATION,
                                "honorLabels": {"type": "boolean"},
                            },
                        },
                    },
                },
            }
        )
    ),
    "PrometheusRule": strictify(
        _resource(
            {
                "type": "object",
                "properties": {
                    "groups": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name"],
                            "properties": {
                                "name": {"type": "string", "minLength": 1},
                                "interval": _DURATION,
                                "rules": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["expr"],
                                        "properties": {
                                            "alert": {"type": "string"},
                                            "record": {"type": "string"},
                                            "expr": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
                                            "for": _DURATION,
                                            "keep_firing_for": _DURATION,
                                            "labels": _STRMAP,
                                            "annotations": _STRMAP,
                                        },
                                    },
                                },
                            },
                        },
                    }
                },
            }
        )
    ),
}


def validate(obj: dict[str, Any]) -> list[str]:
    """Every problem with one rendered object, as readable lines; empty when it is valid."""
    kind, api = obj.get("kind"), obj.get("apiVersion", "")
    if api.startswith("keda.sh/"):
        validator = jsonschema.Draft7Validator(keda_schema(kind), format_checker=jsonschema.FormatChecker())
        return [_describe(error) for error in validator.iter_errors(obj)]
    if api.startswith("monitoring.coreos.com/"):
        if kind not in PROMETHEUS_SCHEMAS:
            return [f"no validator for {api} {kind}"]
        validator = jsonschema.Draft7Validator(PROMETHEUS_SCHEMAS[kind])
        return [_describe(error) for error in validator.iter_errors(obj)]
    try:
        kubernetes_validate.validate(obj, KUBE_MINOR, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return [f"no Kubernetes schema for {api} {kind}: not validated"]
    except kubernetes_validate.ValidationError as exc:
        return [f"{kind}: {exc}"]
    return []


def _describe(error: jsonschema.ValidationError) -> str:
    where = ".".join(str(part) for part in error.absolute_path) or "(root)"
    return f"{where}: {error.message}"
