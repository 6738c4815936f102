"""What KubeArmor's CRD says of each corpus file: the `Crd` column of
agent/tests/kubearmor_corpus.rs. Run from this directory with KubeArmor's
deployments/CRD/KubeArmorHostPolicy.yaml (at the commit in SOURCES):

    python3 crd_check.py KubeArmorHostPolicy.yaml   # needs python3-yaml, python3-jsonschema

As `kubectl apply` with its default strict field validation and the API server
would: the schema (types, enums, patterns, required keys), unknown and duplicate
fields, and metadata.name as a Kubernetes object name. One JSON line per file.
"""
import json
import re
import sys

import jsonschema
import yaml


def strict(schema):
    """Unknown fields are errors (kubectl's strict field validation)."""
    if isinstance(schema, dict):
        if schema.get("type") == "object" and "properties" in schema:
            schema.setdefault("additionalProperties", False)
        for value in schema.values():
            strict(value)
    elif isinstance(schema, list):
        for value in schema:
            strict(value)


class DuplicateKeyLoader(yaml.SafeLoader):
    pass


def construct_mapping(loader, node, deep=False):
    keys = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in keys:
            raise ValueError(f"duplicate field {key!r} (line {key_node.start_mark.line + 1})")
        keys.add(key)
    return loader.construct_mapping(node, deep)


DuplicateKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping
)
NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def main():
    crd = yaml.safe_load(open(sys.argv[1]))
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    strict(schema)
    schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta: checked below
    validator = jsonschema.Draft4Validator(schema)
    for line in open("SOURCES"):
        if line.startswith("#") or not line.strip():
            continue
        path = line.split("\t")[0]
        try:
            errors = []
            for doc in yaml.load_all(open(path), Loader=DuplicateKeyLoader):
                if doc is None:
                    continue
                for e in validator.iter_errors(doc):
                    errors.append(f"{'.'.join(map(str, e.absolute_path))}: {e.message}")
                meta = doc.get("metadata") or {}
                name = meta.get("name", "")
                if not isinstance(name, str) or not NAME.match(name) or len(name) > 253:
                    errors.append(f"metadata.name {name!r} is not a Kubernetes object name")
                unknown = set(meta) - {"name", "namespace", "labels", "annotations"}
                if unknown:
                    errors.append(f"metadata: unknown fields {sorted(unknown)}")
        except Exception as e:  # a YAML error or a duplicate field
            errors = [str(e)]
        verdict = "refuses" if errors else "accepts"
        print(json.dumps({"file": path, "crd": verdict, "why": errors}))


main()
