"""The Python API: run (and resume) a search from a notebook or a script, and read its results.

``compress(...)`` takes the command line's options (one schema: ``autocompress.config.OPTIONS``)
as keyword arguments, runs ``autocompress search`` in-process and returns a ``SearchResult``:
the Pareto front as a DataFrame, the recommended ``Candidate`` (``.load()``, ``.export(dir)``),
the teacher's baseline, the paths of the report and the run directory, and the Optuna study.
The command line is a thin layer over the same ``run_options``. ``open_run(dir)`` reads the
result of a finished (or interrupted, or multi-worker) run without running anything.

Technique and target classes passed in the call are registered through the normal register
hooks as a plugin "registered in code" (provenance shows it); callbacks observe every finished
trial through the ``autocompress_trial_finished`` hook.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import math
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autocompress import hookimpl
from autocompress.config import command_line, merge_options, settings_from_options
from autocompress.errors import InputError
from autocompress.study.record import LATENCIES, TEST_ACCURACY, VAL_ACCURACY

if TYPE_CHECKING:
    import optuna
    import pandas as pd

    from autocompress.plugin_manager import Host
    from autocompress.report.run import RunData
    from autocompress.search import SearchOutcome
    from autocompress.search.settings import SearchSettings

#: Options the API sets through its own arguments, not through ``**options``.
API_ARGUMENTS = {"no_progress": "progress=", "disable": "disable= (a list)"}


# ---------------------------------------------------------------- results


def _number(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _params(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k[len("param."):]: v for k, v in row.items()
            if k.startswith("param.") and v is not None and not (isinstance(v, float) and math.isnan(v))}


@dataclasses.dataclass(frozen=True)
class TrialResult:
    """One finished trial, as callbacks receive it (``row`` is its trials.csv row, every column)."""

    number: int
    ended: str  #: complete, infeasible-before-training, pruned, failed or interrupted
    plan: str
    params: dict[str, Any]
    test_accuracy: float | None
    val_accuracy: float | None
    latency_ms: float | None
    memory_mb: float | None
    feasible: bool
    reason: str
    row: dict[str, Any] = dataclasses.field(repr=False)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> TrialResult:
        return cls(number=int(row["number"]), ended=str(row["ended"]), plan=str(row.get("plan") or ""),
                   params=_params(row), test_accuracy=_number(row.get(TEST_ACCURACY)),
                   val_accuracy=_number(row.get(VAL_ACCURACY)), latency_ms=_number(row.get("latency_ms")),
                   memory_mb=_number(row.get("memory_mb")), feasible=bool(row.get("feasible")),
                   reason=str(row.get("reason") or ""), row=dict(row))


@dataclasses.dataclass(frozen=True)
class TeacherBaseline:
    """The teacher (the model being compressed), measured like every candidate."""

    test_accuracy: float
    val_accuracy: float
    latency_ms: float
    latency_p90_ms: float
    memory_mb: float
    parameters: int
    #: The one-time fine-tuning that made the teacher from a base model (recipe, validation
    #: accuracy, cache folder), or None when the given checkpoint already was the teacher.
    teacher_training: dict[str, Any] | None = None
    #: A model that generates: its median latency in every mode timed (``prompt``, ``token``); else empty.
    latency_ms_by_mode: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A compressed model of the run: its plan and measured numbers; ``load()`` and ``export()`` it."""

    trial: int
    plan: str
    params: dict[str, Any]
    test_accuracy: float
    val_accuracy: float
    latency_ms: float
    latency_p90_ms: float
    speedup: float  #: versus the teacher measured right beside it
    memory_mb: float
    parameters: int
    run_dir: Path
    _run: RunData = dataclasses.field(repr=False, compare=False)
    #: The plugin host of the search (techniques passed as classes included); None: the installed plugins.
    _host: Any = dataclasses.field(default=None, repr=False, compare=False)
    #: A model that generates: its median latency in every mode timed (``prompt``, ``token``); else empty.
    latency_ms_by_mode: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def path(self) -> Path:
        """The folder with its weights (kept for Pareto-optimal and recommended trials)."""
        from autocompress.export import candidate_dir

        return candidate_dir(self.run_dir, self._run, self.trial)[1]

    def load(self) -> tuple[Any, Any]:
        """(model, tokenizer), the model in eval mode and in its deployed form (e.g. int8)."""
        from autocompress import load_pretrained

        return load_pretrained(self.path, self._host)

    def export(self, to: str | os.PathLike, *, onnx: bool = False, license: str | None = None) -> Path:
        """Write a folder that ships: weights, tokenizer, a model card with Hub metadata, and what
        ``transformers.pipeline`` needs (see docs/api.md). ``to`` must be new or empty."""
        from autocompress.export import export

        return Path(export(self.run_dir, self._run, Path(to), self.trial, onnx, self._host,
                           license=license)["directory"])


