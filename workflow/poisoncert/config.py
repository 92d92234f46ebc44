"""Config validation: JSON schema (with defaults filled in) plus checks the schema cannot express.

The Snakefile calls :func:`validate_config` before building the DAG, so a bad config stops the
workflow before any job, with one line naming the key and what is allowed.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import best_match

from . import registry
from .errors import PoisonCertError
from .learners.base import TWO_PHASE, implementation
from .package_data import package_path
from .partition import SELECTION_SCHEMES, n_models

SCHEMA_PATH = package_path("schemas", "config.schema.yaml")


def load_schema() -> dict:
    with open(SCHEMA_PATH) as fh:
        return yaml.safe_load(fh)


def _with_defaults(cls):
    validate_props = cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if "default" in sub and prop not in instance:
                    instance[prop] = copy.deepcopy(sub["default"])
        yield from validate_props(validator, properties, instance, schema)

    return validators.extend(cls, {"properties": set_defaults})


def _strict_integer(checker, instance) -> bool:
    """JSON Schema counts 5.0 as an integer; the workflow would then build paths like k5.0. Refuse it."""
    return isinstance(instance, int) and not isinstance(instance, bool)


_Validator = validators.extend(
    _with_defaults(Draft202012Validator),
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _strict_integer),
)

#: Folder names results/ uses itself: an experiment of one of these names would collide with them.
RESERVED_NAMES = ("compare", "data", "logs", "benchmarks", "figures", "paper_tables")


def _path(error) -> str:
    parts = []
    for p in error.absolute_path:
        parts.append(f"[{p}]" if isinstance(p, int) else (f".{p}" if parts else str(p)))
    return "".join(parts) or "(top level)"


def _message(error) -> str:
    key = _path(error)
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, dict) else []
        return f"config key {key}: unknown key(s) {', '.join(map(repr, extra))}; allowed: {', '.join(allowed)}"
    if error.validator == "uniqueItems":
        return f"config key {key}: {error.instance!r} has repeated values; list each value once"
    if error.validator == "type" and "integer" in (error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]) and isinstance(error.instance, float):
        return f"config key {key}: {error.instance!r} must be a whole number written without a decimal point (e.g. {int(error.instance) if error.instance.is_integer() else round(error.instance)})"
    if error.validator == "enum":
        return f"config key {key}: {error.instance!r} is not allowed; choose one of {', '.join(map(str, error.validator_value))}"
    if "propertyNames" in error.schema_path:
        return f"config key {key}: experiment name {error.instance!r} must use only letters, digits, '_' and '-'"
    desc = schema.get("description", "")
    hint = f" ({desc.strip().split('.')[0]})" if desc else ""
    return f"config key {key}: {error.message}{hint}"


def _learner_defaults(cfg: dict[str, Any]) -> None:
    """Fill a learner's own extractor defaults (``registry.Learner.extractor_defaults``, e.g. SimCLR's)
    where an experiment leaves them out, before the schema's (RotNet's) defaults fill the rest.
    Leaves anything malformed to the schema check."""
    exps = cfg.get("experiments")
    if not isinstance(exps, dict):
        return
    for exp in exps.values():
        if not isinstance(exp, dict) or exp.get("learner") not in registry.LEARNERS:
            continue
        defaults = registry.learner(exp["learner"]).extractor_defaults
        if defaults and isinstance(exp.setdefault("extractor", {}), dict):
            for key, value in defaults.items():
                exp["extractor"].setdefault(key, copy.deepcopy(value))


def _yaml_key_hint(key: Any) -> str:
    if isinstance(key, bool):
        return "YAML reads yes/no/true/false/on/off as a boolean"
    if key is None:
        return "YAML reads null or ~ as no value"
    return "YAML reads it as a number"


def _check_keys(node: Any, path: str = "") -> None:
    """Every mapping key in the config must be a string: YAML turns ``123:``, ``yes:``, ``null:``
    into a number, a boolean, None, which would reach file names and rules as ``True`` or ``123``.

    >>> _check_keys({"experiments": {True: {}}})
    Traceback (most recent call last):
    ...
    poisoncert.errors.PoisonCertError: config key experiments: experiment name True is not text (YAML reads yes/no/true/false/on/off as a boolean); put the name in quotes in the YAML file, or rename it
    """
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(key, str):
                what = "experiment name" if path == "experiments" else "key"
                raise PoisonCertError(
                    f"config key {path or '(top level)'}: {what} {key!r} is not text ({_yaml_key_hint(key)}); "
                    "put the name in quotes in the YAML file, or rename it"
                )
            _check_keys(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_keys(value, f"{path}[{i}]")


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Validate ``config`` (a dict as loaded from YAML), fill defaults, and return it.

    Raises :class:`PoisonCertError` with one line naming the offending key.
    """
    if not isinstance(config, dict):
        raise PoisonCertError("the config must be a mapping of keys to values (see config.yaml)")
    _check_keys(config)
    cfg = copy.deepcopy(config)
    _learner_defaults(cfg)
    exps = cfg.get("experiments")
    unnamed = {n for n, e in exps.items() if isinstance(e, dict) and "learner" not in e} if isinstance(exps, dict) else set()
    schema = load_schema()
    error = best_match(_Validator(schema).iter_errors(cfg))
    if error is not None:
        raise PoisonCertError(_message(error))
    for name in unnamed:  # the schema's default learner is the supervised one; a scheme may have only its own
        cfg["experiments"][name]["learner"] = registry.default_learner(cfg["experiments"][name]["scheme"])
    for name, exp in cfg["experiments"].items():
        builds = registry.learner(exp["learner"]).schemes
        if exp["scheme"] not in builds:
            raise PoisonCertError(
                f"config key experiments.{name}.learner: {exp['learner']} is for schemes {' and '.join(builds)}, not '{exp['scheme']}' "
                f"(leave learner out for the scheme's own: {registry.default_learner(exp['scheme'])})"
            )
    from .papers import available_tables

    tables = available_tables()
    for t in cfg["paper_tables"]:
        if t not in tables:
            raise PoisonCertError(f"config key paper_tables: no transcribed table '{t}'; choose from {', '.join(tables) or '(none yet)'}")
    for name, exp in cfg["experiments"].items():
        if name in RESERVED_NAMES:
            raise PoisonCertError(f"config key experiments.{name}: '{name}' is a folder results/ uses itself ({', '.join(RESERVED_NAMES)}); rename the experiment")
        scheme = exp["scheme"]
        rec = registry.scheme(scheme)
        n_classes = registry.dataset(exp["dataset"]).n_classes
        bad_classes = [c for c in exp["clean_classes"] if c >= n_classes]
        if bad_classes:
            raise PoisonCertError(f"config key experiments.{name}.clean_classes: {bad_classes} are not classes of {exp['dataset']} (0..{n_classes - 1})")
        if rec.k_is_m:
            # DPA App. B: one labelled sample per base classifier, so k = m (the training-set size)
            m = registry.dataset(exp["dataset"]).n_train
            if exp["k"] not in (None, [m]):
                raise PoisonCertError(
                    f"config key experiments.{name}.k: scheme '{scheme}' has k = m = {m} (the {exp['dataset']} training set, "
                    "one labelled sample per base classifier, DPA App. B); leave k out"
                )
            exp["k"] = [m]
        elif exp["k"] is None:
            raise PoisonCertError(f"config key experiments.{name}.k: required for scheme '{scheme}' (a list of partition counts / selection sizes)")
        if rec.n_classes is not None and n_classes != rec.n_classes:
            fits = ", ".join(n for n, ds in registry.DATASETS.items() if ds.n_classes == rec.n_classes)
            raise PoisonCertError(f"config key experiments.{name}.dataset: scheme '{scheme}' needs a {'binary' if rec.n_classes == 2 else f'{rec.n_classes}-class'} dataset ({fits}), not '{exp['dataset']}'")
        allowed = tuple(registry.scheme(scheme).certificates)
        if exp.get("certificates") is None:
            exp["certificates"] = [allowed[0]]
        bad = [c for c in exp["certificates"] if c not in allowed]
        if bad:
            raise PoisonCertError(
                f"config key experiments.{name}.certificates: {', '.join(bad)} cannot certify a '{scheme}' ensemble; allowed: {', '.join(allowed)}"
            )
        if not rec.uses_d and not rec.selection and exp["d"] != [1]:
            raise PoisonCertError(f"config key experiments.{name}.d: scheme '{scheme}' has no d; use d: [1] (or scheme fa / dpa_star)")
        if exp["offsets"] is not None:
            if not rec.offsets or len(exp["d"]) != 1:
                raise PoisonCertError(f"config key experiments.{name}.offsets: offsets are for scheme 'fa' with a single d")
            from .partition import check_offsets

            for k in exp["k"]:
                try:
                    check_offsets(exp["offsets"], k, exp["d"][0])
                except PoisonCertError as exc:
                    raise PoisonCertError(f"config key experiments.{name}.offsets (k={k}): {exc}") from None
        if exp["poison_check"] and (registry.scheme(scheme).attack is None or not registry.learner(exp["learner"]).poison_checked):
            attackable = [n for n, s in registry.SCHEMES.items() if s.attack]
            checked = [lr for lr in registry.LEARNERS.values() if lr.poison_checked]
            learners = [lr.name for lr in checked if any(registry.scheme(s).trains for s in lr.schemes)]
            own = [lr.name for lr in checked if lr.name not in learners]  # App. B: the scheme's own closed-form learner
            raise PoisonCertError(
                f"config key experiments.{name}.poison_check: the poison check attacks the deterministic schemes ({', '.join(attackable)}) "
                f"with the learners {', '.join(learners)} ({', '.join(own)}: its own)"
            )
        if exp["poison_check"] and registry.dataset(exp["dataset"]).hashes_source_images:
            raise PoisonCertError(
                f"config key experiments.{name}.poison_check: dataset '{exp['dataset']}' is partitioned by its original images' "
                "pixel sums, which the poison check's crafted poisons cannot aim at; set poison_check: 0"
            )
        learner = registry.learner(exp["learner"])
        if learner.needs_extractor:
            if scheme not in learner.schemes:
                raise PoisonCertError(f"config key experiments.{name}.learner: {learner.name} is for schemes {' and '.join(learner.schemes)}, not '{scheme}'")
            arch = exp["extractor"]["arch"]
            if arch not in learner.extractor_archs:
                raise PoisonCertError(
                    f"config key experiments.{name}.extractor.arch: learner {learner.name} trains a {' or '.join(learner.extractor_archs)} extractor, not '{arch}'"
                )
        implementation(exp["learner"]).check_config(exp, f"config key experiments.{name}")
        if exp["train"].get("hflip") and not registry.dataset(exp["dataset"]).hflip_ok:
            ok = [n for n, d in registry.DATASETS.items() if d.hflip_ok]
            raise PoisonCertError(
                f"config key experiments.{name}.train.hflip: a mirrored {exp['dataset']} image can change its label "
                f"(the papers flip CIFAR-10 only); flips are allowed on {', '.join(ok)}"
            )
        if exp["two_phase"]:
            clean = sorted(set(exp["clean_classes"]))
            if scheme not in SELECTION_SCHEMES or not clean:
                raise PoisonCertError(
                    f"config key experiments.{name}.two_phase: the 2-phase classifier (Chen et al. case 3) needs a random-selection scheme "
                    f"({', '.join(SELECTION_SCHEMES)}) and non-empty clean_classes"
                )
            if exp["clean_count"] or exp["learner"] != implementation(TWO_PHASE).record:
                raise PoisonCertError(f"config key experiments.{name}.two_phase: needs clean_count: 0 (case 3 only) and learner: supervised")
            if len(clean) >= n_classes:
                raise PoisonCertError(f"config key experiments.{name}.clean_classes: with two_phase they must leave at least one potentially poisoned class")
        if scheme in SELECTION_SCHEMES:
            if exp["d"] != [1]:
                raise PoisonCertError(f"config key experiments.{name}.d: scheme '{scheme}' has no d; use d: [1]")
            no_clean = [c for c in exp["certificates"] if not registry.certificate(c).known_clean]
            if no_clean and (exp["clean_classes"] or exp["clean_count"]):
                raise PoisonCertError(
                    f"config key experiments.{name}.certificates: Jia's bagging certificate has no known-clean part; use random_selection with clean_classes/clean_count"
                )
        n_train = registry.dataset(exp["dataset"]).n_train
        for k in exp["k"]:
            for d in exp["d"]:
                n_split = rec.n_split(k, d)
                if n_split > n_train and not rec.with_replacement:
                    what = "k*d" if rec.buckets == "kd" else "k"
                    raise PoisonCertError(
                        f"config key experiments.{name}.k: {what}={n_split} is larger than the {exp['dataset']} training set "
                        f"({n_train} samples); choose {what} <= {n_train}"
                    )
    from .limits import check_sizes

    check_sizes(cfg)  # sizes that depend on several keys (models per ensemble, padded batches, DAG size)
    return canonical(cfg, schema)


