#!/usr/bin/env python3
"""Validate AAS v3.0 JSON environments (IDTA-01001 v3.0, official JSON schema form).

Usage:
    .venv/bin/python tests/validators/check_aas.py [--test-engines] [--check-refs] [-q] FILE... (or - for stdin)

Each file is checked by independent readers:

  1. aas-core3.0 (``aas_core3``): ``jsonization.environment_from_jsonable`` (the
     JSON schema form) followed by ``verification.verify`` (the metamodel
     constraints AASd-*, XSD lexical forms of values, idShort patterns, ...).
  2. basyx-python-sdk (``basyx.aas``): the JSON deserializer with
     ``failsafe=False``; an exception or a WARNING/ERROR log record counts as a
     finding.
  3. with ``--test-engines``: aas-test-engines' file check
     (``aas_test_engines.file.check_json_data``); any ERROR/CRITICAL result
     counts as a finding.
  4. with ``--check-refs``: identifiers unique within the file and every shell's
     submodel reference resolving to a submodel in the same file (for
     self-contained templates such as aas-templates/*.aas.json).

Every finding is printed with its path. One summary line per file:
    OK cnc1.aas.json: 1 shells, 3 submodels, 0 findings
Exit status: 0 if all files are clean, 1 if any finding, 2 on usage or missing
checker packages.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
from typing import Any, List, Optional, Tuple

Finding = Tuple[str, str, str]  # (checker, path, message)


def _import_checkers(test_engines: bool):
    missing = []
    try:
        import aas_core3.jsonization  # noqa: F401
        import aas_core3.verification  # noqa: F401
    except ImportError:
        missing.append("aas-core3.0")
    try:
        import basyx.aas.adapter.json  # noqa: F401
    except ImportError:
        missing.append("basyx-python-sdk")
    if test_engines:
        try:
            import aas_test_engines.file  # noqa: F401
        except ImportError:
            missing.append("aas-test-engines")
    if missing:
        sys.stderr.write(
            "check_aas.py: missing Python packages: "
            + ", ".join(missing)
            + " (pip install " + " ".join(missing) + ")\n"
        )
        sys.exit(2)


# --------------------------------------------------------------------------- paths


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _describe(jsonable: Any, steps: List[Any]) -> str:
    """JSON pointer of `steps`, plus the idShort path of the deepest element on it."""
    pointer = "/" + "/".join(str(s) for s in steps) if steps else "/"
    names: List[str] = []
    node = jsonable
    parent_is_list_elem = False
    for step in steps:
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError):
            break
        if isinstance(node, dict) and "modelType" in node:
            if isinstance(step, int) and parent_is_list_elem:
                names.append(f"[{step}]")
            elif node.get("idShort"):
                names.append(("." if names else "") + str(node["idShort"]))
            parent_is_list_elem = node.get("modelType") == "SubmodelElementList"
    return f"{pointer} ({''.join(names)})" if names else pointer


def _steps(path: Any, camel: bool) -> List[Any]:
    out: List[Any] = []
    for seg in getattr(path, "segments", []):
        if hasattr(seg, "index"):
            out.append(seg.index)
        else:
            out.append(_camel(seg.name) if camel else seg.name)
    return out


# --------------------------------------------------------------------------- aas-core3.0


def check_aas_core(jsonable: Any) -> List[Finding]:
    import aas_core3.jsonization as jsonization
    import aas_core3.verification as verification

    try:
        env = jsonization.environment_from_jsonable(jsonable)
    except jsonization.DeserializationException as exc:
        where = _describe(jsonable, _steps(exc.path, camel=False))
        return [("aas-core3", where, f"deserialization: {exc.cause}")]
    findings: List[Finding] = []
    for error in verification.verify(env):
        # verification paths use the Python attribute names (submodel_elements); the JSON
        # names are their camelCase forms
        findings.append(("aas-core3", _describe(jsonable, _steps(error.path, camel=True)), error.cause))
    return findings


# --------------------------------------------------------------------------- basyx-python-sdk


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.records: List[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def check_basyx(text: str) -> List[Finding]:
    from basyx.aas.adapter.json import read_aas_json_file

    handler = _Collect()
    logger = logging.getLogger("basyx")
    logger.addHandler(handler)
    old_propagate = logger.propagate
    logger.propagate = False
    findings: List[Finding] = []
    try:
        read_aas_json_file(io.StringIO(text), failsafe=False)
    except Exception as exc:  # any reader error is a finding, whatever its class
        findings.append(("basyx", "/", f"{type(exc).__name__}: {exc}"))
    finally:
        logger.removeHandler(handler)
        logger.propagate = old_propagate
    for rec in handler.records:
        findings.append(("basyx", rec.name, f"{rec.levelname}: {rec.getMessage()}"))
    return findings


# --------------------------------------------------------------------------- aas-test-engines


def check_test_engines(jsonable: Any) -> List[Finding]:
    from aas_test_engines.file import check_json_data
    from aas_test_engines.result import Level

    findings: List[Finding] = []
    try:
        result = check_json_data(jsonable)
    except Exception as exc:
        return [("test-engines", "/", f"{type(exc).__name__}: {exc}")]

    def walk(node, trail: List[str]) -> None:
        children = node.sub_results
        if node.level == Level.WARNING and not any(c.level == Level.WARNING for c in children):
            # warnings do not fail the check, but are worth seeing
            sys.stderr.write(f"note: [test-engines] {' > '.join(trail) or '/'}: warning: {node.message}\n")
        if node.level.value >= Level.ERROR.value and not any(
            c.level.value >= Level.ERROR.value for c in children
        ):
            # a failing leaf (or a failing node whose children all passed)
            findings.append(("test-engines", " > ".join(trail) or "/", node.message))
        for child in children:
            walk(child, trail + [node.message])

    walk(result, [])
    if not result.ok() and not findings:
        findings.append(("test-engines", "/", result.message))
    return findings


# --------------------------------------------------------------------------- local references


def check_refs(jsonable: Any) -> List[Finding]:
    """Identifiers unique within the file; every shell's submodel reference resolves in the file."""
    findings: List[Finding] = []
    if not isinstance(jsonable, dict):
        return findings
    seen = {}
    for key in ("assetAdministrationShells", "submodels", "conceptDescriptions"):
        for i, obj in enumerate(jsonable.get(key) or []):
            ident = obj.get("id") if isinstance(obj, dict) else None
            if ident is None:
                continue
            if ident in seen:
                findings.append(("refs", f"/{key}/{i}", f"identifier {ident!r} already used at {seen[ident]}"))
            else:
                seen[ident] = f"/{key}/{i}"
    submodel_ids = {sm.get("id") for sm in jsonable.get("submodels") or [] if isinstance(sm, dict)}
    for i, shell in enumerate(jsonable.get("assetAdministrationShells") or []):
        for j, ref in enumerate((shell or {}).get("submodels") or []):
            keys = (ref or {}).get("keys") or []
            where = f"/assetAdministrationShells/{i}/submodels/{j}"
            if (ref or {}).get("type") != "ModelReference" or len(keys) != 1 or keys[0].get("type") != "Submodel":
                findings.append(("refs", where, "submodel reference is not a ModelReference with one Submodel key"))
            elif keys[0].get("value") not in submodel_ids:
                findings.append(("refs", where, f"submodel {keys[0].get('value')!r} is not in this file"))
    return findings