def _candidate(run: RunData, run_dir: Path, row: Mapping[str, Any], host: Any = None) -> Candidate:
    return Candidate(
        trial=int(row["number"]), plan=str(row["plan"]), params=_params(row),
        test_accuracy=float(row[TEST_ACCURACY]), val_accuracy=float(row["val_accuracy"]),
        latency_ms=float(row["latency_ms"]), latency_p90_ms=float(row["latency_p90_ms"]),
        speedup=float(row["speedup"]), memory_mb=float(row["memory_mb"]), parameters=int(row["parameters"]),
        run_dir=run_dir, _run=run, _host=host,
        latency_ms_by_mode={str(column).split(".", 1)[1]: float(value) for column, value in row.items()
                            if str(column).startswith("latency_ms.") and value is not None and value == value})


@dataclasses.dataclass
class SearchResult:
    """What a search produced, read from its stored study (the same data as trials.csv and pareto.json)."""

    run_dir: Path
    study: optuna.Study
    #: Every trial, one row each (trials.csv): plan, params (``param.*``), accuracies, measurements, how it ended.
    trials: pd.DataFrame
    #: The feasible Pareto-optimal trials (validation accuracy up, latency down, memory down), fastest first.
    front: pd.DataFrame
    baseline: TeacherBaseline
    #: The feasible trial to ship (``prefer``: fastest, smallest or most accurate), or None.
    recommended: Candidate | None
    #: pareto.json as a dict: baseline, limits, front, recommended, and ``nearest`` when nothing fit.
    document: dict[str, Any]
    _run: RunData = dataclasses.field(repr=False)
    _host: Any = dataclasses.field(default=None, repr=False)

    @property
    def found(self) -> bool:
        """True when a candidate met every limit."""
        return self.recommended is not None

    @property
    def report_html(self) -> Path:
        return self.run_dir / "report.html"

    @property
    def report_markdown(self) -> Path:
        return self.run_dir / "report.md"

    @property
    def candidates(self) -> list[Candidate]:
        """The Pareto-optimal candidates, fastest first."""
        return [self.candidate(int(n)) for n in self.front["number"]]

    def candidate(self, trial: int) -> Candidate:
        """Trial ``trial`` as a Candidate (it must have completed with measurements)."""
        rows = self.trials[self.trials["number"] == trial]
        if rows.empty:
            raise InputError(f"no trial {trial} in study '{self.study.study_name}' "
                             f"(trials 0-{len(self.trials) - 1})")
        row = rows.iloc[0]
        if row["ended"] != "complete":
            raise InputError(f"trial {trial} ended '{row['ended']}' ({row['reason'] or 'no reason recorded'}), "
                             "so it has no model")
        return _candidate(self._run, self.run_dir, row.to_dict(), self._host)

    def __repr__(self) -> str:
        best = "nothing met the limits"
        if self.recommended is not None:
            best = (f"recommended trial #{self.recommended.trial} ({self.recommended.speedup:.2f}x faster, "
                    f"{self.recommended.test_accuracy:.4f} test accuracy)")
        return f"SearchResult({self.run_dir}: {self._run.ran} trials, {len(self.front)} on the front, {best})"