#: Lists whose order means nothing (a set of epochs: the schedule counts the milestones passed).
_SET_LISTS = ("lr_milestones",)


def canonical(value: Any, schema: dict[str, Any], node: dict[str, Any] | None = None, key: str = "") -> Any:
    """A validated config in one canonical form, so that equal configs give equal rule params (the
    rerun triggers, dumped as JSON): every object's keys in the schema's order (whatever the
    config file's order, defaults filled where the schema puts them), numbers of ``type: number``
    as floats (``lr: 1`` and ``lr: 1.0`` are one setting), set-like lists sorted.

    >>> s = {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "integer"}}}
    >>> canonical({"b": 2, "a": 1}, s)
    {'a': 1.0, 'b': 2}
    """
    node = schema if node is None else node
    if "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    types = node.get("type")
    types = types if isinstance(types, list) else [types]
    if isinstance(value, dict):
        props = node.get("properties", {})
        extra = node.get("additionalProperties")
        out = {k: canonical(value[k], schema, props[k], k) for k in props if k in value}
        out.update({k: canonical(v, schema, extra if isinstance(extra, dict) else {}, k) for k, v in value.items() if k not in props})
        return out
    if isinstance(value, list):
        items = node.get("items") if isinstance(node.get("items"), dict) else {}
        out = [canonical(v, schema, items) for v in value]
        return sorted(out) if key in _SET_LISTS else out
    if "number" in types and "integer" not in types and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


