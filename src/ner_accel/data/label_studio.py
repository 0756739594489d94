"""Label Studio's exports: the JSON export (tasks with annotations[].result[]) and JSON-MIN (a row per annotation),
each task's first annotation that was not cancelled read, or the one of --annotator."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ..errors import UsageError
from .span_alignment import Document, Span

MIN_META = ("id", "annotator", "annotation_id", "created_at", "updated_at", "lead_time", "agreement")
NOT_PLAIN_TEXT = ("hypertextlabels", "paragraphlabels")  # offsets into HTML or dialogue turns, not one text


def is_regions(value: object) -> bool:
    """Label Studio JSON-MIN's regions of one <Labels>: [{"start", "end", "labels", ...}, ...]."""
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(item, dict) and "labels" in item and "start" in item for item in value)
    )


def regions(results: list, where: str) -> list[Span]:
    """The text spans of one Label Studio annotation's results (<Labels> regions); other results are not spans."""
    spans, targets = [], set()
    for result in results:
        kind = str(result.get("type", "")).lower() if isinstance(result, dict) else ""
        if kind in NOT_PLAIN_TEXT:
            raise UsageError(
                f"{where}: a {kind} region (offsets into HTML or dialogue, not one plain text); label the text with "
                "<Text> and <Labels>"
            )
        if kind != "labels":
            continue  # choices, relations, text areas: not entity spans
        targets.add(result.get("to_name"))
        spans.append(region_span(result.get("value") or {}, where))
    if len(targets) > 1:
        raise UsageError(
            f"{where}: spans on several texts ({', '.join(map(str, sorted(targets, key=str)))}); ner_accel reads one "
            "text per task: export a project with one <Text>"
        )
    return spans


def region_span(value: dict, where: str) -> Span:
    labels = value.get("labels")
    if not isinstance(labels, list) or len(labels) != 1:
        raise UsageError(
            f"{where}: span [{value.get('start')}, {value.get('end')}) {value.get('text')!r} has labels {labels!r}; "
            "give each span exactly one label"
        )
    return Span(value.get("start"), value.get("end"), labels[0], value.get("text"))


def task_text(data: dict, where: str, skip: tuple[str, ...] = ()) -> str:
    """The task's text: data["text"], or its one string field."""
    if isinstance(data.get("text"), str):
        return data["text"]
    strings = [key for key, value in data.items() if isinstance(value, str) and key not in skip]
    if len(strings) != 1:
        found = f"several ({', '.join(strings)})" if strings else "none"
        raise UsageError(f'{where}: the task\'s data has {found} text fields and no "text"; keep the text in "text"')
    return data[strings[0]]


def annotator_names(completed_by: object) -> set[str]:
    """The ways --annotator can name the user who completed an annotation: id and email."""
    if isinstance(completed_by, dict):
        return {str(completed_by[key]) for key in ("id", "email") if completed_by.get(key) is not None}
    return {str(completed_by)} if completed_by is not None else set()


class AnnotationChoice:
    """Which annotation of each task is read, counted for the log line; --annotator picks one user's."""

    def __init__(self, annotator: str | None) -> None:
        self.annotator = annotator
        self.skipped: Counter = Counter()  # tasks not read, by why
        self.read = self.several = 0
        self.annotators: set[str] = set()

    def pick(self, annotations: list[tuple[object, dict]]) -> dict | None:
        """The first (annotator, annotation) kept: not cancelled, by --annotator where given."""
        for who, _ in annotations:
            self.annotators |= annotator_names(who)
        if self.annotator is not None:
            annotations = [(who, a) for who, a in annotations if self.annotator in annotator_names(who)]
        if not annotations:
            self.skipped["without an annotation" if self.annotator is None else f"not by {self.annotator}"] += 1
            return None
        self.read += 1
        self.several += len(annotations) > 1
        return annotations[0][1]

    def check(self, path: Path) -> None:
        if self.annotator is not None and not self.read:
            found = ", ".join(sorted(self.annotators)) or "none"
            raise UsageError(
                f"--annotator {self.annotator}: {path} has no annotation of theirs (annotators: {found}); "
                "pass one of them"
            )

    def notes(self) -> list[str]:
        parts = [f"the annotations of {self.annotator}"] if self.annotator is not None else []
        if self.several and self.annotator is None:
            parts.append(f"{self.several} tasks annotated more than once: the first annotation read (--annotator)")
        return parts + [f"{n} tasks {why} skipped" for why, n in self.skipped.items()]


def label_studio_documents(path: Path, rows: list, choice: AnnotationChoice) -> list[Document]:
    """Label Studio's JSON export: tasks with data and annotations[].result[] (cancelled annotations skipped)."""
    documents = []
    for line, task in rows:
        where = f"{path}:{line} (task {task.get('id', '?')})"
        annotations = task.get("annotations", task.get("completions")) or []
        kept = [
            (a.get("completed_by"), a)
            for a in annotations
            if isinstance(a, dict) and not (a.get("was_cancelled") or a.get("skipped"))
        ]
        if annotations and not kept:
            choice.skipped["with cancelled annotations only"] += 1
            continue
        annotation = choice.pick(kept)
        if annotation is None:
            continue
        text = task_text(task["data"], where)
        documents.append(Document(text, regions(annotation.get("result") or [], where), where, line))
    return documents


def label_studio_min_documents(path: Path, rows: list, choice: AnnotationChoice) -> list[Document]:
    """Label Studio's JSON-MIN export: one row per annotation (the task's data fields, its regions under the
    <Labels> name, annotator, annotation_id, created_at); a task's rows are grouped by its id."""
    tasks: dict[object, list] = {}
    for line, row in rows:
        tasks.setdefault(row.get("id", ("row", line)), []).append((line, row))
    documents = []
    for task_rows in tasks.values():
        task_rows.sort(key=lambda item: (str(item[1].get("created_at") or ""), item[1].get("annotation_id") or 0))
        by_row = {id(row): line for line, row in task_rows}
        # the converter writes a task without annotations as one row with annotation_id null: nothing to read
        annotated = [(row.get("annotator"), row) for _, row in task_rows if row.get("annotation_id", 0) is not None]
        row = choice.pick(annotated)
        if row is None:
            continue
        line = by_row[id(row)]
        where = f"{path}:{line}" + (f" (task {row['id']})" if "id" in row else "")
        spans = [region_span(item, where) for value in row.values() if is_regions(value) for item in value]
        documents.append(Document(task_text(row, where, MIN_META), spans, where, line))
    return documents