def _result(run: RunData, run_dir: Path, host: Any = None) -> SearchResult:
    base = run.baseline
    training = (run.record.get("task_info") or {}).get("teacher_training")
    baseline = TeacherBaseline(
        test_accuracy=float(base[TEST_ACCURACY]), val_accuracy=float(base[VAL_ACCURACY]),
        latency_ms=float(base["latency_ms"]), latency_p90_ms=float(base["latency_p90_ms"]),
        memory_mb=float(base["memory_mb"]), parameters=int(base["parameters"]), teacher_training=training,
        latency_ms_by_mode=dict(base.get(LATENCIES) or {}))
    recommended = run.recommended
    return SearchResult(
        run_dir=run_dir, study=run.study, trials=run.frame, front=run.front, baseline=baseline,
        recommended=None if recommended is None else _candidate(run, run_dir, recommended.to_dict(), host),
        document=run.document, _run=run, _host=host)


def open_run(run_dir: str | os.PathLike, *, storage: str | None = None, study: str | None = None) -> SearchResult:
    """The result of a search that ran before (finished, interrupted or still running elsewhere).

    ``run_dir`` is the run directory; give ``storage`` and ``study`` too when the study lives in a
    database whose password run.json does not record.
    """
    from autocompress.report.run import load_run, storage_of_run_dir

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: no such run directory")
    if (storage is None) != (study is None):
        raise InputError("storage= and study= go together (the study's database URL and its name)")
    run = load_run(storage, study) if storage is not None else load_run(*storage_of_run_dir(run_dir))
    return _result(run, run_dir)


# ---------------------------------------------------------------- running


class TrialCallbacks:
    """The plugin that hands each finished trial to the callbacks of the run it belongs to.

    One module-level instance (``TRIAL_CALLBACKS``) serves every ``compress`` call, keyed by run
    directory, so concurrent searches keep their own callbacks and ``isolate=True`` children can
    import it (they never call it: trials are recorded by the search process).
    """

    def __init__(self) -> None:
        self._callbacks: dict[Path, list[Callable[[TrialResult], Any]]] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def active(self, run_dir: Path, callbacks: list[Callable[[TrialResult], Any]]) -> Iterator[None]:
        key = run_dir.resolve()
        with self._lock:
            if key in self._callbacks:
                raise InputError(f"{run_dir}: another compress() call in this process is using this run directory")
            self._callbacks[key] = callbacks
        try:
            yield
        finally:
            with self._lock:
                del self._callbacks[key]

    @hookimpl
    def autocompress_trial_finished(self, trial_number: int, outcome: dict[str, Any], run_dir: Path) -> None:
        callbacks = self._callbacks.get(Path(run_dir).resolve(), [])
        if not callbacks:
            return
        trial = TrialResult.from_row(outcome)
        errors = []
        for callback in callbacks:
            try:
                callback(trial)
            except Exception as exc:  # a callback never ends the search: reported, like any observer
                errors.append(f"callback {getattr(callback, '__qualname__', callback)!r} raised {exc!r}")
        if errors:
            raise RuntimeError("; ".join(errors))


TRIAL_CALLBACKS = TrialCallbacks()
CALLBACKS_PLUGIN = "compress-callbacks"
IN_CODE_PLUGIN = "compress-classes"
_IN_CODE_PREFIX = "registered_in_code("


class ClassesRegisteredInCode:
    """A plugin registering the technique and target classes passed to ``compress``.

    It is stored in this module under a name that spells the classes (``registered_in_code(
    technique=pkg.mod:MyTechnique)``), so that an ``isolate=True`` trial's child process, which
    rebuilds the plugin host by importing ``module:attribute``, gets the same plugin back through
    this module's ``__getattr__``. That needs each class importable by ``module:qualname``.
    """

    def __init__(self, techniques: tuple[type, ...], targets: tuple[type, ...]):
        self.techniques = techniques
        self.targets = targets

    @property
    def address(self) -> str:
        spelled = [f"{kind}={cls.__module__}:{cls.__qualname__}"
                   for kind, classes in (("technique", self.techniques), ("target", self.targets))
                   for cls in classes]
        return f"{_IN_CODE_PREFIX}{','.join(spelled)})"

    @classmethod
    def from_address(cls, address: str) -> ClassesRegisteredInCode:
        found: dict[str, list[type]] = {"technique": [], "target": []}
        for part in address[len(_IN_CODE_PREFIX):-1].split(","):
            kind, _, where = part.partition("=")
            found[kind].append(_import_class(where))
        return cls(tuple(found["technique"]), tuple(found["target"]))

    @hookimpl
    def autocompress_register_techniques(self, register) -> None:
        for technique in self.techniques:
            register.add(technique)

    @hookimpl
    def autocompress_register_targets(self, register) -> None:
        for target in self.targets:
            register.add(target)


