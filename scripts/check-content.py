#!/usr/bin/env python3
"""Check orl manifests: JSON Schema validation plus orl's cross-resource rules.

DEV AID ONLY. This is a stop-gap used to keep manifests/ and examples/ honest
until `orlctl validate` exists; it is not part of orl, is not shipped, and may
be deleted once `orlctl validate` covers the same ground. When the two
disagree, orlctl and the schemas in schemas/ are right and this script is wrong.

Usage:
    python3 scripts/check-content.py [PATH ...]     (default: manifests/)

Every document of every .yaml/.yml file under the given directories (or the
given files) is checked:

  * YAML: syntax errors, duplicate mapping keys (PyYAML silently keeps the
    last one; orl reports them), non-scalar keys.
  * apiVersion/kind, then the document against schemas/<kind>.schema.json
    (draft 2020-12). Every schema is registered in a referencing.Registry under
    its file name, so `common.schema.json#/$defs/...` refs resolve offline.
  * Semantic rules (per namespace; a missing namespace means `default`):
      - names are unique per (kind, namespace);
      - Agent.spec.model PROVIDER/MODEL names a ModelProvider listing MODEL;
      - Agent.spec.tools and Workflow step tools name Tools;
      - a step's tools are listed in its agent's spec.tools;
      - a step's agent names an Agent;
      - dependsOn names existing step ids; step ids are unique; no cycles;
      - a step input {step: X} names an upstream (transitively depended-on)
        step, {input: X} a declared workflow input;
      - a Policy's or Budget's appliesTo matches at least one Agent (named
        agents that do not exist are reported too).
  * The first line is a yaml-language-server modeline pointing at the kind's
    schema (manifest.schema.json for files mixing kinds) - warning only.

Output is one line per problem, sorted by file and line:
    FILE:LINE:COL: SEVERITY[CODE]: MESSAGE (Kind/name at path)
Codes follow Sources/OrlCore/Diagnostics/DiagnosticCode.swift where a code
exists; `ref.not-declared`, `dag.not-upstream` and `content.modeline` are this
script's own. Exit status: 0 when there are no errors, 1 otherwise.

Needs Python 3.11, PyYAML, jsonschema >= 4.18 and referencing.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

REPO = Path(__file__).resolve().parent.parent
SCHEMAS = REPO / "schemas"
API_VERSION = "orl.dev/v1"
KINDS = ["Agent", "Tool", "ModelProvider", "Policy", "Budget", "Workflow"]
MODELINE = "# yaml-language-server: $schema="


# --------------------------------------------------------------------------- #
# Diagnostics


@dataclass
class Diag:
    severity: str
    code: str
    message: str
    file: str
    line: int = 0
    col: int = 0
    resource: str | None = None
    path: str | None = None

    def render(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}" if self.line else self.file
        ctx = ""
        if self.resource or self.path:
            ctx = " (" + " at ".join(x for x in (self.resource, self.path) if x) + ")"
        return f"{where}: {self.severity}[{self.code}]: {self.message}{ctx}"


def fmt_path(parts) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out


# --------------------------------------------------------------------------- #
# YAML with locations and duplicate-key detection


@dataclass
class Doc:
    file: str
    index: int
    value: object
    start: tuple[int, int]
    locs: dict = field(default_factory=dict)  # path tuple -> (line, col)

    def loc(self, path) -> tuple[int, int]:
        """Location of the deepest existing prefix of path."""
        path = tuple(path)
        while path:
            if path in self.locs:
                return self.locs[path]
            path = path[:-1]
        return self.start


def _mark(m) -> tuple[int, int]:
    return (m.line + 1, m.column + 1)


def load_file(path: Path, rel: str, diags: list[Diag]) -> list[Doc]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        diags.append(Diag("error", "file.unreadable", str(e), rel))
        return []

    docs: list[Doc] = []
    loader = yaml.SafeLoader(text)

    def build(node, p, doc: Doc):
        doc.locs.setdefault(p, _mark(node.start_mark))
        if isinstance(node, yaml.MappingNode):
            out = {}
            for knode, vnode in node.value:
                if not isinstance(knode, yaml.ScalarNode):
                    diags.append(Diag("error", "yaml.unsupported", "mapping keys must be scalars",
                                      rel, *_mark(knode.start_mark)))
                    continue
                key = loader.construct_object(knode)
                kp = p + (key,)
                if key in out:
                    first = doc.locs.get(kp, (0, 0))
                    diags.append(Diag("error", "yaml.duplicate-key",
                                      f"duplicate key '{key}' (first defined at line {first[0]})",
                                      rel, *_mark(knode.start_mark), path=fmt_path(kp)))
                else:
                    doc.locs[kp] = _mark(knode.start_mark)
                out[key] = build(vnode, kp, doc)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [build(n, p + (i,), doc) for i, n in enumerate(node.value)]
        return loader.construct_object(node, deep=True)

    try:
        i = 0
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            doc = Doc(rel, i, None, _mark(node.start_mark))
            doc.value = build(node, (), doc)
            i += 1
            if doc.value is None:  # an empty document, e.g. a trailing '---'
                continue
            docs.append(doc)
    except yaml.MarkedYAMLError as e:
        m = e.problem_mark or e.context_mark
        line, col = _mark(m) if m else (0, 0)
        msg = " ".join(x for x in (e.context, e.problem) if x)
        diags.append(Diag("error", "yaml.syntax", msg or str(e), rel, line, col))
    except yaml.YAMLError as e:
        diags.append(Diag("error", "yaml.syntax", str(e), rel))
    finally:
        loader.dispose()
    return docs


# --------------------------------------------------------------------------- #
# Schemas


def schema_file(kind: str) -> str:
    return f"{kind.lower()}.schema.json"


def load_validators() -> dict[str, Draft202012Validator]:
    registry = Registry()
    contents = {}
    for f in sorted(SCHEMAS.glob("*.schema.json")):
        contents[f.name] = json.loads(f.read_text(encoding="utf-8"))
        registry = registry.with_resource(f.name, Resource.from_contents(contents[f.name], DRAFT202012))
    registry = registry.crawl()
    validators = {}
    for kind in KINDS:
        schema = contents[schema_file(kind)]
        Draft202012Validator.check_schema(schema)
        # Give the root its own URI so relative $refs resolve against it.
        validators[kind] = Draft202012Validator(
            {"$ref": schema_file(kind)}, registry=registry)
    return validators


# The generic "is not valid under any of the given schemas" says nothing useful
# for these two oneOfs, so explain the rule instead.
ONE_OF_HINTS = {
    ("spec", "steps", 0): "a step is either an agent step (agent, with optional tools and prompt) "
                          "or an approval gate (approval, without agent, tools or prompt)",
    ("spec", "steps", 0, "inputs", ""): "a step input is exactly one of {input: NAME}, "
                                        "{step: ID} (optionally with key: KEY) or {value: ...}",
}


def _shape(path) -> tuple:
    """The path with indices as 0 and input names as '', to look up ONE_OF_HINTS."""
    out = []
    for i, x in enumerate(path):
        if isinstance(x, int):
            out.append(0)
        elif i >= 1 and path[i - 1] == "inputs" and len(path) > 2 and path[1] == "steps":
            out.append("")
        else:
            out.append(x)
    return tuple(out)


def schema_errors(doc: Doc, validator: Draft202012Validator, rid: str, diags: list[Diag]) -> bool:
    errors = sorted(validator.iter_errors(doc.value), key=lambda e: [str(x) for x in e.absolute_path])
    for err in errors:
        p = tuple(err.absolute_path)
        hint = ONE_OF_HINTS.get(_shape(p)) if err.validator == "oneOf" else None
        if hint:
            diags.append(Diag("error", "schema.invalid", hint, doc.file, *doc.loc(p), rid, fmt_path(p)))
            continue
        if err.context:  # anyOf/oneOf elsewhere: report the most relevant sub-error
            err = best_match(err.context) or err
            p = tuple(err.absolute_path)
        line, col = doc.loc(p)
        msg = err.message
        if err.validator == "additionalProperties" and isinstance(err.instance, dict):
            allowed = set(err.schema.get("properties", {}))
            extras = [k for k in err.instance if k not in allowed]
            if extras:
                p = p + (extras[0],)
                line, col = doc.loc(p)
                msg = f"unknown field '{extras[0]}'; allowed here: {', '.join(sorted(allowed))}"
        diags.append(Diag("error", "schema.invalid", msg, doc.file, line, col, rid, fmt_path(p) or None))
    return not errors


# --------------------------------------------------------------------------- #
# Semantic rules


@dataclass
class Res:
    kind: str
    ns: str
    name: str
    doc: Doc

    @property
    def spec(self) -> dict:
        return self.doc.value.get("spec") or {}

    @property
    def labels(self) -> dict:
        return (self.doc.value.get("metadata") or {}).get("labels") or {}

    @property
    def rid(self) -> str:
        return f"{self.kind}/{self.name}" + ("" if self.ns == "default" else f"@{self.ns}")


def selector_matches(sel: dict, labels: dict) -> bool:
    for k, v in (sel.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in sel.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def check_semantics(resources: list[Res], diags: list[Diag]) -> None:
    def err(r: Res, code: str, msg: str, path=(), severity="error"):
        line, col = r.doc.loc(path)
        diags.append(Diag(severity, code, msg, r.doc.file, line, col, r.rid, fmt_path(path) or None))

    index: dict[tuple[str, str, str], Res] = {}
    for r in resources:
        key = (r.kind, r.ns, r.name)
        if key in index:
            first = index[key]
            err(r, "resource.duplicate",
                f"{r.kind} '{r.name}' in namespace '{r.ns}' is already defined at "
                f"{first.doc.file}:{first.doc.loc(('metadata', 'name'))[0]}",
                ("metadata", "name"))
        else:
            index[key] = r

    def get(kind, ns, name):
        return index.get((kind, ns, name))

    agents = [r for r in index.values() if r.kind == "Agent"]

    for r in index.values():
        s = r.spec
        if r.kind == "Agent":
            provider, _, model = s["model"].partition("/")
            mp = get("ModelProvider", r.ns, provider)
            if mp is None:
                err(r, "ref.missing", f"model '{s['model']}': no ModelProvider '{provider}' "
                    f"in namespace '{r.ns}'", ("spec", "model"))
            elif model not in [m["name"] for m in mp.spec["models"]]:
                err(r, "ref.missing", f"model '{s['model']}': ModelProvider '{provider}' does not "
                    f"list model '{model}' (it has: {', '.join(m['name'] for m in mp.spec['models'])})",
                    ("spec", "model"))
            for i, t in enumerate(s.get("tools") or []):
                if get("Tool", r.ns, t) is None:
                    err(r, "ref.missing", f"no Tool '{t}' in namespace '{r.ns}'", ("spec", "tools", i))

        elif r.kind in ("Policy", "Budget"):
            sel = s["appliesTo"]
            matched = set()
            for i, a in enumerate(sel.get("agents") or []):
                if get("Agent", r.ns, a) is None:
                    err(r, "ref.missing", f"appliesTo names Agent '{a}', which does not exist in "
                        f"namespace '{r.ns}'", ("spec", "appliesTo", "agents", i))
                else:
                    matched.add(a)
            if "selector" in sel:
                matched |= {a.name for a in agents if a.ns == r.ns and selector_matches(sel["selector"], a.labels)}
            if not matched:
                err(r, "selector.empty", f"appliesTo matches no Agent in namespace '{r.ns}', so this "
                    f"{r.kind} has no effect", ("spec", "appliesTo"))

        elif r.kind == "Workflow":
            check_workflow(r, get, err)


def check_workflow(r: Res, get, err) -> None:
    s = r.spec
    steps = s["steps"]
    declared_inputs = {i["name"] for i in s.get("inputs") or []}

    ids: dict[str, int] = {}
    for i, st in enumerate(steps):
        if st["id"] in ids:
            err(r, "dag.duplicate-step", f"step id '{st['id']}' is already used by "
                f"spec.steps[{ids[st['id']]}]", ("spec", "steps", i, "id"))
        else:
            ids[st["id"]] = i

    deps: dict[str, list[str]] = {}
    for i, st in enumerate(steps):
        sp = ("spec", "steps", i)
        known = []
        for j, d in enumerate(st.get("dependsOn") or []):
            if d not in ids:
                err(r, "dag.unknown-dependency", f"step '{st['id']}' depends on '{d}', which is "
                    f"not a step of this workflow", sp + ("dependsOn", j))
            elif d == st["id"]:
                err(r, "dag.cycle", f"step '{d}' depends on itself", sp + ("dependsOn", j))
            else:
                known.append(d)
        deps.setdefault(st["id"], []).extend(known)

        agent = None
        if "agent" in st:
            agent = get("Agent", r.ns, st["agent"])
            if agent is None:
                err(r, "ref.missing", f"step '{st['id']}' runs Agent '{st['agent']}', which does "
                    f"not exist in namespace '{r.ns}'", sp + ("agent",))
        for j, t in enumerate(st.get("tools") or []):
            tp = sp + ("tools", j)
            if get("Tool", r.ns, t) is None:
                err(r, "ref.missing", f"step '{st['id']}' uses Tool '{t}', which does not exist "
                    f"in namespace '{r.ns}'", tp)
            elif agent is not None and t not in (agent.spec.get("tools") or []):
                err(r, "ref.not-declared", f"step '{st['id']}' uses Tool '{t}', which Agent "
                    f"'{agent.name}' does not list in spec.tools", tp)

    # Cycles: report each strongly-connected loop once, as a path.
    state: dict[str, int] = {}
    reported: set[frozenset] = set()

    def visit(n: str, stack: list[str]):
        state[n] = 1
        stack.append(n)
        for d in deps.get(n, []):
            if state.get(d) == 1:
                cyc = stack[stack.index(d):]
                if frozenset(cyc) not in reported:
                    reported.add(frozenset(cyc))
                    # stack order: each step depends on the next one.
                    err(r, "dag.cycle", "dependsOn forms a cycle: " + " -> ".join(cyc + [d])
                        + " (each step depends on the next)", ("spec", "steps", ids[d], "dependsOn"))
            elif d not in state:
                visit(d, stack)
        stack.pop()
        state[n] = 2

    for st in steps:
        if st["id"] not in state:
            visit(st["id"], [])

    def upstream(n: str) -> set[str]:
        seen, todo = set(), list(deps.get(n, []))
        while todo:
            d = todo.pop()
            if d not in seen:
                seen.add(d)
                todo.extend(deps.get(d, []))
        seen.discard(n)
        return seen

    for i, st in enumerate(steps):
        ups = upstream(st["id"])
        for name, src in (st.get("inputs") or {}).items():
            ip = ("spec", "steps", i, "inputs", name)
            if "step" in src:
                if src["step"] not in ids:
                    err(r, "ref.missing", f"input '{name}' of step '{st['id']}' reads step "
                        f"'{src['step']}', which is not a step of this workflow", ip + ("step",))
                elif src["step"] not in ups:
                    err(r, "dag.not-upstream", f"input '{name}' of step '{st['id']}' reads step "
                        f"'{src['step']}', which is not upstream of it; make the step depend on it, directly or "
                        f"through another step", ip + ("step",))
            if "input" in src and src["input"] not in declared_inputs:
                err(r, "ref.missing", f"input '{name}' of step '{st['id']}' reads workflow input "
                    f"'{src['input']}', which spec.inputs does not declare", ip + ("input",))


# --------------------------------------------------------------------------- #
# Modeline


def check_modeline(path: Path, rel: str, kinds: list[str], diags: list[Diag]) -> None:
    if not kinds:
        return
    distinct = sorted(set(kinds))
    expected = schema_file(distinct[0]) if len(distinct) == 1 else "manifest.schema.json"
    try:
        first = path.read_text(encoding="utf-8").splitlines()[0]
    except (OSError, IndexError, UnicodeDecodeError):
        first = ""
    if not first.startswith(MODELINE):
        diags.append(Diag("warning", "content.modeline", "first line should be "
                          f"'{MODELINE}<relative path to schemas/{expected}>'", rel, 1, 1))
        return
    target = (path.parent / first[len(MODELINE):].strip()).resolve()
    if target != (SCHEMAS / expected).resolve():
        diags.append(Diag("warning", "content.modeline", f"modeline points at "
                          f"'{first[len(MODELINE):].strip()}', expected the relative path to "
                          f"schemas/{expected}", rel, 1, 1))


# --------------------------------------------------------------------------- #


def collect(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix in (".yaml", ".yml") and f.is_file())
        elif p.is_file():
            files.append(p)
        else:
            print(f"{p}: no such file or directory", file=sys.stderr)
            sys.exit(2)
    seen: set[Path] = set()  # a file given both directly and via its directory counts once
    return [f for f in files if not (f.resolve() in seen or seen.add(f.resolve()))]


def main(argv: list[str]) -> int:
    paths = argv or ["manifests"]
    validators = load_validators()
    diags: list[Diag] = []
    resources: list[Res] = []
    files = collect(paths)
    ndocs = 0

    for f in files:
        rel = str(f)
        docs = load_file(f, rel, diags)
        kinds = []
        for doc in docs:
            ndocs += 1
            v = doc.value
            if not isinstance(v, dict):
                diags.append(Diag("error", "resource.invalid", "a document must be a mapping with "
                                  "apiVersion, kind, metadata and spec", rel, *doc.start))
                continue
            kind, api = v.get("kind"), v.get("apiVersion")
            name = (v.get("metadata") or {}).get("name") if isinstance(v.get("metadata"), dict) else None
            ns = (v.get("metadata") or {}).get("namespace", "default") if isinstance(v.get("metadata"), dict) else "default"
            rid = (f"{kind}/{name}" + ("" if ns == "default" else f"@{ns}")) if kind and name else None
            if api is None or kind is None:
                diags.append(Diag("error", "resource.invalid", "document has no "
                                  + ("apiVersion" if api is None else "kind"), rel, *doc.start, rid))
                continue
            if api != API_VERSION:
                diags.append(Diag("error", "resource.unknown-api-version", f"apiVersion '{api}' is not "
                                  f"supported; use '{API_VERSION}'", rel, *doc.loc(("apiVersion",)), rid))
                continue
            if kind not in KINDS:
                diags.append(Diag("error", "resource.unknown-kind", f"unknown kind '{kind}'; expected "
                                  f"one of {', '.join(KINDS)}", rel, *doc.loc(("kind",)), rid))
                continue
            kinds.append(kind)
            if schema_errors(doc, validators[kind], rid or kind, diags):
                resources.append(Res(kind, ns, v["metadata"]["name"], doc))
        check_modeline(f, rel, kinds, diags)

    check_semantics(resources, diags)

    diags.sort(key=lambda d: (d.file, d.line, d.col, d.code))
    for d in diags:
        print(d.render())
    nerr = sum(d.severity == "error" for d in diags)
    nwarn = len(diags) - nerr
    by_kind: dict[str, int] = {}
    for r in resources:
        by_kind[r.kind] = by_kind.get(r.kind, 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(by_kind.items()))
    print(f"{' '.join(paths)}: {len(files)} files, {ndocs} documents ({summary or 'no valid resources'}): "
          f"{nerr} error(s), {nwarn} warning(s)")
    return 1 if nerr else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