# --------------------------------------------------------------------------- driver


def _load(name: str) -> Tuple[Optional[str], Optional[str]]:
    try:
        if name == "-":
            return sys.stdin.read(), None
        with open(name, "r", encoding="utf-8") as f:
            return f.read(), None
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"cannot read: {exc}"


def check_file(name: str, test_engines: bool, refs: bool, quiet: bool) -> bool:
    label = "<stdin>" if name == "-" else name
    text, err = _load(name)
    findings: List[Finding] = []
    shells = submodels = cds = 0
    if err is not None:
        findings.append(("io", "/", err))
    else:
        try:
            jsonable = json.loads(text)
        except json.JSONDecodeError as exc:
            findings.append(("json", f"line {exc.lineno} column {exc.colno}", exc.msg))
        else:
            if isinstance(jsonable, dict):
                shells = len(jsonable.get("assetAdministrationShells") or [])
                submodels = len(jsonable.get("submodels") or [])
                cds = len(jsonable.get("conceptDescriptions") or [])
            findings += check_aas_core(jsonable)
            findings += check_basyx(text)
            if test_engines:
                findings += check_test_engines(jsonable)
            if refs:
                findings += check_refs(jsonable)

    for checker, path, msg in findings:
        print(f"{label}: [{checker}] {path}: {msg}")
    status = "OK" if not findings else "FAIL"
    extra = f", {cds} concept descriptions" if cds else ""
    if not quiet or findings:
        print(f"{status} {label}: {shells} shells, {submodels} submodels{extra}, {len(findings)} findings")
    return not findings


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description="Check AAS v3.0 JSON environments with aas-core3.0 and basyx-python-sdk "
        "(and optionally aas-test-engines)."
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="AAS JSON environment file, or - for stdin")
    parser.add_argument("--test-engines", action="store_true", help="also run aas-test-engines' file check")
    parser.add_argument(
        "--check-refs",
        action="store_true",
        help="also require unique identifiers and shell submodel references that resolve within the file",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print only findings and failing summaries")
    args = parser.parse_args(argv)
    if args.files.count("-") > 1:
        parser.error("stdin (-) can be given only once")
    _import_checkers(args.test_engines)
    ok = True
    for name in args.files:
        ok = check_file(name, args.test_engines, args.check_refs, args.quiet) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