def _import_class(where: str) -> type:
    module_name, _, qualname = where.partition(":")
    value: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        value = getattr(value, part)
    return value


def __getattr__(name: str) -> Any:
    # A trial's child process (isolate=True) asks for the in-code plugin by the name it had in the
    # search process; rebuild it from the classes that name spells.
    if name.startswith(_IN_CODE_PREFIX):
        plugin = ClassesRegisteredInCode.from_address(name)
        globals()[name] = plugin
        return plugin
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _check_importable(cls: type, kind: str) -> None:
    """For isolate=True: a child process must import ``cls`` by module:qualname and get the same class."""
    where = f"{cls.__module__}:{cls.__qualname__}"
    why = None
    if cls.__module__ == "__main__":
        why = "it is defined in __main__ (a script or a notebook), which a child process does not import"
    elif "<locals>" in cls.__qualname__:
        why = "it is defined inside a function"
    else:
        try:
            if _import_class(where) is not cls:
                why = f"{where} names another object"
        except (ImportError, AttributeError) as exc:
            why = f"importing {where} fails ({type(exc).__name__}: {exc})"
    if why:
        raise InputError(f"compress(isolate=True): {kind} class {cls.__qualname__} cannot be loaded by a trial's child "
                         f"process: {why}; define it at module level in an importable module (or install it as a "
                         "plugin), or run without isolate")


def _class_name(cls: Any, kind: str) -> str:
    name = getattr(cls, "name", None)
    if not isinstance(cls, type) or not isinstance(name, str) or not name:
        raise InputError(f"compress(): {kind} {cls!r} is neither a registered {kind}'s name nor a {kind} class with "
                         "a string 'name' attribute")
    return name


def build_api_host(disabled: Iterable[str], techniques: Iterable[type], targets: Iterable[type],
                   callbacks: bool, isolate: bool) -> Host:
    """The plugin host of a ``compress`` call: the usual plugins, plus the classes and callbacks given."""
    from autocompress.plugin_manager import build_host

    disabled = tuple(disabled)
    techniques, targets = tuple(dict.fromkeys(techniques)), tuple(dict.fromkeys(targets))
    if techniques or targets:
        # A class that is registered already (a built-in passed as a class) is used as it is.
        usual = build_host(disabled=disabled)
        techniques = tuple(c for c in techniques if usual.techniques.get(c.name) is not c)
        targets = tuple(c for c in targets if usual.targets.get(c.name) is not c)
    extra: list[tuple[str, object]] = []
    if techniques or targets:
        plugin = ClassesRegisteredInCode(techniques, targets)
        if isolate:
            for kind, classes in (("technique", techniques), ("target", targets)):
                for cls in classes:
                    _check_importable(cls, kind)
        globals()[plugin.address] = plugin
        extra.append((IN_CODE_PLUGIN, plugin))
    if callbacks:
        extra.append((CALLBACKS_PLUGIN, TRIAL_CALLBACKS))
    return build_host(disabled=disabled, extra_plugins=extra)


def run_options(options: Mapping[str, Any], *, host: Host | None = None, command: tuple[str, ...] = (),
                callbacks: Iterable[Callable[[TrialResult], Any]] = ()) -> tuple[SearchSettings, SearchOutcome]:
    """Run (or resume) the search that ``options`` (the command line's names) describe.

    Shared by ``compress`` and ``autocompress search``; ``command`` is recorded in run.json
    (default: the equivalent command line).
    """
    from autocompress.search import run_search

    settings = dataclasses.replace(settings_from_options(options), command=command or command_line(options))
    with TRIAL_CALLBACKS.active(settings.out_dir, list(callbacks)):
        return settings, run_search(settings, host)