#: Training options added after results existed, at the value that reproduces the old behaviour
#: (a shard written before ``TrainConfig.augment`` trained exactly as ``augment: none``, one
#: written before ``TrainConfig.strategy`` as ``strategy: grouped``): the
#: rules leave them out of a job's config at that value (no rerun), aggregate fills them in.
LATER_TRAIN_DEFAULTS: dict[str, Any] = {"augment": "none", "strategy": "grouped"}


def ensembles(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Every (experiment, k, d) ensemble of a validated config, with its number of base models."""
    out = []
    for name, exp in cfg["experiments"].items():
        for k in exp["k"]:
            for d in exp["d"]:
                t = n_models(exp["scheme"], k, d, exp["n_models"])
                out.append({"exp": name, "k": k, "d": d, "n_models": t, **{kk: exp[kk] for kk in ("dataset", "scheme")}})
    return out


def yaml_error(path: str | Path, exc: yaml.YAMLError) -> PoisonCertError:
    """One line naming the file, line and column of a YAML syntax error, and what is wrong there."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else str(path)
    what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return PoisonCertError(f"config file {where}: not valid YAML ({what})")


def read_config_file(path: str | Path) -> Any:
    """Parse a YAML config file (one-line errors for a missing file, text that is not UTF-8 / UTF-16
    (a byte-order mark is fine: YAML reads the bytes) or a syntax error)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        if raw[:4] in (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff"):  # UTF-32 with its BOM: YAML reads UTF-8 and UTF-16 only
            raw = raw.decode("utf-32")
        return yaml.safe_load(raw)
    except UnicodeDecodeError as exc:
        raise PoisonCertError(f"config file {path}, byte {exc.start}: not {exc.encoding} text ({exc.reason}); save it as UTF-8") from None
    except FileNotFoundError:
        raise PoisonCertError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise PoisonCertError(f"config file {path} is a folder; give a YAML file") from None
    except yaml.reader.ReaderError as exc:  # undecodable bytes or a control character
        if exc.encoding == "unicode":
            raise PoisonCertError(f"config file {path}, character {exc.position}: control character #x{exc.character:04x} is not allowed in YAML; remove it") from None
        raise PoisonCertError(f"config file {path}, byte {exc.position}: not {exc.encoding} text ({exc.reason}); save it as UTF-8") from None
    except yaml.YAMLError as exc:
        raise yaml_error(path, exc) from None


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read and validate a YAML config file."""
    raw = read_config_file(path)
    return validate_config({} if raw is None else raw)


def check_yaml_or_exit(path: str | Path) -> None:
    """For the Snakefile: exit with one line if ``path`` is not valid YAML (before Snakemake's generic message)."""
    import sys

    if Path(path).exists():
        try:
            read_config_file(path)
        except PoisonCertError as exc:
            print(f"poisoncert: invalid config: {exc}", file=sys.stderr)
            sys.exit(1)