def compress(model: str | os.PathLike | None = None, data: Any = None, *,
             techniques: Iterable[str | type] | None = None, target: str | type | None = None,
             targets: Iterable[type] = (), callbacks: Iterable[Callable[[TrialResult], Any]] = (),
             progress: bool = False, config: str | os.PathLike | None = None,
             disable: Iterable[str] = (), **options: Any) -> SearchResult:
    """Run (or resume) a search and return its result; the Python form of ``autocompress search``.

    - ``model``: a checkpoint directory or a Hugging Face Hub id from the local cache; a sequence
      classifier is the teacher, a base model is fine-tuned on ``data`` first; None with ``data``:
      the demo's base model; None without ``data``: the default demo.
    - ``data``: a data file (CSV, TSV, JSONL, Parquet), a directory saved by ``datasets``, a
      ``datasets.Dataset``/``DatasetDict`` or a pandas DataFrame (objects are written to the cache
      by content hash first, so the same call resumes the same study).
    - ``techniques``: names and/or Technique classes (classes are registered in code); None: all.
    - ``target``: a name or a Target class; ``targets``: Target classes to register.
    - ``callbacks``: called with a ``TrialResult`` after each trial; one that raises is reported
      and the search goes on.
    - ``progress``: progress bars (off by default here, on by default on the command line).
    - ``config``: a YAML file of options, overridden by the keyword arguments.
    - ``**options``: every ``autocompress search`` option by its Python name (``trials=20``,
      ``max_latency_ms=8``, ``out="runs/x"``, ``seed=0``, ``isolate=True``, ...; see
      ``autocompress.config.OPTIONS`` and docs/api.md). Unknown names are errors.

    Re-running with the same ``out`` (or storage and study) continues the study up to ``trials``.
    Raises ``InputError`` for bad input before anything expensive, like the command line's exit 2.
    """
    for name in options:
        if name in API_ARGUMENTS:
            raise InputError(f"compress(): pass {API_ARGUMENTS[name]} instead of {name}=")
    names: list[str] | None = None
    technique_classes: list[type] = []
    if techniques is not None:
        if isinstance(techniques, (str, type)):
            techniques = [techniques]
        names = []
        for item in techniques:
            if isinstance(item, str):
                names.append(item)
            else:
                names.append(_class_name(item, "technique"))
                technique_classes.append(item)
    target_classes = [cls for cls in targets]
    for cls in target_classes:
        _class_name(cls, "target")
    if target is not None and not isinstance(target, str):
        target_classes.append(target)
        target = _class_name(target, "target")
    elif target is None and len(target_classes) == 1:
        target = _class_name(target_classes[0], "target")  # the one target given is the one to measure on
    given = {**options, "model": model, "techniques": names, "target": target, "no_progress": not progress,
             "disable": list(disable) or None}
    if data is not None:
        given["data"] = data if isinstance(data, (str, os.PathLike)) else _saved(data, options.get("cache_dir"))
    merged = merge_options(Path(config) if config is not None else None, given, source="compress()")
    callbacks = list(callbacks)
    host = build_api_host(disable, technique_classes, target_classes, callbacks=bool(callbacks),
                          isolate=bool(merged.get("isolate")))
    settings, _ = run_options(merged, host=host, callbacks=callbacks)
    from autocompress.report.run import load_run

    return _result(load_run(settings.storage_url, settings.study_name), settings.out_dir, host)


def _saved(data: Any, cache_dir: Any) -> Path:
    from autocompress.demo_data import default_cache_dir
    from autocompress.hf_data import save_for_search

    return save_for_search(data, Path(cache_dir) if cache_dir is not None else default_cache_dir())



def _options_help() -> str:
    from autocompress.config import OPTIONS

    rows = [f"    {name} ({kind.__name__}): {text}" for name, (kind, text) in OPTIONS.items()
            if name not in API_ARGUMENTS]
    return "\n\n    Options (the command line's, by their Python names):\n\n" + "\n".join(rows) + "\n"


compress.__doc__ = (compress.__doc__ or "") + _options_help()
